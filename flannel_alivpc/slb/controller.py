"""The SLB controller: Services of type LoadBalancer -> Classic Load Balancers.

Wiring, in the project's one reconcile shape:

* three informers (list + watch, re-list on 410 Gone) keep Services, Nodes and
  EndpointSlices in memory. Their events only mark Services dirty in a keyed
  ``WorkQueue``: a Service change marks that Service, a Node change marks every
  Service (after a short delay, so a burst of node churn is one pass per
  Service), an EndpointSlice change marks its Service when that Service has
  ``externalTrafficPolicy: Local`` and its ready endpoints per node changed;
* ``workers`` threads take Services from the queue: one pass at a time per
  Service, Services in parallel. A pass computes the desired SLB (pure, from
  the Service, its annotations, the Nodes and, for ``Local``, the ready
  endpoints per node), observes the actual SLB through
  ``clients.slb``, plans the difference (pure) and applies it in the order
  ``slb.plan`` documents; then it sets ``status.loadBalancer.ingress``;
* after a successful pass a Service is queued again after the jittered resync
  interval (the SLB is external state: console edits and lost calls are found
  only by looking); after a failure, after a capped exponential backoff;
* only the leader (``slb.leader``) runs passes, and every write -- to the cloud
  or to Kubernetes, Events included -- is checked against the leadership first.

Safety rules:

* the finalizer is added before an SLB is created, so a deleted Service's SLB
  is always cleaned up; the Service goes only after the SLB did;
* an SLB is deleted only when its tags prove it is this cluster's SLB for this
  Service; a reused SLB (``id`` annotation) is never deleted;
* the create call carries a client token derived from the Service UID, and a
  pass looks for the tagged SLB before creating one, so a crash or a lost
  answer never leaves two SLBs;
* if the SLB is gone while the Service still shows its address, it is not
  created again silently (the address would change): an Event says so;
* an invalid annotation stops the pass before anything is written: a Warning
  Event and a log line name the annotation and the value;
* an annotation nothing reads (a typo, or a CCM setting not implemented here)
  changes nothing: it gets one Warning Event and one log line per Service, not
  one per pass (what was reported is remembered until the annotation goes).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from flannel_alivpc.clients.ecs import EcsClient
from flannel_alivpc.clients.kube import KubeClient
from flannel_alivpc.clients.slb import SlbClient
from flannel_alivpc.core.errors import CloudError, FlannelAliVpcError
from flannel_alivpc.core.kube import (
    EndpointSlice,
    KubeConflict,
    KubeError,
    KubeGone,
    KubeNotFound,
    Node,
    Service,
    WatchEvent,
)
from flannel_alivpc.core.loadbalancer import LoadBalancerInfo, LoadBalancerState
from flannel_alivpc.core.retry import RetryPolicy, backoff_delay
from flannel_alivpc.core.workqueue import WorkQueue
from flannel_alivpc.slb.annotations import Options, Problem, parse_annotations, review_annotations
from flannel_alivpc.slb.desired import (
    desired_spec,
    is_load_balancer,
    is_local,
    ready_endpoints_by_node,
    select_backends,
)
from flannel_alivpc.slb.events import NORMAL, WARNING, EventRecorder
from flannel_alivpc.slb.leader import LeaderElector, NotLeader
from flannel_alivpc.slb.model import TAG_CLUSTER, TAG_NAME, LoadBalancerSpec, load_balancer_name, owns_listener
from flannel_alivpc.slb.plan import apply_plan, plan_changes

log = logging.getLogger(__name__)

FINALIZER = "slb.flannel-alivpc.io/cleanup"
T = TypeVar("T")


@dataclass(frozen=True)
class ControllerSettings:
    region: str
    cluster_id: str = "kubernetes"
    workers: int = 4
    resync_interval: float = 300.0
    resync_jitter: float = 0.2
    backoff_base: float = 1.0
    backoff_max: float = 300.0
    watch_timeout: int = 300
    service_coalesce: float = 0.05
    node_coalesce: float = 0.5
    vswitch_id: str = ""
    component: str = "flannel-alivpc-slb"
    stuck_after: int = 10
    """Consecutive failed passes of one Service after which the leader reports itself unhealthy."""


class Problems(FlannelAliVpcError):
    """The Service asks for something that cannot be done; reported, not retried until it changes."""

    def __init__(self, reason: str, problems: Sequence[Problem | str]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.reason = reason
        self.problems = list(problems)


class CloudAccess:
    """What the controller needs of the cloud besides one region's SLB client."""

    def __init__(self, slb_for_region: Callable[[str], SlbClient], *, ecs: EcsClient | None = None,
                 default_vswitch: Callable[[], str] = lambda: "") -> None:
        self._slb_for_region = slb_for_region
        self._clients: dict[str, SlbClient] = {}
        self.ecs = ecs
        self._default_vswitch = default_vswitch
        self._vswitch: str | None = None
        self._ips: dict[str, str] = {}
        self._lock = threading.Lock()

    def slb(self, region: str) -> SlbClient:
        with self._lock:
            if region not in self._clients:
                self._clients[region] = self._slb_for_region(region)
            return self._clients[region]

    def default_vswitch(self) -> str:
        """The vSwitch for intranet SLBs without one named (asked once it is known)."""
        if not self._vswitch:
            self._vswitch = self._default_vswitch()
        return self._vswitch

    def resolve_ips(self, ips: Sequence[str]) -> None:
        """Look up the instances of addresses not seen before (one call for all of them)."""
        with self._lock:
            missing = sorted({ip for ip in ips if ip not in self._ips})
        if not missing or self.ecs is None:
            return
        found = self.ecs.describe_instances(private_ips=missing)
        with self._lock:
            for instance in found:
                self._ips[instance.private_ip] = instance.instance_id

    def instance_by_ip(self, ip: str) -> str | None:
        with self._lock:
            return self._ips.get(ip)


