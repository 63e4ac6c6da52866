"""The state file: everything the cloud holds survives a restart of the emulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from aliyunsdkcore.auth.credentials import StsTokenCredential
from aliyunsdkcore.client import AcsClient

from flannel_alivpc.emulator.server import Emulator
from flannel_alivpc.emulator.state import Settings
from tests.conftest import EMULATOR_AK, EMULATOR_SECRET
from tests.emulator.sdk import VPC_PACKAGE, Cloud, sdk_request, wait_for


def _start(path: Path, settings: Settings | None = None) -> Emulator:
    return Emulator(settings=settings, access_key_id=EMULATOR_AK, access_key_secret=EMULATOR_SECRET,
                    state_file=str(path)).start()


@pytest.fixture
def state_file(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "cloud.json"


def test_state_survives_a_restart(state_file: Path) -> None:
    first = _start(state_file, Settings(route_delay=0.0))
    try:
        topo = first.bootstrap(instances=2)
        cloud = Cloud(first)
        role = cloud.admin("POST", "instances", {"hostname": "n", "ram_role": "Node"})
        creds = cloud.metadata(role["instance_id"], "meta-data/ram/security-credentials/Node").json()
        entry_id = cloud.add_route(topo.route_table_id, "172.20.1.0/24", topo.instance_ids[0])
        cloud.admin("PATCH", f"instances/{topo.instance_ids[1]}", {"status": "Stopped"})
        order = [i["InstanceId"] for i in cloud.ecs("DescribeInstances")["Instances"]["Instance"]]
    finally:
        first.stop()
    assert state_file.exists()

    second = _start(state_file)
    try:
        cloud = Cloud(second)
        [vpc] = cloud.vpc("DescribeVpcs")["Vpcs"]["Vpc"]
        assert (vpc["VpcId"], vpc["VSwitchIds"]["VSwitchId"]) == (topo.vpc_id, [topo.vswitch_id])
        entries = cloud.custom_entries(topo.route_table_id)
        assert entries["172.20.1.0/24"]["RouteEntryId"] == entry_id
        assert entries["172.20.1.0/24"]["Status"] == "Available"
        # Listings keep their order (creation order) across the restart.
        assert [i["InstanceId"] for i in cloud.ecs("DescribeInstances")["Instances"]["Instance"]] == order
        body = cloud.ecs("DescribeInstances", Status="Stopped")
        assert [i["InstanceId"] for i in body["Instances"]["Instance"]] == [topo.instance_ids[1]]
        # Handed-out STS credentials stay valid.
        client = AcsClient(region_id="cn-hangzhou", credential=StsTokenCredential(
            creds["AccessKeyId"], creds["AccessKeySecret"], creds["SecurityToken"]))
        assert cloud.call(sdk_request(VPC_PACKAGE, "DescribeVpcs"), client)["TotalCount"] == 1
        # Without explicit settings, the saved ones apply.
        assert second.state.settings.route_delay == 0.0
    finally:
        second.stop()


def test_pending_entries_settle_after_a_restart(state_file: Path) -> None:
    first = _start(state_file, Settings(route_delay=0.3))
    try:
        topo = first.bootstrap(instances=1)
        Cloud(first).add_route(topo.route_table_id, "172.20.1.0/24", topo.instance_ids[0])
    finally:
        first.stop()
    second = _start(state_file)
    try:
        cloud = Cloud(second)
        wait_for(lambda: cloud.custom_entries(topo.route_table_id)["172.20.1.0/24"]["Status"] == "Available")
    finally:
        second.stop()


def test_explicit_settings_win_over_saved_ones(state_file: Path) -> None:
    first = _start(state_file, Settings(route_delay=0.0, route_quota=5))
    first.bootstrap()
    first.stop()
    second = _start(state_file, Settings(route_delay=0.0, route_quota=7))
    try:
        assert second.state.settings.route_quota == 7
        assert len(second.state.vpcs) == 1
    finally:
        second.stop()


def test_macs_stay_unique_after_release_and_restart(state_file: Path) -> None:
    first = _start(state_file, Settings(route_delay=0.0))
    try:
        topo = first.bootstrap(instances=3)
        Cloud(first).admin("DELETE", f"instances/{topo.instance_ids[0]}")
    finally:
        first.stop()
    second = _start(state_file)
    try:
        Cloud(second).admin("POST", "instances", {"hostname": "new"})
        macs = [i.mac for i in second.state.instances.values()]
        assert len(macs) == len(set(macs)) == 3
    finally:
        second.stop()


def test_file_is_written_on_every_change_and_holds_secrets(state_file: Path) -> None:
    emulator = _start(state_file, Settings(route_delay=0.0))
    try:
        topo = emulator.bootstrap(instances=1)
        cloud = Cloud(emulator)
        cloud.add_route(topo.route_table_id, "172.20.1.0/24", topo.instance_ids[0])
        saved = json.loads(state_file.read_text())
        destinations = [e["destination"] for e in saved["route_tables"][topo.route_table_id]["entries"].values()]
        assert "172.20.1.0/24" in destinations
        # Unlike the admin dump, the file keeps secrets: it must restore them.
        assert saved["access_keys"][EMULATOR_AK]["secret"] == EMULATOR_SECRET
    finally:
        emulator.stop()
    assert not list(state_file.parent.glob(".emulator-state-*")), "temporary files left behind"


def test_missing_file_starts_empty(state_file: Path) -> None:
    emulator = _start(state_file)
    try:
        assert emulator.state.vpcs == {}
        assert Cloud(emulator).vpc("DescribeVpcs")["TotalCount"] == 0
    finally:
        emulator.stop()
