"""/healthz, /readyz and Prometheus /metrics for the SLB controller.

The same shape as the route daemon's server (``routed.health``), kept separate:
the route daemon and the SLB controller never import each other.

* ``/healthz``: 200 while the watches run and, on the leader, no Service has
  failed ``stuck_after`` passes in a row; else 503. The JSON body says leader or
  standby, how many Services are managed and which ones are failing.
* ``/readyz``: 200 once the informers have listed everything (the controller started).
* ``/metrics``: passes by outcome, SLB/ECS API calls by action and outcome, Services
  managed, failing Services, and 1/0 for leadership.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

log = logging.getLogger(__name__)

HealthReport = Callable[[], tuple[bool, Mapping[str, Any]]]
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


class HealthServer:
    def __init__(self, host: str, port: int, *, health: HealthReport, ready: Callable[[], bool],
                 metrics: MetricsSource, api_calls: ApiCalls = dict) -> None:
        registry = CollectorRegistry()
        registry.register(_Collector(metrics, api_calls))

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                log.debug(format, *args)

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    ok, report = health()
                    self._send(200 if ok else 503, "application/json",
                               json.dumps(report, indent=1, sort_keys=True).encode())
                elif path == "/readyz":
                    ok = ready()
                    self._send(200 if ok else 503, "text/plain", b"ready\n" if ok else b"not ready\n")
                elif path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
                else:
                    self._send(404, "text/plain", b"not found\n")

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="slb-healthz", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