class Informer(Generic[T]):
    """A cache of one kind of object, kept by list + watch; calls ``on_change(old, new)`` on every change."""

    def __init__(self, name: str, *, list_fn: Callable[[], tuple[list[T], str]],
                 watch_fn: Callable[[str, int], Iterator[WatchEvent[T]]], key: Callable[[T], str],
                 version: Callable[[T], str], on_change: Callable[[T | None, T | None], None],
                 watch_timeout: int, stop: threading.Event) -> None:
        self.name = name
        self._list = list_fn
        self._watch = watch_fn
        self._key = key
        self._version = version
        self._on_change = on_change
        self._watch_timeout = watch_timeout
        self._stop = stop
        self._items: dict[str, T] = {}
        self._lock = threading.Lock()
        self.synced = threading.Event()
        self.relists = 0

    def get(self, key: str) -> T | None:
        with self._lock:
            return self._items.get(key)

    def items(self) -> list[T]:
        with self._lock:
            return list(self._items.values())

    def _set(self, key: str, new: T | None) -> None:
        with self._lock:
            old = self._items.get(key)
            if new is None:
                self._items.pop(key, None)
            else:
                self._items[key] = new
        self._on_change(old, new)

    def run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                version = self._relist()
                failures = 0
                while not self._stop.is_set():
                    for event in self._watch(version, self._watch_timeout):
                        key = self._key(event.object)
                        self._set(key, None if event.type == "DELETED" else event.object)
                        version = self._version(event.object) or version
                        if self._stop.is_set():
                            return
            except KubeGone:
                log.info("%s: watch history expired; listing again", self.name)
            except KubeError as error:
                failures += 1
                if self._stop.is_set():
                    return
                delay = min(30.0, 0.2 * 2 ** min(failures, 8))
                log.warning("%s: %s; listing again in %.1fs", self.name, error, delay)
                self._stop.wait(delay)

    def _relist(self) -> str:
        items, version = self._list()
        self.relists += 1
        fresh = {self._key(item): item for item in items}
        with self._lock:
            gone = [k for k in self._items if k not in fresh]
        for key in gone:
            self._set(key, None)
        for key, item in fresh.items():
            self._set(key, item)
        self.synced.set()
        return version


