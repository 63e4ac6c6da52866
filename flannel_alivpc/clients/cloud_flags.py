"""The command-line flags that point a subcommand at Alibaba Cloud, shared by all of them.

``--metadata-url``, ``--api-endpoint`` and ``--region`` mean the same for the
route daemon, the inspection commands, the SLB controller and the installer,
and are checked by the same converters everywhere. Nothing but argparse and
``core.flags`` is imported here: every CLI run builds these parsers, and the
clients themselves are slow to import.
"""

from __future__ import annotations

import argparse

from flannel_alivpc.core import flags
from flannel_alivpc.core.cloud import DEFAULT_METADATA_URL

ArgumentContainer = argparse.ArgumentParser | argparse._ArgumentGroup

METADATA_URL = flags.Flag("metadata-url", flags.url("http", "https"), DEFAULT_METADATA_URL,
                          "ECS metadata service base URL", metavar="URL")
API_ENDPOINT = flags.Flag("api-endpoint", flags.url("http", "https", default_scheme="https", path=False), None,
                          "one endpoint for every Alibaba Cloud API (also env ALIYUN_API_ENDPOINT); http:// only "
                          "for a local emulator", metavar="URL")
REGION = flags.Flag("region", flags.non_empty, None, "region id (default: from metadata)", metavar="REGION")
CLOUD_FLAGS = (METADATA_URL, API_ENDPOINT, REGION)
"""For parsers that resolve flags with ``core.flags`` (the route daemon and its inspection commands)."""


def add_cloud_flags(parser: ArgumentContainer, *, region_short: bool = False) -> None:
    """``--metadata-url``, ``--api-endpoint``, ``--region`` (``-r`` too with ``region_short``), plain argparse."""
    for flag in CLOUD_FLAGS:
        names = ["-r", flag.option] if region_short and flag is REGION else [flag.option]
        parser.add_argument(*names, type=flag.convert, default=flag.default, metavar=flag.metavar,
                            help=flag.help + (" (default %(default)s)" if flag.default else ""))
