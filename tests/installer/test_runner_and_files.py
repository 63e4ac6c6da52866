"""The seams under the steps: command runners, the rooted file system, the YAML writer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from flannel_alivpc.installer import manifests
from flannel_alivpc.installer.hostfs import HostFS
from flannel_alivpc.installer.runner import CommandFailed, NetnsRunner, RecordingRunner, SubprocessRunner


def test_subprocess_runner_runs_for_real() -> None:
    runner = SubprocessRunner()
    assert runner.run(["cat"], input="on stdin").stdout == "on stdin"
    assert runner.run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False).returncode == 3
    with pytest.raises(CommandFailed) as failed:
        runner.run(["sh", "-c", "echo why it broke >&2; exit 4"])
    assert str(failed.value) == "`sh -c 'echo why it broke >&2; exit 4'` exited with status 4"
    assert failed.value.output_tail == "why it broke"
    missing = runner.run(["flannel-alivpc-no-such-program"], check=False)
    assert missing.returncode == 127 and "command not found" in missing.stderr
    with pytest.raises(CommandFailed, match=r"did not finish within 0\.2 s"):
        runner.run(["sleep", "5"], timeout=0.2)


def test_recording_runner_answers_from_its_script() -> None:
    runner = RecordingRunner()
    runner.respond(["kubeadm"], stdout="v1.34.0")
    runner.respond(["kubeadm", "init"], returncode=1, stderr="port in use")
    assert runner.run(["kubeadm", "version"]).stdout == "v1.34.0"
    with pytest.raises(CommandFailed) as failed:
        runner.run(["kubeadm", "init", "--config", "x"])
    assert failed.value.output_tail == "port in use"
    assert runner.run(["true"]).ok
    assert runner.commands == ["kubeadm version", "kubeadm init --config x", "true"]
    nested = NetnsRunner(runner, "ns1")
    nested.run(["ip", "link"], input="x")
    assert runner.calls[-1].argv == ("ip", "netns", "exec", "ns1", "ip", "link") and runner.calls[-1].input == "x"


def test_netns_runner_reports_a_missing_program_as_127() -> None:
    runner = RecordingRunner()
    runner.respond(["ip", "netns", "exec", "ns1", "iptables"], returncode=1,
                   stderr='exec of "iptables" failed: No such file or directory')
    assert NetnsRunner(runner, "ns1").run(["iptables", "-S"], check=False).returncode == 127


def test_hostfs_writes_atomically_under_its_root(tmp_path: Path) -> None:
    fs = HostFS(tmp_path)
    assert fs.path("/etc/x.conf") == tmp_path / "etc/x.conf" and not fs.is_real
    assert fs.write("/etc/secret.key", "k", mode=0o600) is True
    assert (tmp_path / "etc/secret.key").read_text() == "k"
    assert os.stat(tmp_path / "etc/secret.key").st_mode & 0o777 == 0o600
    assert fs.write("/etc/secret.key", "k", mode=0o600) is False  # same content: untouched
    assert fs.write("/etc/secret.key", "k", mode=0o644) is True  # mode differs: rewritten
    assert [p.name for p in (tmp_path / "etc").iterdir()] == ["secret.key"]  # no temporary files left
    assert fs.read("/etc/missing") is None and fs.remove("/etc/missing") is False
    assert fs.remove("/etc") is True and not fs.exists("/etc")
    with pytest.raises(ValueError):
        fs.path("relative")


@pytest.mark.parametrize("value", [
    {"a": "true", "b": "8471", "c": "*", "d": "a: b", "e": "", "f": "-f", "g": "1.34", "h": "2024-01-01",
     "i": "1:20", "j": "null", "k": "~", "l": "@x", "m": "#c", "n": "sha256:ab", "o": "https://x:2379",
     "p": "v1", "q": "system:node", "r": "yes", "s": "0x1F", "t": "a b", "u": "tab\tx", "v": "ünïcode"},
    {"list": [1, 2.5, True, None, "x", [], {}, [1, [2]], {"k": [{"a": 1, "b": {"c": "d"}}]}]},
    {"multi": "line one\nline two\n", "nochomp": "a\nb", "blank": "x\n\ny\n", "json": '{\n  "k": 1\n}\n',
     "two": "a\n\n", " lead": " x\ny", "cr": "a\r\nb", "tabs": "a\n\tb", "items": ["p\nq\n", "r\n\n"]},
])
def test_yaml_round_trips(value: Any) -> None:
    assert yaml.safe_load(manifests.dump_yaml([value])) == value


def test_yaml_documents_and_header() -> None:
    text = manifests.dump_yaml([{"kind": "A"}, {"kind": "B"}], ["first line", ""])
    assert text.startswith("# first line\n#\n")
    assert list(yaml.safe_load_all(text)) == [{"kind": "A"}, {"kind": "B"}]
