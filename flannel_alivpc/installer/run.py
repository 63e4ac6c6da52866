"""Runs the install: builds the context, picks the steps for the node type, runs the plan."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from flannel_alivpc.clients.etcd import EtcdClient
from flannel_alivpc.core.errors import ConfigError
from flannel_alivpc.installer import cluster, host, teardown
from flannel_alivpc.installer.context import Context
from flannel_alivpc.installer.hostfs import HostFS
from flannel_alivpc.installer.options import Options, running_as_root
from flannel_alivpc.installer.plan import InstallFailed, Reporter, RunContext, State, Step, run_plan
from flannel_alivpc.installer.runner import CommandRunner


def steps_for(node_type: str, subnet_manager: str = "kube") -> list[Step]:
    prepare: list[Step] = [host.Preflight(), host.HostSettings(), host.ContainerRuntime(),
                           host.KubernetesPackages(), cluster.KubeadmConfig()]
    if node_type == "master":
        # In kube mode net-conf.json travels in the manifests' ConfigMap and no node gets an etcd credential.
        # etcd-access comes last: once authentication is on, only root and the confined user get in.
        etcd_steps: list[Step] = [cluster.EtcdClientCert(), cluster.EtcdSecret(), cluster.NetworkConfig(),
                                  cluster.EtcdAccess()] if subnet_manager == "etcd" else []
        return [*prepare, cluster.KubeadmInit(), *etcd_steps, cluster.CloudSecret(), cluster.Manifests(),
                cluster.JoinCommand()]
    if node_type == "node":
        return [*prepare, cluster.KubeadmJoin()]
    return [teardown.KubeadmReset(), teardown.FlannelLease(), teardown.CniFiles(), teardown.NetworkDevices(),
            teardown.PodRoutes(), teardown.IptablesRules(), teardown.VpcRouteEntry(), teardown.SubnetEnv(),
            teardown.InstallerFiles()]


def run_install(
    options: Options,
    runner: CommandRunner,
    report: Reporter,
    *,
    env: Mapping[str, str] | None = None,
    etcd_factory: Callable[..., EtcdClient] | None = None,
) -> int:
    """Run (or show) the plan for ``options``; 0 on success, 1 when a step failed, 2 when refused."""
    fs = HostFS(options.root)
    state = State.load(fs)
    down = options.node_type == "down"
    dry_run = options.dry_run or (down and not options.yes)
    if fs.is_real and not dry_run and not running_as_root():
        raise ConfigError("run as root: the installer writes under /etc and runs kubeadm (sudo flannel-alivpc ...)")
    settings = {"pod_cidr": options.pod_cidr, "service_cidr": options.service_cidr,
                "backend": options.backend or "", "kubernetes_version": options.kubernetes_version}
    if not down:
        State(state.node_type, dict(state.settings), {}).pin(options.node_type, settings)
    ctx = Context(options=options, fs=fs, runner=runner, report=report, state=state,
                  env=dict(os.environ if env is None else env), etcd_factory=etcd_factory)
    run = RunContext(fs=fs, runner=runner, report=report, state=state, dry_run=dry_run,
                     retry_command=options.command_line or f"flannel-alivpc install --node-type {options.node_type}",
                     save_state=not down)

    def pin() -> None:
        state.pin(options.node_type, settings)
        state.save(fs)

    what = "tear down this node" if down else f"set this machine up as a Kubernetes {options.node_type}"
    report.say(f"flannel-alivpc install: {what}" + (" (dry run: nothing will change)" if dry_run else ""))
    try:
        fine = run_plan(steps_for(options.node_type, options.subnet_manager), ctx, run,
                        before_apply=None if down else pin)
    except InstallFailed as error:
        report.say("")
        print(f"ERROR: {error}", file=report.err, flush=True)
        return 1
    finally:
        ctx.close()
    if dry_run:
        if down and not options.dry_run:
            report.say("nothing was changed: add --yes to tear this node down")
            return 2
        report.say("dry run: nothing was changed" + ("" if fine else "; fix the problems above before running"))
        return 0 if fine else 1
    report.say("done" + (": this node is torn down" if down else ""))
    return 0
