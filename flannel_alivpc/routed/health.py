"""/healthz, /readyz and Prometheus /metrics for the route daemon.

``/healthz`` answers 200 while the daemon is doing its job and 503 otherwise,
with a JSON body that says why: etcd reachability, cloud API reachability,
and per route table whether this node is the writer and when its last
successful reconcile was. ``/readyz`` turns 200 once subnet.env is written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

from flannel_alivpc.health_http import HealthHttpServer, HealthReport

MetricsSource = Callable[[], dict[str, Any]]


class _Collector:
    """Turns the daemon's plain-data metrics snapshot into Prometheus families."""

    def __init__(self, source: MetricsSource) -> None:
        self._source = source

    def collect(self) -> Any:
        data = self._source()
        reconciles = CounterMetricFamily("flannel_alivpc_reconciles", "Reconcile passes by table and outcome",
                                         labels=["table", "outcome"])
        durations = GaugeMetricFamily("flannel_alivpc_reconcile_last_duration_seconds",
                                      "Duration of the last reconcile pass", labels=["table"])
        latency = SummaryMetricFamily("flannel_alivpc_reconcile_duration_seconds",
                                      "Time spent in reconcile passes (count and sum)", labels=["table"])
        writer = GaugeMetricFamily("flannel_alivpc_table_writer", "1 when this node writes the table",
                                   labels=["table"])
        routes = GaugeMetricFamily("flannel_alivpc_routes", "Route entries by table and state",
                                   labels=["table", "state"])
        overflow = GaugeMetricFamily("flannel_alivpc_overflow_nodes",
                                     "Nodes the table has no room for (quota), reached over VXLAN", labels=["table"])
        for table, info in data.get("tables", {}).items():
            reconciles.add_metric([table, "success"], info["passes"] - info["failures"])
            reconciles.add_metric([table, "failure"], info["failures"])
            durations.add_metric([table], info["last_duration"])
            latency.add_metric([table], count_value=info["passes"], sum_value=info["total_duration"])
            writer.add_metric([table], 1.0 if info["writer"] else 0.0)
            for state, count in info.get("routes", {}).items():
                routes.add_metric([table, state], count)
            overflow.add_metric([table], info.get("overflow", 0))
        api = CounterMetricFamily("flannel_alivpc_api_calls", "Alibaba Cloud API calls by action and outcome",
                                  labels=["action", "outcome"])
        for (action, outcome), count in data.get("api_calls", {}).items():
            api.add_metric([action, outcome], count)
        vxlan = data.get("vxlan") or {}
        vxlan_passes = CounterMetricFamily("flannel_alivpc_vxlan_reconciles", "VXLAN reconcile passes by outcome",
                                           labels=["outcome"])
        vxlan_duration = GaugeMetricFamily("flannel_alivpc_vxlan_reconcile_last_duration_seconds",
                                           "Duration of the last VXLAN reconcile pass")
        vxlan_peers = GaugeMetricFamily("flannel_alivpc_vxlan_peers", "Peers reached over VXLAN, by state",
                                        labels=["state"])
        if vxlan:
            vxlan_passes.add_metric(["success"], vxlan["passes"] - vxlan["failures"])
            vxlan_passes.add_metric(["failure"], vxlan["failures"])
            vxlan_duration.add_metric([], vxlan["last_duration"])
            vxlan_peers.add_metric(["programmed"], vxlan["peers"])
            vxlan_peers.add_metric(["unusable"], vxlan["unusable"])
        leases = GaugeMetricFamily("flannel_alivpc_leases", "Subnet leases in etcd")
        leases.add_metric([], data.get("leases", 0))
        malformed = GaugeMetricFamily("flannel_alivpc_malformed_leases", "Lease keys skipped as malformed")
        malformed.add_metric([], data.get("malformed_leases", 0))
        yield from (reconciles, durations, latency, writer, routes, overflow, api, vxlan_passes, vxlan_duration,
                    vxlan_peers, leases, malformed)


class HealthServer(HealthHttpServer):
    def __init__(self, host: str, port: int, *, health: HealthReport, ready: Callable[[], bool],
                 metrics: MetricsSource) -> None:
        super().__init__(host, port, health=health, ready=ready, collector=_Collector(metrics), name="healthz")