def _service_shape(service: Service) -> Service:
    """A Service without what changes on every write we make (resourceVersion, status, finalizers)."""
    meta = dataclasses.replace(service.meta, resource_version="", finalizers=())
    return dataclasses.replace(service, meta=meta, ingress_ips=(), ingress_hostnames=())


def _node_shape(node: Node) -> Node:
    return dataclasses.replace(node, meta=dataclasses.replace(node.meta, resource_version=""))


def _endpoint_counts(endpoint_slice: EndpointSlice | None) -> tuple[str | None, dict[str, int]]:
    if endpoint_slice is None:
        return None, {}
    key = endpoint_slice.service_key
    return key, ready_endpoints_by_node([endpoint_slice], key) if key else {}


PASS_OUTCOMES = ("success", "failure", "problem", "not_leader")


@dataclass
class ControllerStats:
    passes: int = 0
    failures: int = 0
    applied: int = 0
    """Passes that changed something in the cloud."""
    last_error: str = ""
    outcomes: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(PASS_OUTCOMES, 0))
    """Passes by outcome: ``success``, ``failure`` (retried with backoff), ``problem`` (the Service asks
    for something impossible; reported, not retried) and ``not_leader``."""
    failing: dict[str, int] = dataclasses.field(default_factory=dict)
    """Service key -> consecutive failed passes (absent once a pass succeeds)."""


