"""The emulator's HTTP server: the RPC API gateway, the metadata service and the admin API.

Paths:

* ``/``                        RPC API (VPC, ECS, SLB, Quota Center), told apart by ``Version``.
* ``/latest/...``              metadata of the instance whose private IP is the
                               caller's source address (for namespace test beds).
* ``/meta/<instance-id>/latest/...``  metadata of one named instance.
* ``/_emulator/...``           admin API (topology, faults, counters, state).

Metadata hardened mode: ``PUT .../latest/api/token`` with the header
``X-aliyun-ecs-metadata-token-ttl-seconds`` (1..21600) returns a token; a
request that sends ``X-aliyun-ecs-metadata-token`` must send a live one (else
401), and requests without a token are answered as in normal mode.

The gateway checks, in order: injected faults, the action, the access key
(and STS token), the timestamp, the signature (1.0 or V3, see ``gateway``), the
nonce; then runs the action under the state lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

# Importing the product modules (ecs_api, quotas_api, slb_api, vpc_api) registers their actions.
from flannel_alivpc.emulator import admin, ecs_api, quotas_api, slb_api, vpc_api  # noqa: F401
from flannel_alivpc.emulator import metadata as metadata_service
from flannel_alivpc.emulator.errors import INTERNAL_ERROR, ApiError, missing_parameter
from flannel_alivpc.emulator.faults import DropConnection, FaultInjector
from flannel_alivpc.emulator.gateway import ApiRequest, Authenticator
from flannel_alivpc.emulator.protocol import (
    ACTIONS,
    ECS_VERSION,
    EXTENSION_TYPES,
    MUTATING,
    QUOTAS_VERSION,
    SLB_VERSION,
    VPC_VERSION,
    Call,
    Params,
)
from flannel_alivpc.emulator.state import CloudState, Instance, Settings

log = logging.getLogger(__name__)
_QUERY_IN_LOG = re.compile(r"\?\S*")

METADATA_TTL_HEADER = "X-aliyun-ecs-metadata-token-ttl-seconds"
METADATA_TOKEN_HEADER = "X-aliyun-ecs-metadata-token"
PRODUCT_HOSTS = {VPC_VERSION: "vpc.aliyuncs.com", ECS_VERSION: "ecs.aliyuncs.com", SLB_VERSION: "slb.aliyuncs.com",
                 QUOTAS_VERSION: "quotas.aliyuncs.com"}
_POLL_INTERVAL = 0.02


@dataclass
class Topology:
    """What ``bootstrap`` created."""

    vpc_id: str
    vrouter_id: str
    route_table_id: str
    vswitch_id: str
    instance_ids: list[str] = field(default_factory=list)


class QuietHTTPServer(ThreadingHTTPServer):
    """Clients that hang up mid-request (timeouts, injected drops) are routine here: log, don't print."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended abruptly", client_address, exc_info=True)


