"""Every flag of upstream flanneld's main.go is accepted here, or refused with a sentence saying why.

The upstream list is the fixture ``fixtures/flanneld_flags.txt`` (generated once
from main.go, its header names the commit); the status of each flag is
``routed.config.flanneld_flags()``. The two must name the same flags, accepted
flags keep upstream's defaults and reach ``DaemonConfig`` from argv (either
spelling) and from ``FLANNELD_<FLAG>``, refused ones end with rc 2 and their
sentence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flannel_alivpc.cli import build_parser
from flannel_alivpc.core.logfmt import effective_level
from flannel_alivpc.core.secrets import Secret
from flannel_alivpc.routed.config import (
    ACCEPTED,
    DAEMON_FLAGS,
    DaemonConfig,
    config_from_args,
    flanneld_flags,
)
from tests.cli.support import run_cli

FIXTURE = Path(__file__).parent / "fixtures" / "flanneld_flags.txt"


def upstream() -> dict[str, tuple[str, str]]:
    """name -> (kind, default) as main.go declares them."""
    rows = [line.split("\t") for line in FIXTURE.read_text().splitlines() if line and not line.startswith("#")]
    return {name: (kind, default) for name, kind, default in rows}


ACCEPTED_FLAGS = sorted(name for name, status in flanneld_flags().items() if status == ACCEPTED)
REFUSED_FLAGS = sorted(name for name, status in flanneld_flags().items() if status != ACCEPTED)
BY_NAME = {flag.name: flag for flag in DAEMON_FLAGS}

# A valid value other than the default for every accepted flag that takes one, and what DaemonConfig holds then.
SAMPLES: dict[str, tuple[str, Any]] = {
    "etcd-endpoints": ("https://10.0.0.1:2379,10.0.0.2:2379", ["https://10.0.0.1:2379", "10.0.0.2:2379"]),
    "etcd-prefix": ("/my/network", "/my/network"),
    "etcd-keyfile": ("/etc/etcd/client.key", "/etc/etcd/client.key"),
    "etcd-certfile": ("/etc/etcd/client.crt", "/etc/etcd/client.crt"),
    "etcd-cafile": ("/etc/etcd/ca.crt", "/etc/etcd/ca.crt"),
    "etcd-username": ("flannel", "flannel"),
    "etcd-password": ("pw-on-argv", Secret("pw-on-argv")),
    "iface": ("eth1", ["eth1"]),
    "iface-regex": ("^en[a-z0-9]+$", ["^en[a-z0-9]+$"]),
    "iface-can-reach": ("192.168.0.1", "192.168.0.1"),
    "subnet-file": ("/tmp/subnet.env", "/tmp/subnet.env"),
    "public-ip": ("192.168.0.11", "192.168.0.11"),
    "subnet-lease-renew-margin": ("30", 30),
    "kube-api-url": ("https://10.96.0.1:443", "https://10.96.0.1:443"),
    "kube-annotation-prefix": ("example.com/flannel", "example.com/flannel"),
    "kubeconfig-file": ("/etc/kubernetes/kubelet.conf", "/etc/kubernetes/kubelet.conf"),
    "healthz-ip": ("127.0.0.1", "127.0.0.1"),
    "healthz-port": ("8471", 8471),
    "iptables-resync": ("10", 10),
    "net-config-path": ("/etc/flannel/net-conf.json", "/etc/flannel/net-conf.json"),
}


def test_the_table_names_exactly_the_flags_of_upstream_main_go() -> None:
    assert set(flanneld_flags()) == set(upstream())
    assert {"iptables-forward-rules", "ip-blackhole-route", "iface-can-reach", "etcd-password"} <= set(ACCEPTED_FLAGS)
    assert REFUSED_FLAGS == ["log_backtrace_at", "public-ipv6", "vmodule"]


def _as_upstream(value: Any) -> str:
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(value) if value else "-"
    return str(value)


def test_accepted_flags_keep_upstreams_defaults() -> None:
    config = config_from_args(build_parser(env={}).parse_args([]), env={})
    for name, (_kind, default) in upstream().items():
        if name in BY_NAME:
            assert _as_upstream(getattr(config, BY_NAME[name].field)) == default, name


def _config(argv: list[str], env: dict[str, str] | None = None) -> DaemonConfig:
    return config_from_args(build_parser(env=env or {}).parse_args(argv), env={})


@pytest.mark.parametrize("name", [n for n in ACCEPTED_FLAGS if n in BY_NAME])
def test_each_accepted_flag_reaches_the_daemon_config_from_argv_and_env(name: str) -> None:
    flag = BY_NAME[name]
    default = getattr(_config([]), flag.field)
    if flag.boolean:
        text, expected = ("false", False) if default else ("true", True)
    else:
        text, expected = SAMPLES[name]
    env = {flag.env_name: text}
    for argv, environ in (([f"--{name}", text], None), ([f"-{name}={text}"], None), ([], env)):
        assert getattr(_config(argv, environ), flag.field) == expected != default, (argv, environ)


def test_klog_verbosity_and_version_are_accepted(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for argv in (["-v", "2"], ["-v=2"], ["--v=2"]):
        args = build_parser(env={}).parse_args(argv)
        assert args.v == 2 and effective_level(args.log_level, args.v) == "debug"
    assert build_parser(env={"FLANNELD_V": "1"}).parse_args([]).v == 1
    for spelling in ("--version", "-version"):
        outcome = run_cli([spelling], capsys, monkeypatch)
        assert outcome.rc == 0 and outcome.stdout.startswith("flannel-alivpc ")


@pytest.mark.parametrize("name", REFUSED_FLAGS)
def test_each_refused_flag_ends_with_rc_2_and_its_sentence(name: str, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    sentence = flanneld_flags()[name]
    for argv in ([f"--{name}=x"], [f"-{name}=x"], [f"--{name}"]):
        outcome = run_cli(argv, capsys, monkeypatch)
        assert outcome.rc == 2
        assert outcome.stderr.splitlines()[-1] == f"flannel-alivpc: error: --{name}: {sentence}"
        assert "Traceback" not in outcome.stderr


def test_kube_mode_without_node_name_exits_1_saying_how_to_set_it(capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)
    outcome = run_cli(["--kube-subnet-mgr"], capsys, monkeypatch)
    assert outcome.rc == 1
    assert "NODE_NAME" in outcome.stderr and "spec.nodeName" in outcome.stderr
    assert "Traceback" not in outcome.stderr
