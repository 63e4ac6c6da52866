"""``flannel-alivpc slb-controller`` as a process: flags, credentials from the environment, clean stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request

from flannel_alivpc.cli import build_parser
from tests.conftest import EMULATOR_AK, EMULATOR_SECRET
from tests.slb.conftest import REGION, SlbBed, wait_for

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, whatever *_proxy says


def test_flags() -> None:
    args = build_parser(env={}).parse_args(["slb-controller", "--kubeconfig", "k", "--region", "cn-beijing",
                                            "--api-endpoint", "http://127.0.0.1:1", "--no-leader-elect",
                                            "--cluster-id", "c9", "--workers", "8"])
    assert (args.kubeconfig, args.region, args.cluster_id, args.workers, args.leader_elect) == \
        ("k", "cn-beijing", "c9", 8, False)
    assert args.metadata_url == "http://100.100.100.200"
    assert (args.healthz_ip, args.healthz_port) == ("0.0.0.0", 0)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_command_manages_services_and_stops_on_sigterm(bed: SlbBed) -> None:
    bed.add_instance_nodes(1)
    kubeconfig = bed.kube.write_kubeconfig(bed.tmp / "cli.kubeconfig", token="token-a")
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(ACCESS_KEY_ID=EMULATOR_AK, ACCESS_KEY_SECRET=EMULATOR_SECRET)
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "flannel_alivpc", "--log-level", "DEBUG", "slb-controller",
         "--kubeconfig", str(kubeconfig), "--api-endpoint", bed.emulator.endpoint, "--region", REGION,
         "--metadata-url", f"{bed.emulator.endpoint}/meta/{bed.topology.instance_ids[0]}",
         "--cluster-id", "cli", "--lease-duration", "3", "--healthz-ip", "127.0.0.1", "--healthz-port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        bed.create_service("web", annotations={"service.beta.kubernetes.io/alibaba-cloud-loadbalancer-"
                                               "address-type": "intranet"})
        wait_for(lambda: bed.converged("web", backends=1), timeout=30)
        lb = bed.lb_for("web")
        assert lb is not None and lb.tags["ack.aliyun.com"] == "cli"
        assert lb.vswitch_id == bed.topology.vswitch_id  # from the metadata service
        with NO_PROXY.open(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            report = json.loads(answer.read())
        assert report["role"] == "leader" and report["services"] == 1 and report["healthy"] is True
        with NO_PROXY.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            assert b'flannel_alivpc_slb_api_calls_total{action="CreateLoadBalancer",outcome="success"} 1.0' \
                in answer.read()
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output
    assert EMULATOR_SECRET not in output and "token-a" not in output
    assert "now leads" in output