class Emulator:
    """One emulated cloud served over HTTP on loopback."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        settings: Settings | None = None,
        access_key_id: str = "emulator-ak",
        access_key_secret: str = "emulator-secret",
        state_file: str | None = None,
    ) -> None:
        self.state = CloudState(settings)
        self.faults = FaultInjector()
        self.access_key_id = access_key_id
        self.access_key_secret = access_key_secret
        self._token_lock = threading.Lock()
        self._metadata_tokens: dict[str, float] = {}
        if state_file:
            self.state.state_file = state_file
            try:
                with open(state_file) as handle:
                    self.state.load_json(json.load(handle), EXTENSION_TYPES)
            except FileNotFoundError:
                pass
            if settings is not None:
                # Settings given by the caller (the command-line flags) win over saved ones.
                self.state.settings = settings
        self.state.add_access_key(access_key_id, access_key_secret)
        self.authenticator = Authenticator(self.state)
        self._server = QuietHTTPServer((host, port), _handler_class(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        self._listeners: list[tuple[ThreadingHTTPServer, threading.Thread]] = []

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def endpoint(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    def start(self) -> Emulator:
        self._thread = threading.Thread(target=self.serve_forever, name="emulator", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        # A short poll interval keeps stop() quick (the default would make it take 0.5 s).
        self._server.serve_forever(poll_interval=_POLL_INTERVAL)

    def stop(self) -> None:
        for server, _ in self._listeners:
            server.shutdown()
            server.server_close()
        self._listeners.clear()
        self._server.shutdown()
        self._server.server_close()
        self.state.save()

    def add_listener(self, sock: socket.socket) -> tuple[str, int]:
        """Serve everything also on ``sock``, a bound TCP socket; returns its address.

        The socket may come from another network namespace (the data-plane test
        bed makes one inside its router namespace): callers there reach the same
        emulator, and metadata requests are answered by their source address.
        """
        server = QuietHTTPServer(sock.getsockname()[:2], _handler_class(self), bind_and_activate=False)
        server.socket.close()
        server.socket = sock
        server.server_address = sock.getsockname()[:2]
        server.server_activate()
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": _POLL_INTERVAL},
                                  name="emulator-listener", daemon=True)
        thread.start()
        self._listeners.append((server, thread))
        host, port = server.server_address[:2]
        return str(host), int(port)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def bootstrap(self, *, instances: int = 0, vpc_cidr: str = "192.168.0.0/16",
                  vswitch_cidr: str = "192.168.0.0/20") -> Topology:
        """One VPC with one vRouter, route table and vSwitch, and ``instances`` running instances."""
        with self.state.lock:
            vpc = self.state.create_vpc(cidr=vpc_cidr, name="k8s")
            table = self.state.system_table(vpc.vpc_id)
            vsw = self.state.create_vswitch(vpc_id=vpc.vpc_id, cidr=vswitch_cidr)
            topo = Topology(vpc.vpc_id, vpc.vrouter_id, table.table_id, vsw.vswitch_id)
            for n in range(instances):
                inst = self.state.create_instance(hostname=f"node-{n + 1}", vswitch_id=vsw.vswitch_id)
                topo.instance_ids.append(inst.instance_id)
        self.state.save()
        return topo

    # -- the API gateway ------------------------------------------------------

    def handle_api(self, request: ApiRequest) -> tuple[int, dict[str, Any]]:
        """Run one RPC call; returns the HTTP status and the JSON body."""
        request_id = str(uuid.uuid4()).upper()
        action, version = request.action, request.version
        host = PRODUCT_HOSTS.get(version, "aliyuncs.com")
        try:
            latency = self.faults.before(action or "?")
            if latency:
                time.sleep(latency)
            # A V3 request names its action and version in headers.
            if not action:
                raise missing_parameter("x-acs-action" if request.signed_v3 else "Action")
            if not version:
                raise missing_parameter("x-acs-version" if request.signed_v3 else "Version")
            handler = ACTIONS.get((version, action))
            if handler is None:
                raise ApiError(404, "InvalidAction.NotFound",
                               "Specified api is not found, please check your url and method.")
            self.authenticator.check(request)
            params = request.params
            region = params.get("RegionId") or self.state.settings.region
            with self.state.locked() as now:
                body = handler(Call(self.state, Params(params, region), now, action, version))
            if action in MUTATING:
                self.state.save()
        except ApiError as error:
            return self._error_answer(action, host, request_id, error)
        except DropConnection:
            raise
        except Exception:
            # A bug in the emulator must not look like a network failure to the client.
            log.exception("emulator failure in %s", action)
            return self._error_answer(action, host, request_id, ApiError(500, *INTERNAL_ERROR))
        self.faults.count(action, "Success")
        return 200, {"RequestId": request_id, **body}

    def _error_answer(self, action: str, host: str, request_id: str, error: ApiError) -> tuple[int, dict[str, Any]]:
        self.faults.count(action or "?", error.code)
        return error.status, {
            "RequestId": request_id, "HostId": host, "Code": error.code, "Message": error.message,
            "Recommend": f"https://api.aliyun.com/troubleshoot?q={error.code}&product="
                         f"{host.split('.')[0].capitalize()}&requestId={request_id}",
        }

    # -- metadata --------------------------------------------------------------

    def issue_metadata_token(self, ttl: int) -> str:
        """A hardened-mode metadata token valid for ``ttl`` seconds."""
        token = uuid.uuid4().hex
        with self._token_lock:
            now = self.state.clock()
            self._metadata_tokens = {t: exp for t, exp in self._metadata_tokens.items() if exp > now}
            self._metadata_tokens[token] = now + ttl
        return token

    def metadata_token_valid(self, token: str) -> bool:
        with self._token_lock:
            return self._metadata_tokens.get(token, 0.0) > self.state.clock()

    def handle_metadata(self, instance: Instance | None, path: str) -> tuple[int, str, str]:
        if instance is None:
            return 404, "text/plain", "no emulated instance has this caller's source address\n"
        with self.state.locked():
            return metadata_service.answer(self.state, instance, path)


def _handler_class(emulator: Emulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "flannel-alivpc-emulator"
        # Headers and body go out in two writes; without TCP_NODELAY every keep-alive
        # answer waits for the client's delayed ACK (about 40 ms on Linux).
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _send(self, status: int, content_type: str, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _send_json(self, status: int, body: Any) -> None:
            self._send(status, "application/json;charset=utf-8", json.dumps(body).encode())

        def _dispatch(self, method: str) -> None:
            # Proxied requests use the absolute form "POST http://host/?..."; take the path part.
            target = urlsplit(self.path)
            path = target.path or "/"
            body = self._body()
            if path.startswith("/_emulator/") or path == "/_emulator":
                status, answer = admin.handle(emulator, method, path, body)
                self._send_json(status, answer)
                return
            if path.startswith(("/latest/", "/meta/")) or path == "/latest":
                self._metadata(method, path)
                return
            if path != "/":
                self._send_json(404, {"Code": "InvalidAction.NotFound", "Message": f"no such path {path}"})
                return
            headers: dict[str, list[str]] = {}
            for name, value in self.headers.items():
                headers.setdefault(name.lower(), []).append(value)
            request = ApiRequest(method, path, parse_qsl(target.query, keep_blank_values=True), headers, body)
            try:
                status, answer = emulator.handle_api(request)
            except DropConnection:
                emulator.faults.count(request.action or "?", "Dropped")
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            self._send_json(status, answer)

        def _metadata(self, method: str, path: str) -> None:
            if path.startswith("/meta/"):
                _, _, instance_id, rest = path.split("/", 3) if path.count("/") >= 3 else ("", "", "", "")
                instance = emulator.state.instances.get(instance_id)
                path = "/" + rest
            else:
                instance = emulator.state.instance_by_ip(self.client_address[0])
            if not path.startswith("/latest/") and path != "/latest":
                self._send(404, "text/plain", b"not found\n")
                return
            sub = path[len("/latest/"):]
            if sub == "api/token":
                # Hardened mode: hand out a token; plain requests keep working too.
                if method != "PUT" or self.headers.get("X-Forwarded-For"):
                    self._send(403, "text/plain", b"forbidden\n")
                    return
                ttl = self.headers.get(METADATA_TTL_HEADER, "")
                if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                    self._send(400, "text/plain", f"{METADATA_TTL_HEADER} must be 1..21600\n".encode())
                    return
                self._send(200, "text/plain", emulator.issue_metadata_token(int(ttl)).encode())
                return
            token = self.headers.get(METADATA_TOKEN_HEADER)
            if token is not None and not emulator.metadata_token_valid(token):
                self._send(401, "text/plain", b"invalid or expired metadata token\n")
                return
            status, content_type, text = emulator.handle_metadata(instance, sub)
            self._send(status, content_type, text.encode())

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_PUT(self) -> None:
            self._dispatch("PUT")

        def do_DELETE(self) -> None:
            self._dispatch("DELETE")

        def do_PATCH(self) -> None:
            self._dispatch("PATCH")

    return Handler

