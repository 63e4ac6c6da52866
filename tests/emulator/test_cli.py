"""``flannel-alivpc emulator``: the command prints how to reach it, serves, and stops on SIGTERM."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from aliyunsdkcore.client import AcsClient

from tests.emulator.sdk import ECS_PACKAGE, VPC_PACKAGE, sdk_request

STARTUP_TIMEOUT = 15.0


class Running:
    """One emulator subprocess and the JSON it printed."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flannel_alivpc", "--log-level", "WARNING", "emulator", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.banner = self._line()
        self.info = self._json()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _line(self) -> str:
        try:
            line = self._lines.get(timeout=STARTUP_TIMEOUT)
        except queue.Empty:
            raise AssertionError("the emulator printed nothing") from None
        if line is None:
            raise AssertionError(f"the emulator exited: {self.proc.stderr.read() if self.proc.stderr else ''}")
        return line

    def _json(self) -> dict[str, Any]:
        """Read lines until they form one JSON object (it is printed indented)."""
        text = ""
        while True:
            text += self._line()
            try:
                info: dict[str, Any] = json.loads(text)
                return info
            except ValueError:
                continue

    def client(self) -> AcsClient:
        return AcsClient(self.info["access_key_id"], self.info["access_key_secret"], self.info["region"])

    def call(self, package: str, action: str, **params: Any) -> dict[str, Any]:
        request = sdk_request(package, action, **params)
        request.set_endpoint(self.info["endpoint"].removeprefix("http://"))
        body: dict[str, Any] = json.loads(self.client().do_action_with_exception(request))
        return body

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=10)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def start() -> Iterator[Any]:
    started: list[Running] = []

    def run(*args: str, env: dict[str, str] | None = None) -> Running:
        running = Running(*args, env=env)
        started.append(running)
        return running

    yield run
    for running in started:
        running.kill()


def test_serves_the_sdk_and_stops_cleanly(start: Any) -> None:
    emu = start("--listen", "127.0.0.1:0", "--instances", "3", "--route-delay", "0.5")
    assert emu.banner.startswith("emulator listening on http://127.0.0.1:")
    info = emu.info
    assert info["endpoint"] == emu.banner.split()[-1]
    assert info["region"] == "cn-hangzhou"
    assert (info["access_key_id"], info["access_key_secret"]) == ("emulator-ak", "emulator-secret")
    assert info["vpc_id"].startswith("vpc-") and info["route_table_id"].startswith("vtb-")
    assert len(info["instances"]) == 3

    body = emu.call(ECS_PACKAGE, "DescribeInstances", VpcId=info["vpc_id"])
    assert {i["InstanceId"] for i in body["Instances"]["Instance"]} == {i["instance_id"] for i in info["instances"]}
    node = info["instances"][0]
    emu.call(VPC_PACKAGE, "CreateRouteEntry", RouteTableId=info["route_table_id"],
             DestinationCidrBlock="172.20.1.0/24", NextHopId=node["instance_id"])
    entries = emu.call(VPC_PACKAGE, "DescribeRouteEntryList", RouteTableId=info["route_table_id"],
                       RouteEntryType="Custom")["RouteEntrys"]["RouteEntry"]
    assert [e["Status"] for e in entries] == ["Pending"]  # --route-delay 0.5

    answer = requests.get(f"{node['metadata_url']}/latest/meta-data/private-ipv4", timeout=10)
    assert answer.text == node["private_ip"]

    assert emu.terminate() == 0


def test_access_key_options_and_state_file(start: Any, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    args = ("--listen", "127.0.0.1:0", "--instances", "2", "--route-delay", "0", "--state", str(state),
            "--access-key-id", "cli-ak", "--region", "cn-emulator")
    env = {"EMULATOR_ACCESS_KEY_SECRET": "cli-secret"}
    first = start(*args, env=env)
    assert (first.info["access_key_id"], first.info["access_key_secret"]) == ("cli-ak", "cli-secret")
    assert first.info["region"] == "cn-emulator"
    table = first.info["route_table_id"]
    hop = first.info["instances"][1]["instance_id"]
    first.call(VPC_PACKAGE, "CreateRouteEntry", RouteTableId=table, DestinationCidrBlock="172.20.2.0/24",
               NextHopId=hop)
    assert first.terminate() == 0

    second = start(*args, env=env)
    # The saved cloud is reused as it is: no second bootstrap.
    assert second.info["vpc_id"] is None
    assert [i["instance_id"] for i in second.info["instances"]] == [i["instance_id"] for i in first.info["instances"]]
    entries = second.call(VPC_PACKAGE, "DescribeRouteEntryList", RouteTableId=table,
                          RouteEntryType="Custom")["RouteEntrys"]["RouteEntry"]
    assert [(e["DestinationCidrBlock"], e["Status"]) for e in entries] == [("172.20.2.0/24", "Available")]
    assert second.terminate() == 0


def test_bad_listen_address() -> None:
    result = subprocess.run([sys.executable, "-m", "flannel_alivpc", "emulator", "--listen", "nowhere"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "expected HOST:PORT" in result.stderr
