"""--log-format json: one JSON object per line with time, level, logger, message and the structured fields."""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime

import pytest

from flannel_alivpc.core import logfmt
from flannel_alivpc.testbed.etcd_server import free_port


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    yield out
    logfmt.configure(stream=sys.stderr)  # back to the default for the tests that follow


def test_every_line_a_command_logs_is_one_json_object() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLANNELD_") and not k.lower().endswith("_proxy")}
    # Nothing listens on this port: the command logs its retries and its failure, then ends.
    done = subprocess.run([sys.executable, "-m", "flannel_alivpc", "leases", "--log-format", "json",
                           "--etcd-endpoints", f"http://127.0.0.1:{free_port()}"],
                          capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    lines = done.stderr.splitlines()
    assert done.returncode != 0 and len(lines) >= 2, done.stderr
    for line in lines:
        entry = json.loads(line)
        assert list(entry)[:4] == ["time", "level", "logger", "message"]
        assert entry["level"] in ("warning", "error")
        datetime.fromisoformat(entry["time"])
    last = json.loads(lines[-1])
    assert (last["logger"], last["level"]) == ("flannel-alivpc", "error") and "etcd" in last["message"]


def test_structured_fields_passed_with_extra_become_keys(stream: io.StringIO) -> None:
    logfmt.configure("debug", "json", stream=stream)
    log = logging.getLogger("flannel_alivpc.routed.vpc_routes")
    log.info("created %s -> %s", "10.244.3.0/24", "i-abc",
             extra={"table_id": "vtb-1", "destination": ipaddress.ip_network("10.244.3.0/24"), "instance": "i-abc"})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("pass failed", extra={"table_id": "vtb-1"})
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "created 10.244.3.0/24 -> i-abc"
    assert (first["level"], first["logger"]) == ("info", "flannel_alivpc.routed.vpc_routes")
    assert (first["table_id"], first["destination"], first["instance"]) == ("vtb-1", "10.244.3.0/24", "i-abc")
    assert second["level"] == "error" and second["table_id"] == "vtb-1"
    assert second["exception"].startswith("Traceback") and "ValueError: boom" in second["exception"]


def test_levels_and_klog_verbosity_choose_what_is_written(stream: io.StringIO) -> None:
    log = logging.getLogger("flannel_alivpc.test")
    logfmt.configure(None, "text", verbosity=2, stream=stream)
    log.debug("shown with -v 2")
    logfmt.configure("error", "text", verbosity=2, stream=stream)
    log.warning("hidden at --log-level error")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].endswith(" DEBUG flannel_alivpc.test: shown with -v 2")
