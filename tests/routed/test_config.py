"""The daemon's flags: flannel's names, FLANNELD_<FLAG> environment defaults, clear refusals."""

from __future__ import annotations

import pytest

from flannel_alivpc.cli import build_parser
from flannel_alivpc.core.errors import ConfigError
from flannel_alivpc.routed.config import config_from_args


def test_flags_keep_flannels_names_and_defaults() -> None:
    args = build_parser(env={}).parse_args(["--iface", "eth0", "--iface", "10.0.0.5", "--ip-masq"])
    config = config_from_args(args, env={})
    assert config.iface == ["eth0", "10.0.0.5"]
    assert config.ip_masq is True
    assert config.etcd_endpoints == ["http://127.0.0.1:4001", "http://127.0.0.1:2379"]
    assert config.etcd_prefix == "/coreos.com/network"
    assert config.subnet_file == "/run/flannel/subnet.env"
    assert config.renew_margin_minutes == 60
    assert config.healthz_port == 0


def test_every_flag_can_come_from_the_environment_like_flanneld() -> None:
    env = {
        "FLANNELD_ETCD_ENDPOINTS": "http://10.1.0.1:2379,http://10.1.0.2:2379",
        "FLANNELD_ETCD_PREFIX": "/my/network",
        "FLANNELD_IFACE": "eth1",
        "FLANNELD_IP_MASQ": "true",
        "FLANNELD_SUBNET_LEASE_RENEW_MARGIN": "30",
        "FLANNELD_HEALTHZ_PORT": "8471",
        "FLANNELD_ROUTE_TABLE_IDS": "vtb-1,vtb-2",
    }
    args = build_parser(env=env).parse_args([])
    config = config_from_args(args, env=env)
    assert config.etcd_endpoints == ["http://10.1.0.1:2379", "http://10.1.0.2:2379"]
    assert config.etcd_prefix == "/my/network"
    assert config.iface == ["eth1"]
    assert config.ip_masq is True
    assert config.renew_margin_minutes == 30
    assert config.healthz_port == 8471
    assert config.route_table_ids == ["vtb-1", "vtb-2"]
    # A flag on the command line still wins over the environment.
    assert config_from_args(build_parser(env=env).parse_args(["--etcd-prefix", "/x"]), env=env).etcd_prefix == "/x"


def test_the_etcd_password_only_comes_from_the_environment_and_never_shows() -> None:
    config = config_from_args(build_parser(env={}).parse_args([]), env={"FLANNELD_ETCD_PASSWORD": "s3cr3t-pw"})
    assert config.etcd_password is not None and config.etcd_password.reveal() == "s3cr3t-pw"
    assert "s3cr3t-pw" not in repr(config)
    with pytest.raises(SystemExit):
        build_parser(env={}).parse_args(["--etcd-password", "x"])


@pytest.mark.parametrize(("argv", "message"), [
    (["--subnet-lease-renew-margin", "0"], "between 1 and 1439"),
    (["--subnet-lease-renew-margin", "1440"], "between 1 and 1439"),
    (["--etcd-endpoints", " , "], "--etcd-endpoints is empty"),
    (["--writer-lock-ttl", "1"], "at least 3 seconds"),
])
def test_bad_flags_are_refused_clearly(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_args(build_parser(env={}).parse_args(argv), env={})