class ServiceController:
    def __init__(self, kube: KubeClient, cloud: CloudAccess, settings: ControllerSettings, *,
                 elector: LeaderElector | None = None, rng: random.Random | None = None) -> None:
        self.kube = kube
        self.cloud = cloud
        self.settings = settings
        self.elector = elector
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self._leading = threading.Event()
        self.queue: WorkQueue[str] = WorkQueue()
        self.stats = ControllerStats()
        self._stats_lock = threading.Lock()
        self._lb_ids: dict[str, tuple[str, str]] = {}
        """Service UID -> (region, SLB id) of SLBs found by their tags (ownership proven)."""
        self._ids_lock = threading.Lock()
        self._noticed: dict[str, frozenset[str]] = {}
        """Service UID -> the unread annotations already reported (each gets one Event, not one per pass)."""
        self._noticed_lock = threading.Lock()
        self.events = EventRecorder(kube, component=settings.component, guard=self.guard)
        self.services: Informer[Service] = Informer(
            "services", list_fn=kube.list_services, watch_fn=kube.watch_services, key=lambda s: s.key,
            version=lambda s: s.meta.resource_version, on_change=self._service_changed,
            watch_timeout=settings.watch_timeout, stop=self._stop)
        self.nodes: Informer[Node] = Informer(
            "nodes", list_fn=kube.list_nodes, watch_fn=kube.watch_nodes, key=lambda n: n.meta.name,
            version=lambda n: n.meta.resource_version, on_change=self._node_changed,
            watch_timeout=settings.watch_timeout, stop=self._stop)
        self.endpoints: Informer[EndpointSlice] = Informer(
            "endpointslices", list_fn=kube.list_endpoint_slices, watch_fn=kube.watch_endpoint_slices,
            key=lambda e: e.key, version=lambda e: e.meta.resource_version, on_change=self._endpoints_changed,
            watch_timeout=settings.watch_timeout, stop=self._stop)
        self._informers = (self.services, self.nodes, self.endpoints)
        self._threads: list[threading.Thread] = []
        if elector is not None:
            elector._on_started = self._started_leading
            elector._on_stopped = self._stopped_leading

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self, *, sync_timeout: float = 60.0) -> None:
        """Start the informers, wait for their first list, then campaign (or lead) and work."""
        for informer in self._informers:
            self._spawn(informer.run, f"informer-{informer.name}")
        deadline = time.monotonic() + sync_timeout
        for informer in self._informers:
            if not informer.synced.wait(max(0.0, deadline - time.monotonic())):
                raise KubeError(f"the {informer.name} informer did not sync within {sync_timeout:.0f}s")
        for n in range(self.settings.workers):
            self._spawn(self._work, f"slb-worker-{n}")
        if self.elector is not None:
            self._spawn(self.elector.run, "leader-election")
        else:
            self._started_leading()

    def stop(self, *, release: bool = True) -> None:
        self._stop.set()
        self._leading.set()  # wake idle workers so they see the stop
        if self.elector is not None:
            self.elector.stop(release=release)
        self.queue.shutdown()
        self.kube.stop_watches()
        for thread in self._threads:
            thread.join(timeout=10)

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    @property
    def leading(self) -> bool:
        return self.elector.leading if self.elector is not None else not self._stop.is_set()

    def guard(self) -> None:
        if self._stop.is_set():
            raise NotLeader("the controller is stopping")
        if self.elector is not None:
            self.elector.guard()

    def _started_leading(self) -> None:
        self._leading.set()
        for service in self.services.items():
            if self._relevant(service):
                self.queue.add(service.key)

    def _stopped_leading(self) -> None:
        self._leading.clear()

    # -- events -> dirty marks ---------------------------------------------------------------------

    @staticmethod
    def _relevant(service: Service | None) -> bool:
        return service is not None and (is_load_balancer(service) or FINALIZER in service.meta.finalizers)

    def _service_changed(self, old: Service | None, new: Service | None) -> None:
        if not (self._relevant(old) or self._relevant(new)):
            return
        if old is not None and new is not None and _service_shape(old) == _service_shape(new):
            return  # only what our own writes change (status, finalizers, resourceVersion)
        if new is None and old is not None:
            with self._noticed_lock:
                self._noticed.pop(old.meta.uid, None)
        current = new if new is not None else old
        if current is not None:
            self.queue.add(current.key, self.settings.service_coalesce)

    def _node_changed(self, old: Node | None, new: Node | None) -> None:
        if old is not None and new is not None and _node_shape(old) == _node_shape(new):
            return  # a heartbeat
        if not self.services.synced.is_set():
            return
        for service in self.services.items():
            if is_load_balancer(service):
                self.queue.add(service.key, self.settings.node_coalesce)

    def _endpoints_changed(self, old: EndpointSlice | None, new: EndpointSlice | None) -> None:
        old_key, old_counts = _endpoint_counts(old)
        new_key, new_counts = _endpoint_counts(new)
        if old_key == new_key and old_counts == new_counts:
            return  # nothing that decides backends changed (addresses, ports, other conditions)
        if not self.services.synced.is_set():
            return
        for key in {k for k in (old_key, new_key) if k}:
            service = self.services.get(key)
            if service is not None and is_load_balancer(service) and is_local(service):
                self.queue.add(key, self.settings.service_coalesce)

    # -- health ------------------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, object]]:
        """(healthy, report): the watches run and, on the leader, no Service is stuck failing."""
        alive = {t.name for t in self._threads if t.is_alive()}
        watches = {i.name: i.synced.is_set() and f"informer-{i.name}" in alive for i in self._informers}
        leading = self.leading
        with self._stats_lock:
            failing = dict(self.stats.failing)
            last_error = self.stats.last_error
        stuck = sorted(k for k, n in failing.items() if n >= self.settings.stuck_after)
        services = sum(1 for s in self.services.items() if is_load_balancer(s))
        healthy = all(watches.values()) and not self._stop.is_set() and not (leading and stuck)
        report: dict[str, object] = {
            "healthy": healthy, "role": "leader" if leading else "standby", "watches": watches,
            "services": services, "failing": failing, "stuck": stuck, "stuck_after": self.settings.stuck_after,
        }
        if failing and last_error:
            report["last_error"] = last_error
        return healthy, report

    def ready(self) -> bool:
        """Every informer has listed once (the controller is started)."""
        return all(i.synced.is_set() for i in self._informers) and not self._stop.is_set()

    def metrics(self) -> dict[str, object]:
        """Plain data for /metrics: passes by outcome, Services managed, leadership."""
        with self._stats_lock:
            outcomes = dict(self.stats.outcomes)
            failing = len(self.stats.failing)
        return {"passes": outcomes, "services": sum(1 for s in self.services.items() if is_load_balancer(s)),
                "failing": failing, "leader": self.leading}

    def _outcome(self, key: str, outcome: str) -> None:
        with self._stats_lock:
            self.stats.outcomes[outcome] = self.stats.outcomes.get(outcome, 0) + 1
            if outcome == "failure":
                self.stats.failing[key] = self.stats.failing.get(key, 0) + 1
            elif outcome != "not_leader":
                self.stats.failing.pop(key, None)

    # -- workers -----------------------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            if not self._leading.wait(timeout=0.5):
                continue
            key = self.queue.get(timeout=0.5)
            if key is None:
                continue
            try:
                self.process(key)
            finally:
                self.queue.done(key)

    def _resync_delay(self) -> float:
        spread = self.settings.resync_interval * self.settings.resync_jitter
        return self.settings.resync_interval + spread * (2 * self._rng.random() - 1)

    def process(self, key: str) -> None:
        """One pass for one Service, with its requeue (resync, or backoff after a failure)."""
        service = self.services.get(key)
        with self._stats_lock:
            self.stats.passes += 1
        try:
            self.reconcile(service)
        except NotLeader:
            self._outcome(key, "not_leader")
            self.queue.add(key)  # done again by whoever leads next (here, if we lead again)
            return
        except Problems as problems:
            self._outcome(key, "problem")
            self.queue.forget(key)
            assert service is not None
            for problem in problems.problems:
                log.error("service %s: %s", key, problem)
                self.events.emit(service, WARNING, problems.reason, str(problem))
            self.queue.add(key, self._resync_delay())
            return
        except Exception as error:
            attempt = self.queue.failed(key)
            policy = RetryPolicy(base_delay=self.settings.backoff_base, max_delay=self.settings.backoff_max)
            delay = backoff_delay(attempt, policy, self._rng)
            self._outcome(key, "failure")
            with self._stats_lock:
                self.stats.failures += 1
                self.stats.last_error = f"{key}: {error}"
            known = isinstance(error, (CloudError, KubeError))
            log.log(logging.WARNING if known else logging.ERROR, "service %s: pass failed (%s); retrying in %.1fs",
                    key, error, delay, exc_info=not known)
            if service is not None:
                self.events.emit(service, WARNING, "SyncLoadBalancerFailed", f"Error syncing load balancer: {error}")
            self.queue.add(key, delay)
            return
        self._outcome(key, "success")
        self.queue.forget(key)
        if self._relevant(self.services.get(key)):
            self.queue.add(key, self._resync_delay())

    # -- one pass ----------------------------------------------------------------------------------

    def reconcile(self, service: Service | None) -> None:
        if service is None:
            return
        wanted = is_load_balancer(service) and service.meta.deletion_timestamp is None
        if not wanted:
            if FINALIZER in service.meta.finalizers:
                self._clean_up(service)
            return
        self._report_unread_annotations(service)
        options, problems = parse_annotations(service.meta.annotations)
        if options is None:
            raise Problems("InvalidAnnotation", problems)
        service = self._ensure_finalizer(service)
        desired = self._desired(service, options)
        slb = self.cloud.slb(desired.region)
        observed = self._observe(slb, desired)
        if observed is None and service.ingress_ips and not desired.reuse_id:
            raise Problems("LoadBalancerMissing", [
                f"no SLB tagged {TAG_NAME}={desired.name} exists, but the Service shows the address "
                f"{','.join(service.ingress_ips)}: it is not created again (the address would change); "
                f"clear status.loadBalancer to get a new one"])
        if observed is not None and desired.reuse_id:
            self._check_reusable(observed.info, desired)
        plan = plan_changes(desired, observed)
        if plan.refusals:
            raise Problems("SyncLoadBalancerFailed", plan.refusals)
        info = observed.info if observed is not None else None
        if not plan.empty:
            log.info("service %s: %s", service.key, plan.summary())
            info = apply_plan(slb, desired, plan, info, self.guard)
            with self._stats_lock:
                self.stats.applied += 1
            if plan.create:
                self._remember(desired, info.load_balancer_id)
        assert info is not None
        if not desired.backends:
            why = " (externalTrafficPolicy: Local: no eligible node runs a ready endpoint)" if is_local(service) else ""
            self.events.emit(service, WARNING, "UnAvailableLoadBalancer",
                             f"There are no available nodes for LoadBalancer{why}")
        if service.ingress_ips != (info.address,):
            self.guard()
            self.kube.set_service_ingress(service, [info.address])
        if not plan.empty:
            self.events.emit(service, NORMAL, "EnsuredLoadBalancer",
                             f"Ensured load balancer {info.load_balancer_id}: {plan.summary()}")

    def _report_unread_annotations(self, service: Service) -> None:
        """One Warning Event and log line for each annotation nothing reads, the first time it is seen."""
        notices = review_annotations(service.meta.annotations)
        uid = service.meta.uid
        with self._noticed_lock:
            reported = self._noticed.get(uid, frozenset())
        fresh = [n for n in notices if n.annotation not in reported]
        if fresh:
            self.guard()
        for notice in fresh:
            log.warning("service %s: %s", service.key, notice.message)
            self.events.emit(service, WARNING, notice.reason, notice.message)
        with self._noticed_lock:
            # Only what is still there: an annotation removed and added again is reported again.
            if notices:
                self._noticed[uid] = frozenset(n.annotation for n in notices)
            else:
                self._noticed.pop(uid, None)

    def _desired(self, service: Service, options: Options) -> LoadBalancerSpec:
        region = options.region or self.settings.region
        nodes = self.nodes.items()
        self.cloud.resolve_ips([ip for node in nodes if not node.provider_id for ip in node.internal_ips])
        endpoints = ready_endpoints_by_node(self.endpoints.items(), service.key) if is_local(service) else None
        choice = select_backends(nodes, options, region, self.cloud.instance_by_ip, endpoints)
        if choice.unresolved:
            log.warning("service %s: no ECS instance known for nodes %s (providerID <region>.<instance-id> "
                        "or a private IP of an instance in %s); left out", service.key,
                        ", ".join(choice.unresolved), region)
        default_vswitch = ""
        if options.address_type == "intranet" and options.network_type != "classic" and not options.vswitch_id:
            default_vswitch = self.settings.vswitch_id or self.cloud.default_vswitch()
        desired, problems = desired_spec(service, options, backends=choice.backends,
                                         cluster_id=self.settings.cluster_id, region=region,
                                         default_vswitch=default_vswitch)
        if desired is None:
            raise Problems("InvalidLoadBalancerSpec", problems)
        return desired

    def _remember(self, desired: LoadBalancerSpec, load_balancer_id: str) -> None:
        with self._ids_lock:
            self._lb_ids[desired.uid] = (desired.region, load_balancer_id)

    def _forget(self, uid: str) -> None:
        with self._ids_lock:
            self._lb_ids.pop(uid, None)

    def _find_owned(self, slb: SlbClient, uid: str) -> list[LoadBalancerInfo]:
        tags = {TAG_NAME: load_balancer_name(uid), TAG_CLUSTER: self.settings.cluster_id}
        return slb.find(tags=tags)

    def _observe(self, slb: SlbClient, desired: LoadBalancerSpec) -> LoadBalancerState | None:
        """The SLB as it is: the reused one, or ours (remembered id, else found by its tags)."""
        if desired.reuse_id:
            lb_id = desired.reuse_id
        else:
            with self._ids_lock:
                remembered = self._lb_ids.get(desired.uid)
            lb_id = remembered[1] if remembered and remembered[0] == desired.region else ""
        described = slb.describe(lb_id) if lb_id else None
        if described is None and not desired.reuse_id:
            self._forget(desired.uid)
            found = self._find_owned(slb, desired.uid)
            if len(found) > 1:
                raise Problems("SyncLoadBalancerFailed", [
                    f"found {len(found)} SLBs tagged as this Service's "
                    f"({', '.join(f.load_balancer_id for f in found)}); delete the extra ones"])
            if found:
                lb_id = found[0].load_balancer_id
                described = slb.describe(lb_id)
                if described is not None:
                    self._remember(desired, lb_id)
        if described is None:
            return None
        info, backends = described
        listeners = tuple(slb.listeners(lb_id)) if desired.manages_listeners else ()
        return LoadBalancerState(info=info, listeners=listeners, backends=backends)

    def _check_reusable(self, info: LoadBalancerInfo, desired: LoadBalancerSpec) -> None:
        """A reused SLB must not be one this or another controller created for a Service."""
        found = self.cloud.slb(desired.region).find(load_balancer_id=info.load_balancer_id)
        tags = found[0].tags if found else {}
        if TAG_NAME in tags:
            raise Problems("SyncLoadBalancerFailed", [
                f"the SLB {info.load_balancer_id} was created by a Kubernetes controller for another Service "
                f"(tag {TAG_NAME}={tags[TAG_NAME]}) and cannot be reused"])

    # -- Kubernetes writes -----------------------------------------------------------------------

    def _ensure_finalizer(self, service: Service) -> Service:
        if FINALIZER in service.meta.finalizers:
            return service
        self.guard()
        try:
            return self.kube.set_service_finalizers(service, [*service.meta.finalizers, FINALIZER])
        except KubeConflict:
            fresh = self.kube.get_service(service.meta.namespace, service.meta.name)
            if fresh.meta.uid != service.meta.uid or fresh.meta.deletion_timestamp:
                raise
            self.guard()
            return self.kube.set_service_finalizers(fresh, [*fresh.meta.finalizers, FINALIZER])

    def _remove_finalizer(self, service: Service) -> None:
        for _ in range(3):
            remaining = [f for f in service.meta.finalizers if f != FINALIZER]
            if len(remaining) == len(service.meta.finalizers):
                return
            self.guard()
            try:
                self.kube.set_service_finalizers(service, remaining)
                return
            except KubeNotFound:
                return
            except KubeConflict:
                try:
                    service = self.kube.get_service(service.meta.namespace, service.meta.name)
                except KubeNotFound:
                    return
        raise KubeConflict(f"service {service.key} kept changing while its finalizer was removed")

    # -- the delete path ----------------------------------------------------------------------------

    def _clean_up(self, service: Service) -> None:
        """Delete what this Service made (its own SLB; or its listeners and backends on a reused one)."""
        options, _ = parse_annotations(service.meta.annotations)
        annotations = service.meta.annotations
        reuse_id = options.reuse_id if options else next(
            (v for k, v in annotations.items() if k.endswith(("alibaba-cloud-loadbalancer-id",
                                                                "alicloud-loadbalancer-id"))), "")
        region = (options.region if options else "") or self.settings.region
        slb = self.cloud.slb(region)
        meta = service.meta
        deleted: list[str] = []
        if reuse_id:
            self._release_reused(slb, reuse_id, service)
        for info in self._find_owned(slb, meta.uid):
            # Found by both ownership tags: this cluster's SLB for this Service.
            if info.delete_protection == "on":
                self.guard()
                slb.set_delete_protection(info.load_balancer_id, False)
            self.guard()
            slb.delete(info.load_balancer_id)
            deleted.append(info.load_balancer_id)
        self._forget(meta.uid)
        if service.ingress_ips or service.ingress_hostnames:
            self.guard()
            try:
                service = self.kube.set_service_ingress(service, [])
            except KubeNotFound:
                return
        self._remove_finalizer(service)
        if deleted:
            log.info("service %s: deleted SLB %s", service.key, ", ".join(deleted))
            self.events.emit(service, NORMAL, "DeletedLoadBalancer", f"Deleted load balancer {', '.join(deleted)}")
        elif reuse_id:
            self.events.emit(service, NORMAL, "CleanLoadBalancer",
                             f"Released the reused load balancer {reuse_id}")

    def _release_reused(self, slb: SlbClient, reuse_id: str, service: Service) -> None:
        """Take this Service's listeners and backend servers off a reused SLB; keep the rest."""
        described = slb.describe(reuse_id)
        if described is None:
            return
        meta, cluster = service.meta, self.settings.cluster_id
        for listener in slb.listeners(reuse_id):
            if owns_listener(listener.description, meta.name, meta.namespace, cluster):
                self.guard()
                slb.delete_listener(reuse_id, port=listener.port, protocol=listener.protocol)
        mine = f"k8s/{meta.name}/{meta.namespace}/{cluster}"
        servers = [b.server_id for b in described[1] if b.description == mine]
        if servers:
            self.guard()
            slb.remove_backends(reuse_id, servers)
