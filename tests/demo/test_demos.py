"""The demos as a user runs them: `flannel-alivpc demo --slb`, and `demo --keep`'s hints and temporary files."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flannel_alivpc.slb.annotations import LEGACY_PREFIX


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and not k.startswith("FLANNELD_")}
    env["TMPDIR"] = str(tmp)  # where the demo makes its temporary directory
    return env


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_slb_demo_follows_a_service_from_creation_to_deletion(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "flannel_alivpc", "demo", "--slb"], env=_env(tmp_path),
                            capture_output=True, text=True, timeout=110)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "Traceback" not in out + result.stderr
    expose, edit, delete = (out.index(f"$ kubectl {step}") for step in
                            ("expose deployment nginx", "edit svc nginx", "delete svc nginx"))
    assert expose < edit < delete
    first, second, third = out[expose:edit], out[edit:delete], out[delete:]

    # The Service as the guide exposed it: a tcp:80 listener, the three nodes behind it, the address in its status.
    (lb_id, address) = re.search(r"SLB (lb-\S+)  (\S+)  internet, paybytraffic, 50 Mbps", first).groups()  # type: ignore[union-attr]
    assert re.search(r"listener tcp:80 -> node port (\d+)  running", first)
    assert len(re.findall(r"i-\S+ \(weight 100\)", first.split("backends", 1)[1].splitlines()[0])) == 3
    assert f"Normal EnsuredLoadBalancer: Ensured load balancer {lb_id}: create SLB" in first
    assert re.search(rf"nginx   LoadBalancer   \S+ +{re.escape(address)} +80:\d+/TCP", first)

    # Edited to https:443 with the 2017 annotations: the listener is replaced, the address stays.
    assert f"{LEGACY_PREFIX}ProtocolPort: https:443" in second
    assert re.search(rf"SLB {lb_id}  {re.escape(address)}  ", second)
    assert "listener https:443 -> node port" in second and "listener tcp:80" not in second.split("[", 1)[1]
    assert "delete listeners 80/tcp; create listeners 443/https; start listeners 443/https" in second
    assert (f"Warning UnknownAnnotation: annotation {LEGACY_PREFIX}HealthCheckIntervall has no effect: it is not "
            f"an SLB setting flannel-alivpc knows; did you mean {LEGACY_PREFIX}HealthCheckInterval?") in second
    assert re.search(rf"nginx   LoadBalancer   \S+ +{re.escape(address)} +443:\d+/TCP", second)

    # Deleted: the SLB goes with it.
    assert "] no SLB" in third and f"Normal DeletedLoadBalancer: Deleted load balancer {lb_id}" in third
    assert out.rstrip().endswith("demo finished: the SLB followed the Service from creation to deletion")
    assert list(tmp_path.iterdir()) == []  # the temporary directory is gone


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_demo_keep_prints_commands_that_run_as_printed_and_keeps_its_files(tmp_path: Path) -> None:
    env = _env(tmp_path)
    demo = subprocess.Popen([sys.executable, "-m", "flannel_alivpc", "demo", "--keep", "--nodes", "2",
                             "--route-delay", "0.2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        assert demo.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any("Press Ctrl-C" in line for line in lines):
            line = demo.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        text = "".join(lines)
        hints = [line.strip() for line in lines if " leases --etcd-endpoints " in line or " routes --" in line]
        assert len(hints) == 2, text
        for hint in hints:
            command = shlex.split(hint)
            assert Path(command[0]).is_absolute() and os.access(command[0], os.X_OK), hint  # not left to PATH
        key = re.search(r"export ACCESS_KEY_ID=(\S+) ACCESS_KEY_SECRET='([^']+)'", text)
        assert key is not None
        leases = subprocess.run(shlex.split(hints[1]), env={**env, "ACCESS_KEY_ID": key[1],
                                                             "ACCESS_KEY_SECRET": key[2]},
                                capture_output=True, text=True, timeout=60)
        assert leases.returncode == 0, leases.stderr
        assert leases.stdout.startswith("SUBNET") and "VTEP MAC" in leases.stdout.splitlines()[0]  # -o wide
        assert len(leases.stdout.splitlines()) == 2  # the node that left released its lease
    finally:
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=60)
    assert demo.returncode == 0, rest
    kept = re.search(r"files kept in (\S+)", rest)
    assert kept is not None and Path(kept[1]).parent == tmp_path and Path(kept[1]).is_dir()


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_the_kube_demo_routes_nodes_by_podcidr_and_reports_their_conditions(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "flannel_alivpc", "demo", "--kube", "--route-delay", "0.2"],
                            env=_env(tmp_path), capture_output=True, text=True, timeout=140)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "Traceback" not in out + result.stderr
    assert "kube-apiserver   http://127.0.0.1:" in out and "etcd " not in out
    assert len(re.findall(r"NetworkUnavailable=False \(RouteCreated\)", out)) == 3
    converged, removed = out.split("leaves: its daemon stops and its Node is deleted")
    assert "route table vtb-" in converged and converged.count(" ok      route-table ") == 3
    assert removed.count(" ok      route-table ") == 2
    assert "untouched: 0.0.0.0/0 -> ngw-demo" in removed
    assert list(tmp_path.iterdir()) == []
