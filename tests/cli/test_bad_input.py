"""One CLI model: a bad value is one line naming its source, rc 2, the usage of the level it was typed at.

Each bad value is tried as a flag and as its FLANNELD_ variable; both must be
refused by the same check, before anything starts, with no traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flannel_alivpc.cli import build_parser
from flannel_alivpc.clients.etcd import EtcdClient
from flannel_alivpc.testbed.etcd_server import EtcdServer
from tests.cli.support import Outcome, run_cli

BAD_VALUES = [
    ("healthz-port", "70000", "'70000' is out of range: use 0 to 65535"),
    ("healthz-port", "abc", "'abc' is not a whole number"),
    ("iface-regex", "([", "'([' is not a valid regular expression"),
    ("log-level", "verbose", "'verbose' is not one of debug, info, warning, error"),
    ("log-format", "xml", "'xml' is not one of text, json"),
    ("subnet-lease-renew-margin", "1440", "'1440' is out of range: use 1 to 1439 minutes"),
    ("etcd-endpoints", "ftp://10.0.0.1:2379", "'ftp://10.0.0.1:2379' is not a URL starting with http:// or https://"),
    ("etcd-endpoints", "http://10.0.0.1:99999", "'http://10.0.0.1:99999' has an invalid port"),
    ("etcd-endpoints", ",", "',' is empty: give at least one value"),
    ("public-ip", "10.0.0.300", "'10.0.0.300' is not an IPv4 address"),
    ("iface-can-reach", "gateway", "'gateway' is not an IP address"),
    ("ip-masq", "yes", "'yes' is not a boolean"),
    ("iptables-forward-rules", "off", "'off' is not a boolean"),
    ("iptables-resync", "0", "'0' is too small: use at least 1 seconds"),
    ("writer-lock-ttl", "2", "'2' is too small: use at least 3 seconds"),
    ("resync-interval", "nan", "'nan' is not a finite number"),
    ("metadata-url", "100.100.100.200", "'100.100.100.200' is not a URL starting with http:// or https://"),
    ("api-endpoint", "https://vpc.example.test/v1", "'https://vpc.example.test/v1' has a path"),
    ("kube-api-url", "kubernetes:6443", "'kubernetes:6443' is not a URL starting with http:// or https://"),
    ("v", "-1", "'-1' is too small: use at least 0"),
]


def _one_error_line(outcome: Outcome) -> str:
    assert outcome.rc == 2, outcome
    assert "Traceback" not in outcome.stderr
    errors = [line for line in outcome.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, outcome.stderr
    return errors[0]


@pytest.mark.parametrize(("name", "value", "message"), BAD_VALUES, ids=[f"{n}={v}" for n, v, _ in BAD_VALUES])
def test_a_bad_value_is_refused_the_same_way_from_a_flag_and_from_the_environment(
        name: str, value: str, message: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from_flag = _one_error_line(run_cli([f"--{name}={value}"], capsys, monkeypatch))
    option = "-v/--v" if name == "v" else f"--{name}"  # klog's one-letter flag has both spellings
    assert from_flag.startswith(f"flannel-alivpc: error: argument {option}: {message}"), from_flag
    variable = "FLANNELD_" + name.upper().replace("-", "_")
    from_env = _one_error_line(run_cli([], capsys, monkeypatch, env={variable: value}))
    assert from_env.startswith(f"flannel-alivpc: error: environment variable {variable}: {message}"), from_env


def test_levels_are_taken_in_any_case_from_flags_and_the_environment() -> None:
    assert build_parser(env={"FLANNELD_LOG_LEVEL": "debug"}).parse_args([]).log_level == "debug"
    assert build_parser(env={}).parse_args(["--log-level", "WARNING"]).log_level == "warning"
    assert build_parser(env={}).parse_args(["--log-level=Warn"]).log_level == "warning"
    assert build_parser(env={}).parse_args(["leases", "--log-level", "ERROR"]).log_level == "error"


def test_a_subcommands_errors_show_its_own_usage(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    unknown = run_cli(["routes", "--bogus"], capsys, monkeypatch)
    assert _one_error_line(unknown) == "flannel-alivpc routes: error: unrecognized arguments: --bogus"
    assert unknown.stderr.startswith("usage: flannel-alivpc routes ")
    from_env = run_cli(["leases"], capsys, monkeypatch, env={"FLANNELD_ETCD_ENDPOINTS": "ftp://x"})
    assert _one_error_line(from_env).startswith("flannel-alivpc leases: error: environment variable "
                                                "FLANNELD_ETCD_ENDPOINTS: 'ftp://x' is not a URL")
    assert from_env.stderr.startswith("usage: flannel-alivpc leases ")


def test_a_daemon_flag_at_a_level_that_does_not_take_it_is_refused(capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    after = run_cli(["routes", "--iface", "eth0"], capsys, monkeypatch)
    assert _one_error_line(after) == ("flannel-alivpc routes: error: unrecognized arguments: --iface eth0 "
                                      "(--iface is a flag of the route daemon, flannel-alivpc without a command)")
    for argv in (["--iface", "eth0", "leases"], ["--region", "cn-beijing", "install", "--node-type", "down"],
                 ["--healthz-port", "8471", "emulator"]):
        command = argv[2]
        line = _one_error_line(run_cli(argv, capsys, monkeypatch))
        assert line == (f"flannel-alivpc {command}: error: {argv[0]} is a flag of the route daemon (flannel-alivpc "
                        f"without a command); `{command}` does not take it before its name (see flannel-alivpc "
                        f"{command} --help)")


def test_a_bad_log_level_after_a_subcommand_names_the_subcommand(capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    line = _one_error_line(run_cli(["emulator", "--log-level", "loud"], capsys, monkeypatch))
    assert line == "flannel-alivpc emulator: error: argument --log-level: 'loud' is not one of debug, info, " \
                   "warning, error"


@pytest.fixture
def etcd_with_a_lease(etcd_server: EtcdServer) -> EtcdServer:
    with EtcdClient([etcd_server.endpoint]) as etcd:
        etcd.put("/cli-test/config", '{"Network": "10.244.0.0/16", "Backend": {"Type": "ali-vpc"}}')
        etcd.put("/cli-test/subnets/10.244.7.0-24",
                 '{"PublicIP":"192.168.0.7","PublicIPv6":null,"BackendType":"ali-vpc",'
                 '"BackendData":{"InstanceId":"i-cli7","NetworkType":"vpc","VpcId":"vpc-1"}}')
    return etcd_server


def _leases(outcome: Outcome) -> list[str]:
    assert outcome.rc == 0, outcome.stderr
    return [row["subnet"] for row in json.loads(outcome.stdout)]


def test_connection_flags_work_before_and_after_the_subcommand(etcd_with_a_lease: EtcdServer,
                                                               capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = etcd_with_a_lease.endpoint
    before = run_cli(["--etcd-endpoints", endpoint, "--etcd-prefix", "/cli-test", "leases", "--output", "json"],
                     capsys, monkeypatch)
    assert _leases(before) == ["10.244.7.0/24"]
    after = run_cli(["leases", "--etcd-endpoints", endpoint, "--etcd-prefix=/cli-test", "--output", "json"],
                    capsys, monkeypatch)
    assert _leases(after) == ["10.244.7.0/24"]
    # After the subcommand wins over before it, which wins over the environment.
    mixed = run_cli(["--etcd-prefix", "/elsewhere", "leases", "--etcd-prefix", "/cli-test", "--output", "json"],
                    capsys, monkeypatch, env={"FLANNELD_ETCD_ENDPOINTS": endpoint, "FLANNELD_ETCD_PREFIX": "/nope"})
    assert _leases(mixed) == ["10.244.7.0/24"]
    assert _leases(run_cli(["--etcd-prefix", "/elsewhere", "leases", "--output", "json"], capsys, monkeypatch,
                           env={"FLANNELD_ETCD_ENDPOINTS": endpoint})) == []


def test_a_missing_file_is_refused_before_connecting(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "ca.pem"
    outcome = run_cli(["leases", "--etcd-endpoints", "https://127.0.0.1:1", "--etcd-cafile", str(missing)],
                      capsys, monkeypatch)
    assert outcome.rc == 2 and "Traceback" not in outcome.stderr
    assert outcome.stderr.strip().endswith(f"--etcd-cafile {missing}: no such file; fix the path or mount the file")


@pytest.mark.parametrize(("argv", "message"), [
    (["slb-controller", "--healthz-port", "70000"], "argument --healthz-port: '70000' is out of range: use 0 to 65535"),
    (["slb-controller", "--workers=0"], "argument --workers: '0' is too small: use at least 1"),
    (["slb-controller", "--lease-duration=1"], "argument --lease-duration: '1' is too small: use at least 3 seconds"),
    (["install", "--node-type", "down", "--metadata-url", "100.100.100.200"],
     "argument --metadata-url: '100.100.100.200' is not a URL starting with http:// or https://"),
])
def test_the_other_commands_check_their_values_the_same_way(argv: list[str], message: str,
                                                            capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    line = _one_error_line(run_cli(argv, capsys, monkeypatch))
    assert line == f"flannel-alivpc {argv[0]}: error: {message}"
