"""The admin API (topology, settings, state, counters) and injected faults, seen through the SDK."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest
import requests
from aliyunsdkcore.acs_exception.exceptions import ClientException

from flannel_alivpc.emulator.errors import ApiError
from flannel_alivpc.emulator.faults import DropConnection, FaultInjector
from flannel_alivpc.emulator.server import Topology
from tests.conftest import EMULATOR_SECRET
from tests.emulator.sdk import VPC_PACKAGE, Cloud, sdk_request

# -- topology --------------------------------------------------------------------------------------


def test_build_a_topology_through_admin(cloud: Cloud) -> None:
    vpc = cloud.admin("POST", "vpcs", {"cidr": "10.10.0.0/16", "name": "lab"})
    assert set(vpc) == {"VpcId", "VRouterId", "RouteTableId"}
    vsw = cloud.admin("POST", "vswitches", {"vpc_id": vpc["VpcId"], "cidr": "10.10.1.0/24", "zone": "cn-hangzhou-i",
                                            "name": "lab-a"})
    inst = cloud.admin("POST", "instances", {"hostname": "lab-1", "vswitch_id": vsw["VSwitchId"],
                                             "private_ip": "10.10.1.50", "ram_role": "Lab"})
    assert (inst["private_ip"], inst["vpc_id"], inst["zone"]) == ("10.10.1.50", vpc["VpcId"], "cn-hangzhou-i")
    assert inst["status"] == "Running"

    [described] = cloud.vpc("DescribeVpcs")["Vpcs"]["Vpc"]
    assert (described["VpcId"], described["VpcName"], described["CidrBlock"]) == (vpc["VpcId"], "lab", "10.10.0.0/16")
    [sw] = cloud.vpc("DescribeVSwitches")["VSwitches"]["VSwitch"]
    assert (sw["VSwitchName"], sw["ZoneId"], sw["RouteTable"]["RouteTableId"]) == ("lab-a", "cn-hangzhou-i",
                                                                                   vpc["RouteTableId"])
    [found] = cloud.ecs("DescribeInstances")["Instances"]["Instance"]
    assert found["VpcAttributes"]["PrivateIpAddress"]["IpAddress"] == ["10.10.1.50"]

    # Instances get the next free address after the reserved start of the vSwitch.
    auto = cloud.admin("POST", "instances", {"hostname": "lab-2"})
    assert auto["private_ip"] == "10.10.1.11"
    assert auto["mac"] != inst["mac"]


def test_seeded_route_entries_skip_the_api_rules(cloud: Cloud, topology: Topology) -> None:
    cloud.settings(route_delay=5, route_quota=1)
    for n in range(3):
        cloud.admin("POST", "route-entries", {"route_table_id": topology.route_table_id,
                                              "destination": f"172.20.{n}.0/24",
                                              "next_hop_id": topology.instance_ids[0], "name": f"seed-{n}"})
    entries = cloud.custom_entries(topology.route_table_id)
    assert len(entries) == 3
    assert {e["Status"] for e in entries.values()} == {"Available"}
    # A bare address is stored in canonical form, so the API sees it as a duplicate.
    cloud.admin("POST", "route-entries", {"route_table_id": topology.route_table_id, "destination": "172.21.0.1",
                                          "next_hop_id": topology.instance_ids[0]})
    cloud.settings(route_quota=10)
    error = cloud.vpc_error("CreateRouteEntry", RouteTableId=topology.route_table_id,
                            DestinationCidrBlock="172.21.0.1/32", NextHopId=topology.instance_ids[1])
    assert error.get_error_code() == "InvalidCIDRBlock.Duplicate"


def test_instance_status_and_release(cloud: Cloud, topology: Topology) -> None:
    inst_id = topology.instance_ids[0]
    assert cloud.admin("PATCH", f"instances/{inst_id}", {"status": "Stopped"})["status"] == "Stopped"
    assert cloud.admin("DELETE", f"instances/{inst_id}") == {"deleted": inst_id}
    assert cloud.admin("DELETE", f"instances/{inst_id}", expect=404)["error"] == f"no instance {inst_id}"
    assert cloud.metadata(inst_id, "meta-data/instance-id").status_code == 404


@pytest.mark.parametrize(("method", "path", "body", "status", "field"), [
    ("POST", "vpcs", {"cidr": "10.0.0.0/8", "colour": "red"}, 400, "colour"),
    ("POST", "vpcs", {"cidr": "10.0.0.300/8"}, 400, "cidr"),
    ("POST", "vpcs", {"cidr": "10.0.0.1/8"}, 400, "cidr"),
    ("POST", "vpcs", {"cidr": 10}, 400, "cidr"),
    ("POST", "vswitches", {"vpc_id": "{vpc}"}, 400, "cidr"),
    ("POST", "vswitches", {"vpc_id": "{vpc}", "cidr": "10.0.0.0/24"}, 400, "cidr"),
    ("POST", "vswitches", {"vpc_id": "{vpc}", "cidr": "192.168.8.0/24"}, 400, "cidr"),   # overlaps 192.168.0.0/20
    ("POST", "vswitches", {"vpc_id": "vpc-missing", "cidr": "192.168.16.0/24"}, 404, "vpc_id"),
    ("POST", "vswitches", {"vpc_id": "{vpc}", "cidr": "192.168.16.0/24", "route_table_id": "vtb-x"}, 404,
     "route_table_id"),
    ("POST", "route-tables", {"vpc_id": "vpc-missing"}, 404, "vpc_id"),
    ("POST", "instances", {"private_ip": "192.168.0.50"}, 400, "hostname"),
    ("POST", "instances", {"hostname": "x", "private_ip": "10.9.9.9"}, 400, "private_ip"),
    ("POST", "instances", {"hostname": "x", "private_ip": "banana"}, 400, "private_ip"),
    ("POST", "instances", {"hostname": "x", "private_ip": "{ip}"}, 400, "private_ip"),     # already used
    ("POST", "instances", {"hostname": "x", "network_type": "hybrid"}, 400, "network_type"),
    ("POST", "instances", {"hostname": "x", "vswitch_id": "vsw-missing"}, 404, "vswitch_id"),
    ("PATCH", "instances/{inst}", {"status": "Sleeping"}, 400, "status"),
    ("PATCH", "instances/{inst}", {"state": "Stopped"}, 400, "state"),
    ("POST", "route-entries", {"route_table_id": "{table}", "destination": "nope", "next_hop_id": "i-1"}, 400,
     "destination"),
    ("POST", "route-entries", {"route_table_id": "vtb-x", "destination": "10.0.0.0/8", "next_hop_id": "i-1"}, 404,
     "route_table_id"),
    ("POST", "access-keys", {"access_key_id": "a"}, 400, "access_key_secret"),
    ("PATCH", "settings", {"route_delay": "soon"}, 400, "route_delay"),
    ("PATCH", "settings", {"route_quota": -1}, 400, "route_quota"),
    ("PATCH", "settings", {"route_delay": None}, 400, "route_delay"),
    ("PATCH", "settings", {"speed": 1}, 400, "speed"),
    ("PUT", "faults", {"DescribeVpcs": {"error": {"status": "bad"}}}, 400, "error.status"),
    ("PUT", "faults", {"DescribeVpcs": {"error": {"status": 200}}}, 400, "error.status"),
    ("PUT", "faults", {"DescribeVpcs": {"throttle": {"burst": 1}}}, 400, "throttle.rate"),
    ("PUT", "faults", {"DescribeVpcs": {"latency": "slow"}}, 400, "latency"),
    ("PUT", "faults", {"DescribeVpcs": {"explode": True}}, 400, "explode"),
    ("PUT", "faults", {"DescribeVpcs": "always"}, 400, "always"),
])
def test_bad_admin_input_names_the_field(cloud: Cloud, topology: Topology, method: str, path: str,
                                         body: dict[str, Any], status: int, field: str) -> None:
    used_ip = cloud.emulator.state.instances[topology.instance_ids[0]].private_ip
    values = {"{vpc}": topology.vpc_id, "{inst}": topology.instance_ids[0], "{table}": topology.route_table_id,
              "{ip}": used_ip}
    text = json.dumps(body)
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    path = path.replace("{inst}", topology.instance_ids[0])
    answer = cloud.admin(method, path, json.loads(text), expect=status)
    assert field in answer["error"]
    # Nothing was half-applied.
    assert cloud.admin("GET", "settings")["route_delay"] == 0.0
    assert cloud.admin("GET", "faults") == {}


def test_malformed_admin_requests(cloud: Cloud) -> None:
    answer = requests.post(f"{cloud.base}/_emulator/vpcs", data=b"{not json", timeout=10)
    assert answer.status_code == 400
    assert "error" in answer.json()
    assert cloud.admin("POST", "vpcs", ["10.0.0.0/8"], expect=400)["error"] == (
        "the request body must be a JSON object")
    assert cloud.admin("GET", "nothing", expect=404)["error"].startswith("no admin route")
    assert cloud.admin("DELETE", "vpcs", expect=404)


def test_settings(cloud: Cloud) -> None:
    assert cloud.admin("GET", "settings") == {"region": "cn-hangzhou", "route_delay": 0.0, "route_quota": 200,
                                              "sts_ttl": 3600.0, "timestamp_skew": 900.0}
    changed = cloud.settings(route_delay=1, route_quota="50")
    assert (changed["route_delay"], changed["route_quota"]) == (1.0, 50)
    assert cloud.emulator.state.settings.route_quota == 50


def test_state_dump_masks_secrets(cloud: Cloud, topology: Topology) -> None:
    role = cloud.admin("POST", "instances", {"hostname": "n", "ram_role": "Node"})
    creds = cloud.metadata(role["instance_id"], "meta-data/ram/security-credentials/Node").json()
    cloud.add_route(topology.route_table_id, "172.20.1.0/24", topology.instance_ids[0])
    answer = requests.get(f"{cloud.base}/_emulator/state", timeout=10)
    dump = answer.json()
    for secret in (EMULATOR_SECRET, creds["AccessKeySecret"], creds["SecurityToken"]):
        assert secret not in answer.text
    keys = dump["access_keys"]
    assert keys[creds["AccessKeyId"]]["secret"] == "***"
    assert keys[creds["AccessKeyId"]]["security_token"] == "***"
    assert keys[creds["AccessKeyId"]]["role"] == "Node"
    # The dump is the whole picture: topology, entries with their status, settings.
    assert set(dump["vpcs"]) == {topology.vpc_id}
    assert set(topology.instance_ids) <= set(dump["instances"])
    entries = dump["route_tables"][topology.route_table_id]["entries"].values()
    assert {e["destination"]: e["status"] for e in entries}["172.20.1.0/24"] == "Available"
    assert dump["settings"]["route_quota"] == 200


def test_counters_per_action_and_outcome(cloud: Cloud, topology: Topology) -> None:
    cloud.admin("DELETE", "counters")
    cloud.vpc("DescribeVpcs")
    cloud.vpc("DescribeVpcs")
    cloud.add_route(topology.route_table_id, "172.20.1.0/24", topology.instance_ids[0])
    cloud.vpc_error("CreateRouteEntry", RouteTableId=topology.route_table_id, DestinationCidrBlock="172.20.1.0/24",
                    NextHopId=topology.instance_ids[0])
    cloud.ecs("DescribeInstances")
    assert cloud.admin("GET", "counters") == {
        "DescribeVpcs": {"Success": 2},
        "CreateRouteEntry": {"Success": 1, "InvalidCIDRBlock.Duplicate": 1},
        "DescribeInstances": {"Success": 1},
    }
    assert cloud.admin("DELETE", "counters") == {}
    assert cloud.admin("GET", "counters") == {}


# -- faults ---------------------------------------------------------------------------------------------


def test_throttle_token_bucket(cloud: Cloud, topology: Topology) -> None:
    cloud.admin("PUT", "faults", {"DescribeVpcs": {"throttle": {"rate": 0.001, "burst": 2}}})
    cloud.vpc("DescribeVpcs")
    cloud.vpc("DescribeVpcs")
    error = cloud.vpc_error("DescribeVpcs")
    assert (error.get_http_status(), error.get_error_code()) == (400, "Throttling.User")
    assert error.get_error_msg() == "Request was denied due to user flow control."
    cloud.vpc("DescribeVSwitches")  # other actions are not limited
    assert cloud.admin("GET", "counters")["DescribeVpcs"] == {"Success": 2, "Throttling.User": 1}


def test_throttle_refills_at_its_rate(cloud: Cloud, topology: Topology) -> None:
    cloud.admin("PUT", "faults", {"DescribeVpcs": {"throttle": {"rate": 20, "burst": 1}}})
    cloud.vpc("DescribeVpcs")
    assert cloud.vpc_error("DescribeVpcs").get_error_code() == "Throttling.User"
    time.sleep(0.1)
    cloud.vpc("DescribeVpcs")


def test_injected_errors_with_count(cloud: Cloud, topology: Topology) -> None:
    cloud.admin("PUT", "faults", {"DescribeVpcs": {"error": {"code": "ServiceUnavailable", "status": 503,
                                                              "count": 2}}})
    for _ in range(2):
        error = cloud.vpc_error("DescribeVpcs")
        assert (error.get_http_status(), error.get_error_code()) == (503, "ServiceUnavailable")
        assert error.get_error_msg() == "The request has failed due to a temporary failure of the server."
    cloud.vpc("DescribeVpcs")


def test_sdk_retries_ecs_calls_through_injected_errors(cloud: Cloud, topology: Topology) -> None:
    # Only ECS actions are retried by the SDK (up to 3 times on 5xx): one SDK call succeeds.
    cloud.admin("PUT", "faults", {"DescribeInstances": {"error": {"code": "InternalError", "status": 500,
                                                                   "count": 2}}})
    assert cloud.ecs("DescribeInstances")["TotalCount"] == 3
    assert cloud.admin("GET", "counters")["DescribeInstances"] == {"InternalError": 2, "Success": 1}


def test_injected_errors_with_probability(cloud: Cloud, topology: Topology) -> None:
    cloud.admin("PUT", "faults", {"DescribeVpcs": {"error": {"probability": 1.0}},
                                  "DescribeVSwitches": {"error": {"probability": 0.0}}})
    for _ in range(3):
        assert cloud.vpc_error("DescribeVpcs").get_http_status() == 503
        cloud.vpc("DescribeVSwitches")


def test_probability_is_a_fraction_of_requests() -> None:
    injector = FaultInjector(rng=random.Random(7))
    injector.set_rules({"A": {"error": {"code": "InternalError", "status": 500, "probability": 0.3}}})
    failures = 0
    for _ in range(1000):
        try:
            injector.before("A")
        except ApiError as error:
            assert (error.status, error.code) == (500, "InternalError")
            failures += 1
    assert 230 < failures < 370


def test_default_error_and_custom_message(cloud: Cloud, topology: Topology) -> None:
    cloud.admin("PUT", "faults", {"DescribeVpcs": {"error": {}},
                                  "DescribeVSwitches": {"error": {"code": "Forbidden.RAM", "status": 403}},
                                  "DescribeVRouters": {"error": {"code": "Custom.Code", "status": 418,
                                                                 "message": "I am a teapot."}}})
    error = cloud.vpc_error("DescribeVpcs")
    assert (error.get_http_status(), error.get_error_code()) == (503, "ServiceUnavailable")
    error = cloud.vpc_error("DescribeVSwitches")
    assert (error.get_http_status(), error.get_error_code()) == (403, "Forbidden.RAM")
    assert error.get_error_msg() == "User not authorized to operate on the specified resource."
    error = cloud.vpc_error("DescribeVRouters")
    assert (error.get_http_status(), error.get_error_code(), error.get_error_msg()) == (418, "Custom.Code",
                                                                                        "I am a teapot.")


def test_latency(cloud: Cloud, topology: Topology) -> None:
    cloud.admin("PUT", "faults", {"DescribeVpcs": {"latency": 0.3}})
    started = time.monotonic()
    cloud.vpc("DescribeVpcs")
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    cloud.vpc("DescribeVSwitches")
    assert time.monotonic() - started < 0.3


def test_dropped_connection(cloud: Cloud, topology: Topology) -> None:
    cloud.admin("PUT", "faults", {"DescribeVpcs": {"drop": {"count": 1}}})
    with pytest.raises(ClientException) as caught:
        cloud.call(sdk_request(VPC_PACKAGE, "DescribeVpcs"))
    assert caught.value.get_error_code() == "SDK.HttpError"
    cloud.vpc("DescribeVpcs")
    assert cloud.admin("GET", "counters")["DescribeVpcs"] == {"Dropped": 1, "Success": 1}


def test_drop_with_probability() -> None:
    injector = FaultInjector(rng=random.Random(1))
    injector.set_rules({"*": {"drop": {}}})
    with pytest.raises(DropConnection):
        injector.before("Anything")
    injector.set_rules({"*": {"drop": {"probability": 0.0}}})
    assert injector.before("Anything") == 0.0


def test_exact_rule_wins_over_star(cloud: Cloud, topology: Topology) -> None:
    cloud.admin("PUT", "faults", {"*": {"error": {"code": "InternalError", "status": 500}},
                                  "DescribeVpcs": {"latency": 0}})
    cloud.vpc("DescribeVpcs")
    for action in ("DescribeVSwitches", "DescribeRouteTables"):
        error = cloud.vpc_error(action)
        assert (error.get_http_status(), error.get_error_code()) == (500, "InternalError")


def test_fault_rule_management(cloud: Cloud, topology: Topology) -> None:
    throttle = {"throttle": {"rate": 1, "burst": 1}}
    latency = {"latency": 0.01}
    assert cloud.admin("PUT", "faults", {"DescribeVpcs": throttle}) == {"DescribeVpcs": throttle}
    assert cloud.admin("PATCH", "faults", {"DescribeVSwitches": latency}) == {"DescribeVpcs": throttle,
                                                                               "DescribeVSwitches": latency}
    assert cloud.admin("PUT", "faults", {"DescribeVSwitches": latency}) == {"DescribeVSwitches": latency}
    assert cloud.admin("GET", "faults") == {"DescribeVSwitches": latency}
    assert cloud.admin("DELETE", "faults") == {}
    assert cloud.admin("GET", "faults") == {}
