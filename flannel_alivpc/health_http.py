"""The HTTP server behind /healthz, /readyz and /metrics, shared by the route daemon and the SLB controller.

Each component supplies its own health report, readiness test and Prometheus
collector; this module owns only the serving.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

HealthReport = Callable[[], tuple[bool, Mapping[str, Any]]]


class HealthHttpServer:
    """``/healthz`` (JSON, 200 or 503), ``/readyz`` (200 or 503) and ``/metrics`` on one port."""

    def __init__(self, host: str, port: int, *, health: HealthReport, ready: Callable[[], bool],
                 collector: Any, name: str) -> None:
        registry = CollectorRegistry()
        registry.register(collector)

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
        self._thread = threading.Thread(target=self._server.serve_forever, name=name, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
