"""The command-line flags that point a subcommand at Alibaba Cloud, shared by all of them.

``--metadata-url``, ``--api-endpoint`` and ``--region`` mean the same for the
route daemon, the inspection commands, the SLB controller and the installer.
Only argparse is imported here: every CLI run builds these parsers, and the
clients themselves are slow to import.
"""

from __future__ import annotations

import argparse

from flannel_alivpc.core.cloud import DEFAULT_METADATA_URL

ArgumentContainer = argparse.ArgumentParser | argparse._ArgumentGroup


def add_cloud_flags(parser: ArgumentContainer, *, region_short: bool = False) -> None:
    """``--metadata-url``, ``--api-endpoint``, ``--region`` (``-r`` too with ``region_short``)."""
    parser.add_argument("--metadata-url", default=DEFAULT_METADATA_URL,
                        help="ECS metadata service base URL (default %(default)s)")
    parser.add_argument("--api-endpoint", default=None,
                        help="one endpoint for every Alibaba Cloud API (env ALIYUN_API_ENDPOINT); "
                             "http:// only for a local emulator")
    names = ["-r", "--region"] if region_short else ["--region"]
    parser.add_argument(*names, default=None, help="region id (default: from metadata)")
