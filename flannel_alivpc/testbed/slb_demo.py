"""``flannel-alivpc demo --slb``: the SLB controller at work on one machine, as the 2017 guide used it.

The kube-apiserver stand-in (``testbed.kube_apiserver``) holds a Node per
emulated instance; the real ``flannel-alivpc slb-controller`` runs in its own
process against it and the cloud emulator, with the emulator's throwaway key
in its environment. The demo then does what the guide's reader did: expose
nginx as a Service of type LoadBalancer, watch the SLB, its listener and
backends appear, edit the Service to https:443 with the guide's annotations
(and one misspelt annotation, to show the Warning it draws), and delete it.
What it prints comes from the SLB API (through the SDK) and the Service's
status and Events, the way an operator would look.
"""

from __future__ import annotations

import copy
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TextIO

from flannel_alivpc.clients.aliyun_sdk import AliyunApi
from flannel_alivpc.clients.credentials import StaticCredentials
from flannel_alivpc.clients.slb import SlbClient
from flannel_alivpc.core.loadbalancer import LoadBalancerState
from flannel_alivpc.core.retry import RetryPolicy
from flannel_alivpc.emulator.server import Emulator
from flannel_alivpc.slb.annotations import LEGACY_PREFIX
from flannel_alivpc.slb.model import TAG_NAME, load_balancer_name
from flannel_alivpc.testbed.demo import flannel_alivpc_command, remove_workdir
from flannel_alivpc.testbed.kube_apiserver import KubeApiServer

ACCESS_KEY_ID = "slb-demo-ak"
NAMESPACE = "default"
SERVICE = "nginx"
TYPO = LEGACY_PREFIX + "HealthCheckIntervall"


def https_annotations(cert_id: str) -> dict[str, str]:
    """The guide's `kubectl edit svc nginx` (its CertID one of this emulator's), and a misspelt name."""
    guide = {"ProtocolPort": "https:443", "Bandwidth": "60", "CertID": cert_id, "HealthCheckFlag": "off"}
    return {**{LEGACY_PREFIX + name: value for name, value in guide.items()}, TYPO: "5"}


class _Watch:
    """Prints the SLB (as the API describes it) and the Service's new Events whenever they change."""

    def __init__(self, kube: KubeApiServer, slb: SlbClient, out: TextIO, poll: float) -> None:
        self.kube = kube
        self.slb = slb
        self.out = out
        self.poll = poll
        self._shown: list[str] = []
        self._events: set[str] = set()
        self._started = time.monotonic()

    def service(self) -> dict[str, Any] | None:
        return self.kube.get_object("v1", "services", NAMESPACE, SERVICE)

    def load_balancer(self, uid: str) -> LoadBalancerState | None:
        """The Service's SLB as the API describes it (found by its ownership tag), or ``None``."""
        found = self.slb.find(tags={TAG_NAME: load_balancer_name(uid)}) if uid else []
        described = self.slb.describe(found[0].load_balancer_id) if found else None
        if described is None:
            return None
        info, backends = described
        listeners = sorted(self.slb.listeners(info.load_balancer_id), key=lambda item: item.port)
        return LoadBalancerState(info, tuple(listeners), tuple(sorted(backends, key=lambda b: b.server_id)))

    def _print_new_events(self) -> None:
        for event in sorted(self.kube.objects("v1", "events"), key=lambda e: e["metadata"]["name"]):
            name = event["metadata"]["name"]
            if event["involvedObject"].get("name") == SERVICE and name not in self._events:
                self._events.add(name)
                self.out.write(f"  event {event['type']} {event['reason']}: {event['message']}\n")

    def until(self, done: Callable[[dict[str, Any] | None, LoadBalancerState | None], bool],
              timeout: float) -> bool:
        """Poll until ``done(service, its SLB)``; print what changed on the way."""
        deadline = time.monotonic() + timeout
        uid = ""
        while True:
            service = self.service()
            uid = service["metadata"]["uid"] if service is not None else uid
            load_balancer = self.load_balancer(uid)
            lines = _describe(load_balancer)
            if lines != self._shown:
                stamp = f"[{time.monotonic() - self._started:5.1f}s] "
                self.out.write("".join(f"{stamp if n == 0 else ' ' * len(stamp)}{line}\n"
                                       for n, line in enumerate(lines)))
                self._shown = lines
            self._print_new_events()
            self.out.flush()
            if done(service, load_balancer):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(self.poll)


