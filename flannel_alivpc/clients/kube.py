"""The one door to the Kubernetes API: typed calls over the official ``kubernetes`` client.

This is the only module that imports ``kubernetes`` (an import-linter contract
says so). Callers get the ``core.kube`` values and errors:

* answers are read as the JSON the server sent (``_preload_content=False``) and
  parsed by ``core.kube``, so list answers and watch events share one parser
  and nothing depends on the client's generated models;
* ``ApiException`` 404/409/410 become ``KubeNotFound``/``KubeConflict``/
  ``KubeGone``; 429, 5xx and network failures ``KubeUnavailable``; the rest
  ``KubeError``. Messages carry the server's ``Status`` message, never the
  request headers (which hold the bearer token);
* writes that must not race use the object's resourceVersion: merge patches
  that carry it, and PUT for Leases (a 409 means someone else won).

Each ``KubeClient`` has its own ``ApiClient`` and configuration, so two
controllers in one process (the leader election tests) do not share a token
or a connection pool.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from flannel_alivpc.core.errors import ConfigError
from flannel_alivpc.core.kube import (
    SERVICE_NAME_LABEL,
    EndpointSlice,
    KubeConflict,
    KubeError,
    KubeGone,
    KubeNotFound,
    KubeUnavailable,
    Lease,
    Node,
    Service,
    WatchEvent,
    lease_body,
    parse_endpoint_slice,
    parse_lease,
    parse_node,
    parse_service,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
# The client's config loaders and watch helper carry no annotations.
_load_kube_config: Any = config.load_kube_config
_load_incluster_config: Any = config.load_incluster_config
_Watch: Any = watch.Watch
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


def _status_message(error: ApiException) -> str:
    try:
        body = json.loads(error.body or "")
        if isinstance(body, dict) and body.get("message"):
            return str(body["message"])
    except (TypeError, ValueError):
        pass
    return str(error.reason or "")


def _translate(error: Exception, what: str) -> KubeError:
    if isinstance(error, ApiException):
        status = int(error.status or 0)
        message = f"{what}: {status} {_status_message(error)}"
        reason = str(error.reason or "")
        if status == 404:
            return KubeNotFound(message, status=status, reason=reason)
        if status == 409:
            return KubeConflict(message, status=status, reason=reason)
        if status == 410:
            return KubeGone(message, status=status, reason=reason)
        if status == 429 or status >= 500 or status == 0:
            return KubeUnavailable(message, status=status, reason=reason)
        return KubeError(message, status=status, reason=reason)
    return KubeUnavailable(f"{what}: cannot reach the API server: {type(error).__name__}: {error}")


class KubeClient:
    """Services, Nodes, EndpointSlices, Events and Leases, typed."""

    def __init__(self, api_client: Any, *, request_timeout: float = 15.0) -> None:
        self._api = api_client
        self._core = client.CoreV1Api(api_client)
        self._coordination = client.CoordinationV1Api(api_client)
        self._discovery = client.DiscoveryV1Api(api_client)
        self.request_timeout = request_timeout
        self._watches: set[Any] = set()
        self._lock = threading.Lock()

    @classmethod
    def connect(cls, kubeconfig: str | None = None, *, context: str | None = None, host: str | None = None,
                request_timeout: float = 15.0) -> KubeClient:
        """From a kubeconfig file, or (``kubeconfig=None``) the in-cluster service account.

        ``host`` (flanneld's ``--kube-api-url``) replaces the server address of either.
        """
        configuration = client.Configuration()
        try:
            if kubeconfig:
                _load_kube_config(config_file=kubeconfig, context=context,
                                        client_configuration=configuration, persist_config=False)
            else:
                _load_incluster_config(client_configuration=configuration)
        except config.ConfigException as error:
            where = kubeconfig or "the in-cluster service account (KUBERNETES_SERVICE_HOST)"
            raise ConfigError(f"cannot load the Kubernetes configuration from {where}: {error}; "
                              f"pass --kubeconfig outside a cluster") from None
        except OSError as error:
            raise ConfigError(f"cannot read the kubeconfig {kubeconfig}: {error.strerror}") from None
        if host:
            configuration.host = host.rstrip("/")
        return cls(client.ApiClient(configuration), request_timeout=request_timeout)

    def __repr__(self) -> str:
        return f"KubeClient(host={self._api.configuration.host!r})"

    def close(self) -> None:
        self.stop_watches()
        self._api.close()

    # -- plumbing --------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            response = fn(*args, _preload_content=False, _request_timeout=self.request_timeout, **kwargs)
            data = json.loads(response.data or b"{}")
        except (ApiException, OSError, ValueError) as error:
            raise _translate(error, what) from None
        except Exception as error:  # urllib3 errors (MaxRetryError, ProtocolError, ...)
            raise _translate(error, what) from None
        return data if isinstance(data, dict) else {}

    def _list(self, what: str, fn: Callable[..., Any], parse: Callable[[Mapping[str, Any]], T],
              **kwargs: Any) -> tuple[list[T], str]:
        data = self._call(what, fn, **kwargs)
        items = [parse(item) for item in data.get("items") or () if isinstance(item, dict)]
        return items, str((data.get("metadata") or {}).get("resourceVersion") or "")

    def _watch(self, what: str, fn: Callable[..., Any], parse: Callable[[Mapping[str, Any]], T],
               resource_version: str, timeout_seconds: int, **kwargs: Any) -> Iterator[WatchEvent[T]]:
        """Events from ``resource_version`` on, for at most ``timeout_seconds``.

        Raises ``KubeGone`` when the server no longer has that history.
        """
        stream = _Watch()
        with self._lock:
            self._watches.add(stream)
        try:
            events = stream.stream(fn, resource_version=resource_version, timeout_seconds=int(timeout_seconds),
                                   allow_watch_bookmarks=False, deserialize=False,
                                   _request_timeout=(self.request_timeout, timeout_seconds + self.request_timeout),
                                   **kwargs)
            for event in events:
                kind = event.get("type")
                raw = event.get("object")
                if kind == "ERROR":
                    status = int((raw or {}).get("code") or 0)
                    message = f"{what}: {(raw or {}).get('message', 'watch error')}"
                    if status == 410:
                        raise KubeGone(message, status=410, reason="Expired")
                    raise KubeError(message, status=status)
                if kind in ("ADDED", "MODIFIED", "DELETED") and isinstance(raw, dict):
                    yield WatchEvent(kind, parse(raw))
        except KubeError:
            raise
        except ApiException as error:
            raise _translate(error, what) from None
        except Exception as error:
            raise _translate(error, what) from None
        finally:
            with self._lock:
                self._watches.discard(stream)

    def stop_watches(self) -> None:
        """End every open watch stream at once (used on shutdown)."""
        with self._lock:
            streams = list(self._watches)
        for stream in streams:
            stream.stop()

    # -- Services ---------------------------------------------------------------------------

    def list_services(self) -> tuple[list[Service], str]:
        return self._list("list services", self._core.list_service_for_all_namespaces, parse_service)

    def watch_services(self, resource_version: str, timeout_seconds: int) -> Iterator[WatchEvent[Service]]:
        return self._watch("watch services", self._core.list_service_for_all_namespaces, parse_service,
                           resource_version, timeout_seconds)

    def get_service(self, namespace: str, name: str) -> Service:
        return parse_service(self._call(f"get service {namespace}/{name}", self._core.read_namespaced_service,
                                        name, namespace))

    def set_service_finalizers(self, service: Service, finalizers: Sequence[str]) -> Service:
        """Replace the finalizer list, if the Service is still at ``service``'s resourceVersion."""
        body = {"metadata": {"resourceVersion": service.meta.resource_version, "finalizers": list(finalizers)}}
        return parse_service(self._call(
            f"patch finalizers of service {service.key}", self._core.patch_namespaced_service,
            service.meta.name, service.meta.namespace, body, _content_type=MERGE_PATCH))

    def set_service_ingress(self, service: Service, ips: Sequence[str]) -> Service:
        """Set ``status.loadBalancer.ingress`` to these IPs (empty: clear it)."""
        ingress: list[dict[str, str]] | None = [{"ip": ip} for ip in ips] or None
        body: dict[str, Any] = {"status": {"loadBalancer": {"ingress": ingress}}}
        return parse_service(self._call(
            f"patch status of service {service.key}", self._core.patch_namespaced_service_status,
            service.meta.name, service.meta.namespace, body, _content_type=MERGE_PATCH))

    # -- Nodes ------------------------------------------------------------------------------

    def list_nodes(self) -> tuple[list[Node], str]:
        return self._list("list nodes", self._core.list_node, parse_node)

    def watch_nodes(self, resource_version: str, timeout_seconds: int) -> Iterator[WatchEvent[Node]]:
        return self._watch("watch nodes", self._core.list_node, parse_node, resource_version, timeout_seconds)

    def get_node(self, name: str) -> Node:
        return parse_node(self._call(f"get node {name}", self._core.read_node, name))

    def patch_node_status(self, name: str, patch: Mapping[str, Any]) -> Node:
        """A strategic merge patch through ``nodes/status``.

        As flanneld does, annotations go through the status subresource too: the
        API server keeps metadata changes there, and ``nodes/status`` is all the
        DaemonSet's RBAC grants (no ``patch nodes``). Conditions merge by type.
        """
        return parse_node(self._call(f"patch status of node {name}", self._core.patch_node_status, name,
                                     dict(patch), _content_type=STRATEGIC_MERGE_PATCH))

    # -- EndpointSlices (discovery.k8s.io/v1) ---------------------------------------------------

    def list_endpoint_slices(self) -> tuple[list[EndpointSlice], str]:
        """Every EndpointSlice that belongs to a Service (labelled ``kubernetes.io/service-name``)."""
        return self._list("list endpointslices", self._discovery.list_endpoint_slice_for_all_namespaces,
                          parse_endpoint_slice, label_selector=SERVICE_NAME_LABEL)

    def watch_endpoint_slices(self, resource_version: str,
                              timeout_seconds: int) -> Iterator[WatchEvent[EndpointSlice]]:
        return self._watch("watch endpointslices", self._discovery.list_endpoint_slice_for_all_namespaces,
                           parse_endpoint_slice, resource_version, timeout_seconds,
                           label_selector=SERVICE_NAME_LABEL)

    # -- Events -----------------------------------------------------------------------------

    def create_event(self, *, namespace: str, involved: Service | Node, event_type: str, reason: str,
                     message: str, component: str, timestamp: str) -> str:
        """A core/v1 Event about ``involved``; returns its name.

        Events about a Node (cluster-scoped) go to ``namespace`` (``default``, as the kubelet's do).
        """
        kind = "Node" if isinstance(involved, Node) else "Service"
        body = {
            "metadata": {"generateName": f"{involved.meta.name}.", "namespace": namespace},
            "involvedObject": {"kind": kind, "apiVersion": "v1", "namespace": involved.meta.namespace,
                               "name": involved.meta.name, "uid": involved.meta.uid,
                               "resourceVersion": involved.meta.resource_version},
            "reason": reason, "message": message[:1024], "type": event_type,
            "source": {"component": component}, "reportingComponent": component,
            "firstTimestamp": timestamp, "lastTimestamp": timestamp, "count": 1,
        }
        data = self._call(f"create event for {kind} {involved.meta.name}", self._core.create_namespaced_event,
                          namespace, body)
        return str((data.get("metadata") or {}).get("name") or "")

    def bump_event(self, *, namespace: str, name: str, count: int, timestamp: str) -> None:
        """Record one more occurrence of an existing Event."""
        self._call(f"patch event {namespace}/{name}", self._core.patch_namespaced_event, name, namespace,
                   {"count": count, "lastTimestamp": timestamp}, _content_type=MERGE_PATCH)

    # -- Leases -----------------------------------------------------------------------------

    def get_lease(self, namespace: str, name: str) -> Lease | None:
        try:
            return parse_lease(self._call(f"get lease {namespace}/{name}",
                                          self._coordination.read_namespaced_lease, name, namespace))
        except KubeNotFound:
            return None

    def create_lease(self, lease: Lease) -> Lease:
        """Raises ``KubeConflict`` when another candidate created it first."""
        try:
            data = self._call(f"create lease {lease.namespace}/{lease.name}",
                              self._coordination.create_namespaced_lease, lease.namespace, lease_body(lease))
        except KubeError as error:
            if error.status == 409:
                raise KubeConflict(str(error), status=409, reason=error.reason) from None
            raise
        return parse_lease(data)

    def update_lease(self, lease: Lease) -> Lease:
        """Replace the Lease if it is still at ``lease.resource_version`` (else ``KubeConflict``)."""
        return parse_lease(self._call(f"update lease {lease.namespace}/{lease.name}",
                                      self._coordination.replace_namespaced_lease, lease.name, lease.namespace,
                                      lease_body(lease)))
