"""The command line: the guide's flags and throwaway word, keys kept off argv, clear errors."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from flannel_alivpc import cli
from flannel_alivpc.core.errors import ConfigError
from flannel_alivpc.emulator.server import Emulator, Topology
from flannel_alivpc.installer import cli as install_cli
from flannel_alivpc.installer.options import load_access_key, parse_discovery, parse_kubernetes_version
from flannel_alivpc.installer.runner import RecordingRunner
from tests.installer.support import CA_HASH, make_root

SECRET = "cli-secret-value-0042"


def parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(["install", *argv])


def options(*argv: str, env: dict[str, str] | None = None) -> tuple[object, list[str]]:
    warnings: list[str] = []
    opts = install_cli.options_from_args(parse(*argv), env or {}, warnings.append, ["install", *argv])
    return opts, warnings


def test_the_guides_command_line_is_accepted() -> None:
    args = parse("nice", "--node-type", "master", "--key-id", "AK", "--key-secret", SECRET,
                 "--region", "cn-hangzhou", "--discovery", "token://")
    assert args.legacy_word == "nice" and args.node_type == "master" and args.region == "cn-hangzhou"
    short = parse("nice", "-t", "n", "-k", "AK", "-s", SECRET, "-r", "cn-beijing", "-d", "token://")
    assert (short.node_type, short.key_id, short.region) == ("node", "AK", "cn-beijing")
    assert parse("nice", "--node-type", "d").node_type == "down"
    with pytest.raises(SystemExit):
        parse("--node-type", "worker")


def test_keys_on_argv_warn_and_never_show() -> None:
    opts, warnings = options("nice", "--node-type", "master", "--key-id", "AK", "--key-secret", SECRET,
                             "--discovery", "token://")
    assert any("visible to every user in `ps`" in w for w in warnings)
    assert SECRET not in repr(opts) and SECRET not in " ".join(warnings)
    assert SECRET not in opts.command_line  # type: ignore[attr-defined]
    assert "--key-secret '***'" in opts.command_line  # type: ignore[attr-defined]


def test_keys_from_env_or_file(tmp_path: Path) -> None:
    opts, warnings = options("--node-type", "master", env={"ACCESS_KEY_ID": "AK", "ACCESS_KEY_SECRET": SECRET})
    assert opts.access_key.key_id == "AK" and opts.access_key.source == "environment"  # type: ignore[attr-defined]
    assert not warnings
    key_file = tmp_path / "key.env"
    key_file.write_text(f"# RAM user k8s\nexport ACCESS_KEY_ID=AK2\nACCESS_KEY_SECRET='{SECRET}'\n")
    key_file.chmod(0o644)
    opts, warnings = options("--node-type", "master", "--key-file", str(key_file))
    assert opts.access_key.key_id == "AK2"  # type: ignore[attr-defined]
    assert opts.access_key.secret.reveal() == SECRET  # type: ignore[attr-defined]
    assert warnings == [f"--key-file {key_file} can be read by other users (mode 0644): chmod 600 {key_file}"]
    with pytest.raises(ConfigError, match="ACCESS_KEY_ID is set but ACCESS_KEY_SECRET is not"):
        load_access_key(key_id_arg=None, key_secret_arg=None, key_file=None, env={"ACCESS_KEY_ID": "x"},
                        warn=print)
    with pytest.raises(ConfigError, match="--key-id is given but --key-secret is not"):
        options("--node-type", "master", "--key-id", "AK")


def test_bad_input_says_what_to_do() -> None:
    with pytest.raises(ConfigError, match="a master needs the access key"):
        options("--node-type", "master")
    with pytest.raises(ConfigError, match="a node needs --discovery"):
        options("--node-type", "node")
    with pytest.raises(ConfigError, match="no valid ca-cert-hash"):
        options("--node-type", "node", "--discovery", "token://abcdef.0123456789abcdef@10.0.0.1:6443")
    with pytest.raises(ConfigError, match="6 and 16 lower-case"):
        options("--node-type", "node", "--discovery", "token://short:token@10.0.0.1")
    with pytest.raises(ConfigError, match=r"overlaps 100\.64\.0\.0/10"):
        options("--node-type", "master", "--ram-role", "--pod-cidr", "100.64.0.0/16")
    with pytest.raises(ConfigError, match="overlap: pick disjoint"):
        options("--node-type", "master", "--ram-role", "--service-cidr", "172.16.128.0/20")
    with pytest.raises(ConfigError, match="too small"):
        options("--node-type", "master", "--ram-role", "--pod-cidr", "10.0.0.0/24")
    with pytest.raises(ConfigError, match="not an IPv4 network"):
        options("--node-type", "master", "--ram-role", "--pod-cidr", "10.0.0.1/16")
    with pytest.raises(ConfigError, match="did you mean --discovery"):
        options("token://abcdef.0123456789abcdef@10.0.0.1", "--node-type", "node")
    with pytest.raises(ConfigError, match=r"needs Kubernetes 1\.31 or later"):
        parse_kubernetes_version("1.29")
    assert parse_kubernetes_version("v1.33.4") == "1.33"


def test_discovery_forms() -> None:
    warnings: list[str] = []
    legacy = parse_discovery("token://abcdef:0123456789abcdef@10.0.0.1:9898", warnings.append)
    assert (legacy.token, legacy.endpoint) == ("abcdef.0123456789abcdef", "10.0.0.1:6443")
    assert "9898" in warnings[0]
    modern = parse_discovery(f"token://abcdef.0123456789abcdef@master.internal?ca-cert-hash={CA_HASH}", print)
    assert modern.endpoint == "master.internal:6443" and modern.ca_cert_hash == CA_HASH
    assert parse_discovery(modern.url(), print) == modern
    assert "0123456789abcdef" not in repr(modern)
    assert parse_discovery("token://", print).empty


def test_dry_run_through_the_cli(emulator: Emulator, topology: Topology, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_root(tmp_path / "root")
    runner = RecordingRunner()
    monkeypatch.setattr(install_cli, "runner_factory", lambda: runner)
    monkeypatch.setenv("ACCESS_KEY_ID", emulator.access_key_id)
    monkeypatch.setenv("ACCESS_KEY_SECRET", emulator.access_key_secret)
    code = cli.main(["install", "nice", "--node-type", "master", "--dry-run", "--root", str(root),
                     "--metadata-url", f"{emulator.endpoint}/meta/{topology.instance_ids[0]}",
                     "--api-endpoint", emulator.endpoint, "--discovery", "token://"])
    out = capsys.readouterr()
    assert code == 0, out
    # New installs are kube mode: no etcd certificate, Secret or network config in etcd for anyone.
    assert "[9/9] join-command: would run" in out.out
    assert "etcd" not in " ".join(line.split(":")[0] for line in out.out.splitlines() if line.startswith("["))
    assert emulator.access_key_secret not in out.out + out.err
    assert sorted(os.listdir(root / "etc")) == ["fstab", "os-release"]


def test_dry_run_without_metadata_lists_every_blocked_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    root = make_root(tmp_path / "root")
    monkeypatch.setattr(install_cli, "runner_factory", RecordingRunner)
    monkeypatch.setenv("ACCESS_KEY_ID", "ak")
    monkeypatch.setenv("ACCESS_KEY_SECRET", "sk-not-shown")
    # Nothing listens on port 1 of loopback: the metadata service is unreachable.
    code = cli.main(["install", "--node-type", "master", "--dry-run", "--root", str(root), "--region", "cn-hangzhou",
                     "--metadata-url", "http://127.0.0.1:1", "--discovery", "token://", "--subnet-manager", "etcd"])
    out = capsys.readouterr().out
    assert code != 0
    assert "[9/13] network-config: would fail" in out and "[12/13] manifests: would fail" in out
    assert "set --metadata-url" in out
    assert "[13/13] join-command: would run" in out  # the other steps are still shown
    assert "sk-not-shown" not in out


def test_config_errors_exit_2(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    assert cli.main(["install", "--node-type", "node", "--root", str(tmp_path)]) == 2
    assert "a node needs --discovery" in caplog.text