def _ingress(service: dict[str, Any] | None) -> list[str]:
    ingress = ((service or {}).get("status", {}).get("loadBalancer") or {}).get("ingress") or []
    return [str(item.get("ip")) for item in ingress]


def _describe(load_balancer: LoadBalancerState | None) -> list[str]:
    if load_balancer is None:
        return ["no SLB"]
    info = load_balancer.info
    lines = [f"SLB {info.load_balancer_id}  {info.address}  {info.address_type}, {info.internet_charge_type}, "
             f"{info.bandwidth} Mbps"]
    lines += [f"  listener {item.protocol}:{item.port} -> node port {item.backend_port}  {item.status}"
              for item in load_balancer.listeners]
    servers = ", ".join(f"{b.server_id} (weight {b.weight})" for b in load_balancer.backends)
    return [*lines, f"  backends {servers or 'none'}"]


def _converged(port: int, protocol: str,
               backends: int) -> Callable[[dict[str, Any] | None, LoadBalancerState | None], bool]:
    """One running listener on ``protocol:port``, every node a backend, the address in the Service's status."""
    def done(service: dict[str, Any] | None, load_balancer: LoadBalancerState | None) -> bool:
        if load_balancer is None:
            return False
        listeners = [(item.protocol, item.port, item.status) for item in load_balancer.listeners]
        return (listeners == [(protocol, port, "running")] and len(load_balancer.backends) == backends
                and _ingress(service) == [load_balancer.info.address])

    return done


def _get_svc(service: dict[str, Any] | None, out: TextIO) -> None:
    """What `kubectl get svc nginx` shows."""
    assert service is not None
    ports = ",".join(f"{port['port']}:{port.get('nodePort', '')}/{port.get('protocol', 'TCP')}"
                     for port in service["spec"]["ports"])
    rows = [("NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)"),
            (SERVICE, service["spec"]["type"], service["spec"].get("clusterIP", ""),
             ",".join(_ingress(service)) or "<pending>", ports)]
    widths = [max(len(row[n]) for row in rows) for n in range(5)]
    out.write("$ kubectl get svc nginx\n")
    for row in rows:
        out.write("   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n")


