"""/healthz, /readyz and Prometheus /metrics for the SLB controller.

Served by ``health_http``, as the route daemon's endpoints are.

* ``/healthz``: 200 while the watches run and, on the leader, no Service has
  failed ``stuck_after`` passes in a row; else 503. The JSON body says leader or
  standby, how many Services are managed and which ones are failing.
* ``/readyz``: 200 once the informers have listed everything (the controller started).
* ``/metrics``: passes by outcome, SLB/ECS API calls by action and outcome, Services
  managed, failing Services, and 1/0 for leadership.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from flannel_alivpc.health_http import HealthHttpServer, HealthReport

MetricsSource = Callable[[], Mapping[str, Any]]
ApiCalls = Callable[[], Mapping[tuple[str, str], int]]


class _Collector:
    """The controller's plain-data metrics as Prometheus families."""

    def __init__(self, source: MetricsSource, api_calls: ApiCalls) -> None:
        self._source = source
        self._api_calls = api_calls

    def collect(self) -> Any:
        data = self._source()
        passes = CounterMetricFamily("flannel_alivpc_slb_passes", "SLB reconcile passes by outcome",
                                     labels=["outcome"])
        for outcome, count in sorted((data.get("passes") or {}).items()):
            passes.add_metric([outcome], count)
        api = CounterMetricFamily("flannel_alivpc_slb_api_calls", "Alibaba Cloud API calls by action and outcome",
                                  labels=["action", "outcome"])
        for (action, outcome), count in sorted(self._api_calls().items()):
            api.add_metric([action, outcome], count)
        services = GaugeMetricFamily("flannel_alivpc_slb_services", "Services of type LoadBalancer managed")
        services.add_metric([], data.get("services", 0))
        failing = GaugeMetricFamily("flannel_alivpc_slb_failing_services",
                                    "Services whose last pass failed")
        failing.add_metric([], data.get("failing", 0))
        leader = GaugeMetricFamily("flannel_alivpc_slb_leader", "1 when this replica leads")
        leader.add_metric([], 1.0 if data.get("leader") else 0.0)
        yield from (passes, api, services, failing, leader)


class HealthServer(HealthHttpServer):
    def __init__(self, host: str, port: int, *, health: HealthReport, ready: Callable[[], bool],
                 metrics: MetricsSource, api_calls: ApiCalls = dict) -> None:
        super().__init__(host, port, health=health, ready=ready, collector=_Collector(metrics, api_calls),
                         name="slb-healthz")
