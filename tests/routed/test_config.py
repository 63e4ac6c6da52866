"""The daemon's flags: flannel's names and defaults, FLANNELD_<FLAG> environment values, clear refusals."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from flannel_alivpc.cli import build_parser
from flannel_alivpc.core.errors import ConfigError
from flannel_alivpc.routed.config import DaemonConfig, check_local_files, config_from_args


def parse(argv: list[str], env: dict[str, str] | None = None) -> DaemonConfig:
    return config_from_args(build_parser(env=env or {}).parse_args(argv), env={})


def test_flags_keep_flannels_names_and_defaults() -> None:
    config = parse(["--iface", "eth0", "--iface", "10.0.0.5", "--ip-masq"])
    assert config.iface == ["eth0", "10.0.0.5"]
    assert config.ip_masq is True
    assert config.etcd_endpoints == ["http://127.0.0.1:4001", "http://127.0.0.1:2379"]
    assert config.etcd_prefix == "/coreos.com/network"
    assert config.subnet_file == "/run/flannel/subnet.env"
    assert config.renew_margin_minutes == 60
    assert config.healthz_port == 0
    assert (config.iptables_forward_rules, config.iptables_resync, config.ip_blackhole_route) == (True, 5, False)
    assert (config.kube_annotation_prefix, config.net_config_path, config.set_node_network_unavailable) == \
        ("flannel.alpha.coreos.com", "/etc/kube-flannel/net-conf.json", True)


def test_every_flag_can_come_from_the_environment_like_flanneld() -> None:
    env = {
        "FLANNELD_ETCD_ENDPOINTS": "http://10.1.0.1:2379,http://10.1.0.2:2379",
        "FLANNELD_ETCD_PREFIX": "/my/network",
        "FLANNELD_IFACE": "eth1",
        "FLANNELD_IP_MASQ": "true",
        "FLANNELD_IPTABLES_FORWARD_RULES": "F",
        "FLANNELD_SUBNET_LEASE_RENEW_MARGIN": "30",
        "FLANNELD_HEALTHZ_PORT": "8471",
        "FLANNELD_ROUTE_TABLE_IDS": "vtb-1,vtb-2",
        "FLANNELD_IFACE_CAN_REACH": "",  # empty means unset, as in flanneld
    }
    config = parse([], env)
    assert config.etcd_endpoints == ["http://10.1.0.1:2379", "http://10.1.0.2:2379"]
    assert config.etcd_prefix == "/my/network"
    assert config.iface == ["eth1"]
    assert config.ip_masq is True
    assert config.iptables_forward_rules is False
    assert config.renew_margin_minutes == 30
    assert config.healthz_port == 8471
    assert config.route_table_ids == ["vtb-1", "vtb-2"]
    assert config.iface_can_reach is None
    # A flag on the command line wins over the environment, and replaces it (not appends to it).
    assert parse(["--etcd-prefix", "/x", "--iface", "eth9"], env).etcd_prefix == "/x"
    assert parse(["--iface", "eth9"], env).iface == ["eth9"]


@pytest.mark.parametrize("spelling", ["1", "t", "T", "TRUE", "true", "True"])
def test_booleans_read_as_gos_parsebool(spelling: str) -> None:
    assert parse([], {"FLANNELD_IP_BLACKHOLE_ROUTE": spelling}).ip_blackhole_route is True
    assert parse([f"--ip-blackhole-route={spelling}"]).ip_blackhole_route is True
    falsy = {"1": "0", "t": "f", "T": "F", "TRUE": "FALSE", "true": "false", "True": "False"}[spelling]
    assert parse([], {"FLANNELD_SET_NODE_NETWORK_UNAVAILABLE": falsy}).set_node_network_unavailable is False
    assert parse([f"--iptables-forward-rules={falsy}"]).iptables_forward_rules is False


def test_the_etcd_password_from_the_environment_never_shows() -> None:
    config = parse([], {"FLANNELD_ETCD_PASSWORD": "s3cr3t-pw"})
    assert config.etcd_password is not None and config.etcd_password.reveal() == "s3cr3t-pw"
    assert "s3cr3t-pw" not in repr(config)


def test_the_etcd_password_on_argv_works_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        args = build_parser(env={}).parse_args(["--etcd-password", "argv-pw-77"])
        config = config_from_args(args, env={})
    assert config.etcd_password is not None and config.etcd_password.reveal() == "argv-pw-77"
    assert "argv-pw-77" not in repr(args) and "argv-pw-77" not in repr(config)
    assert "process listings" in caplog.text and "FLANNELD_ETCD_PASSWORD" in caplog.text
    assert "argv-pw-77" not in caplog.text
    # From the environment: no warning.
    caplog.clear()
    parse([], {"FLANNELD_ETCD_PASSWORD": "env-pw"})
    assert "process listings" not in caplog.text


def test_kube_mode_flags_reach_the_config() -> None:
    config = parse(["--kube-subnet-mgr", "--kube-api-url", "https://10.0.0.1:6443", "--kubeconfig-file", "/k",
                    "--net-config-path", "/n.json", "--kube-annotation-prefix", "example.com",
                    "--set-node-network-unavailable=false"])
    assert (config.kube_subnet_mgr, config.kube_api_url, config.kubeconfig_file, config.net_config_path,
            config.kube_annotation_prefix, config.set_node_network_unavailable) == \
        (True, "https://10.0.0.1:6443", "/k", "/n.json", "example.com", False)


def test_node_name_and_pod_namespace_come_from_the_downward_api_variables() -> None:
    args = build_parser(env={}).parse_args([])
    config = config_from_args(args, env={"NODE_NAME": "node-a", "POD_NAMESPACE": "kube-flannel"})
    assert (config.node_name, config.pod_namespace) == ("node-a", "kube-flannel")


def _check(argv: list[str], env: dict[str, str] | None = None) -> None:
    args = build_parser(env=env or {}).parse_args(argv)
    check_local_files(config_from_args(args, env={}), args)


def test_missing_unreadable_and_malformed_files_are_refused_naming_their_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--etcd-cafile /no/such/ca.pem: no such file"):
        _check(["--etcd-cafile", "/no/such/ca.pem"])
    with pytest.raises(ConfigError, match=r"^FLANNELD_ETCD_CAFILE /no/such/ca.pem: no such file"):
        _check([], {"FLANNELD_ETCD_CAFILE": "/no/such/ca.pem"})
    with pytest.raises(ConfigError, match="is a directory"):
        _check(["--etcd-keyfile", str(tmp_path)])
    garbage = tmp_path / "ca.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match="not a PEM CA certificate"):
        _check(["--etcd-cafile", str(garbage)])