@contextmanager
def _controller(kube: KubeApiServer, emulator: Emulator, workdir: Path, resync: float) -> Iterator[Path]:
    """``flannel-alivpc slb-controller`` in its own process; yields its log file."""
    kubeconfig = kube.write_kubeconfig(workdir / "kubeconfig")
    log_path = workdir / "slb-controller.log"
    first = next(iter(emulator.state.instances))
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    # The emulator's throwaway key, in the environment as the Deployment passes it (never on argv).
    env.update(ACCESS_KEY_ID=ACCESS_KEY_ID, ACCESS_KEY_SECRET=emulator.access_key_secret)
    args = [sys.executable, "-m", "flannel_alivpc", "slb-controller", "--kubeconfig", str(kubeconfig),
            "--api-endpoint", emulator.endpoint, "--region", emulator.state.settings.region,
            "--metadata-url", f"{emulator.endpoint}/meta/{first}", "--cluster-id", "demo",
            "--no-leader-elect", "--resync-interval", str(resync)]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                   start_new_session=True)
    try:
        yield log_path
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _edit_to_https(annotations: dict[str, str]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def edit(service: dict[str, Any]) -> dict[str, Any]:
        edited = copy.deepcopy(service)
        edited["metadata"].setdefault("annotations", {}).update(annotations)
        edited["spec"]["ports"][0]["port"] = 443  # the node port stays, as `kubectl edit` keeps it
        return edited

    return edit


def run_slb_demo(*, nodes: int = 3, keep: bool = False, timeout: float = 60.0, poll: float = 0.3,
                 resync: float = 30.0, out: TextIO = sys.stdout) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="flannel-alivpc-slb-demo-"))
    emulator = Emulator(access_key_id=ACCESS_KEY_ID, access_key_secret=secrets.token_urlsafe(16))
    kube = KubeApiServer()
    succeeded = False
    try:
        emulator.start()
        kube.start()
        topology = emulator.bootstrap(instances=nodes)
        region = emulator.state.settings.region
        for instance_id in topology.instance_ids:
            instance = emulator.state.instances[instance_id]
            kube.create(kube.resource("v1", "nodes"), "", {
                "metadata": {"name": instance.hostname}, "spec": {"providerID": f"{region}.{instance_id}"},
                "status": {"conditions": [{"type": "Ready", "status": "True"}],
                           "addresses": [{"type": "InternalIP", "address": instance.private_ip}]}})
        api = AliyunApi(region, emulator.endpoint, StaticCredentials(ACCESS_KEY_ID, emulator.access_key_secret),
                        retry=RetryPolicy(max_attempts=3, base_delay=0.1, max_delay=0.5))
        slb = SlbClient(api, region)
        names = ", ".join(emulator.state.instances[i].hostname for i in topology.instance_ids)
        out.write(f"cloud emulator   {emulator.endpoint}  ({nodes} instances in {region})\n"
                  f"kube-apiserver   {kube.url}  (the in-repo stand-in; Nodes {names})\n")
        with _controller(kube, emulator, workdir, resync) as log_path:
            out.write(f"slb-controller   {flannel_alivpc_command()} slb-controller (log {log_path})\n\n")
            watch = _Watch(kube, slb, out, poll)
            services = kube.resource("v1", "services")

            out.write("$ kubectl expose deployment nginx --port=80 --target-port=80 --type=LoadBalancer\n")
            kube.create(services, NAMESPACE, {
                "metadata": {"name": SERVICE, "labels": {"run": SERVICE}},
                "spec": {"type": "LoadBalancer", "selector": {"run": SERVICE},
                         "ports": [{"port": 80, "targetPort": 80, "protocol": "TCP"}]}})
            if not watch.until(_converged(80, "tcp", nodes), timeout):
                out.write(f"the SLB did not converge within {timeout:.0f}s; the controller's log: {log_path}\n")
                return 1
            _get_svc(watch.service(), out)

            cert = api.call("slb", "UploadServerCertificate", {
                "RegionId": region, "AliCloudCertificateId": "cas-demo", "AliCloudCertificateName": "nginx"})
            annotations = https_annotations(str(cert["ServerCertificateId"]))
            out.write(f"\n$ kubectl edit svc nginx   # port 443 and the guide's annotations "
                      f"({TYPO.removeprefix(LEGACY_PREFIX)} misspelt)\n")
            out.write("".join(f"    {key}: {value}\n" for key, value in annotations.items()))
            kube.write(services, NAMESPACE, SERVICE, subresource="", change=_edit_to_https(annotations))
            if not watch.until(_converged(443, "https", nodes), timeout):
                out.write(f"the https listener did not converge within {timeout:.0f}s; log: {log_path}\n")
                return 1
            _get_svc(watch.service(), out)

            if keep:
                out.write(f"\nEverything keeps running. Look at it with:\n"
                          f"  curl -s {kube.url}/api/v1/namespaces/{NAMESPACE}/services/{SERVICE}\n"
                          f"  curl -s {kube.url}/api/v1/namespaces/{NAMESPACE}/events\n"
                          f"  curl -s {emulator.endpoint}/_emulator/state   # the emulated cloud, SLBs included\n"
                          f"  kubectl --kubeconfig {workdir / 'kubeconfig'} get svc,events   # if kubectl is "
                          f"installed\n"
                          f"The controller's log: {log_path}. Press Ctrl-C to delete the Service and stop.\n")
                out.flush()
                with suppress(KeyboardInterrupt):
                    signal.sigwait({signal.SIGINT, signal.SIGTERM})

            out.write("\n$ kubectl delete svc nginx\n")
            kube.delete(services, NAMESPACE, SERVICE, {})
            if not watch.until(lambda service, load_balancer: service is None and load_balancer is None, timeout):
                out.write(f"the SLB was not deleted within {timeout:.0f}s; log: {log_path}\n")
                return 1
        out.write("demo finished: the SLB followed the Service from creation to deletion\n")
        succeeded = True
        return 0
    finally:
        kube.stop()
        emulator.stop()
        remove_workdir(workdir, keep=keep, succeeded=succeeded, out=out)
