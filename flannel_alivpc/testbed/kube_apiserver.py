"""A stand-in for the kube-apiserver on loopback: the subset the SLB controller and its tests use.

No kube-apiserver can be installed on the machines this project is built on,
so tests run the official ``kubernetes`` Python client against this server.
It speaks the same HTTP/JSON protocol, with the same rules for the parts it
implements:

* resources: core/v1 Services (status subresource), Nodes (status
  subresource), Namespaces, Events; events.k8s.io/v1 Events;
  coordination.k8s.io/v1 Leases; discovery.k8s.io/v1 EndpointSlices (stored as
  written: no controller derives them from Pods, tests write them);
* one cluster-wide ``resourceVersion`` counter; every write bumps it;
* list (label selectors ``k=v``, ``k!=v``, ``k``, ``!k``; field selectors
  ``metadata.name``/``metadata.namespace``) returns the list's resourceVersion;
* watch (``?watch=true``) streams JSON lines over chunked HTTP: from a
  resourceVersion it replays the retained history, then live changes; without
  one (or ``0``) it starts with synthetic ``ADDED`` events. A resourceVersion
  older than the retained history (see ``compact``) gets an ``ERROR`` event
  carrying a 410 Gone ``Status``, as the real server sends it. ``timeoutSeconds``
  ends the stream. No bookmarks are sent;
* create (``generateName`` too), get, update (PUT) and patch with optimistic
  concurrency: a stale ``metadata.resourceVersion`` is 409 Conflict;
* patch types: JSON patch (RFC 6902, ``test`` included), merge patch (RFC 7386)
  and strategic merge patch for the fields these resources have (finalizers
  merge as a set, ``$deleteFromPrimitiveList``, ``$patch: replace|delete``,
  ports by ``port``, conditions by ``type``, taints by ``key``, addresses by
  ``type``); apply patches are refused with 415 as a server without them would;
* status subresource: writes to the object ignore ``status``, writes to
  ``/status`` change only ``status`` (and a Node's labels and annotations); a created Service has its status cleared;
* finalizers and ``deletionTimestamp``: DELETE of an object with finalizers
  only sets ``deletionTimestamp``; the object goes when the last finalizer is
  removed; no finalizer may be added once deletion started (422);
* Service defaults: ``type: ClusterIP``, port protocol ``TCP``, targetPort,
  a cluster IP, node ports (30000-32767) for NodePort and LoadBalancer;
* errors are ``Status`` objects with the real reasons and codes.

RBAC: ``permissions`` maps a user to ``PolicyRule``s (rendered from the
manifests' Roles); a request they do not allow is 403 Forbidden with the real
message. Users without an entry are not checked.

Test hooks: ``requests`` (every request with its bearer-token user),
``inject_failure`` (the next N matching requests fail with a status; ``clear_failures``),
``compact`` (forget the history so old watches get 410), ``end_watches`` (close
every open watch stream), ``write_kubeconfig``.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import re
import string
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from flannel_alivpc.emulator.server import QuietHTTPServer

log = logging.getLogger(__name__)

Obj = dict[str, Any]
HISTORY = 50_000
NODE_PORT_RANGE = (30000, 32767)


@dataclass(frozen=True)
class Resource:
    group_version: str
    plural: str
    kind: str
    namespaced: bool
    status_subresource: bool

    @property
    def prefix(self) -> str:
        return "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"


RESOURCES = (
    Resource("v1", "services", "Service", True, True),
    Resource("v1", "nodes", "Node", False, True),
    Resource("v1", "namespaces", "Namespace", False, True),
    Resource("v1", "events", "Event", True, False),
    Resource("events.k8s.io/v1", "events", "Event", True, False),
    Resource("coordination.k8s.io/v1", "leases", "Lease", True, False),
    Resource("discovery.k8s.io/v1", "endpointslices", "EndpointSlice", True, False),
)


class ApiError(Exception):
    """Answered as a ``Status`` object."""

    def __init__(self, code: int, reason: str, message: str, *, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}

    def status(self) -> Obj:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "details": self.details, "code": self.code}


def _not_found(res: Resource, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{res.plural} "{name}" not found',
                    details={"name": name, "kind": res.plural})


def _conflict(res: Resource, name: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.plural} "{name}": the object has '
                    "been modified; please apply your changes to the latest version and try again",
                    details={"name": name, "kind": res.plural})


def _invalid(res: Resource, name: str, message: str) -> ApiError:
    return ApiError(422, "Invalid", f'{res.kind} "{name}" is invalid: {message}',
                    details={"name": name, "kind": res.kind})


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# -- patches --------------------------------------------------------------------------------

def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError(f"bad JSON pointer {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _walk(doc: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(doc, dict):
            if part not in doc:
                raise ValueError(f"path /{'/'.join(parts)} does not exist")
            doc = doc[part]
        elif isinstance(doc, list):
            if not part.isdigit() or int(part) >= len(doc):
                raise ValueError(f"index {part} out of range")
            doc = doc[int(part)]
        else:
            raise ValueError(f"cannot walk into {type(doc).__name__}")
    return doc


def _json_patch_op(doc: Any, op: Obj) -> Any:
    kind = op.get("op")
    parts = _pointer(str(op.get("path", "")))
    if kind == "test":
        if _walk(doc, parts) != op.get("value"):
            raise ValueError(f"test failed at {op.get('path')}")
        return doc
    if kind in ("move", "copy"):
        source = _pointer(str(op.get("from", "")))
        value = copy.deepcopy(_walk(doc, source))
        if kind == "move":
            doc = _json_patch_op(doc, {"op": "remove", "path": op["from"]})
        return _json_patch_op(doc, {"op": "add", "path": op["path"], "value": value})
    if not parts:
        if kind in ("add", "replace"):
            return copy.deepcopy(op.get("value"))
        raise ValueError("cannot remove the whole document")
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    if kind == "add":
        if isinstance(parent, list):
            if last == "-":
                parent.append(copy.deepcopy(op.get("value")))
            elif last.isdigit() and int(last) <= len(parent):
                parent.insert(int(last), copy.deepcopy(op.get("value")))
            else:
                raise ValueError(f"index {last} out of range")
        elif isinstance(parent, dict):
            parent[last] = copy.deepcopy(op.get("value"))
        else:
            raise ValueError("add into a scalar")
    elif kind in ("remove", "replace"):
        _walk(parent, [last])  # must exist
        if kind == "remove":
            if isinstance(parent, list):
                del parent[int(last)]
            else:
                del parent[last]
        elif isinstance(parent, list):
            parent[int(last)] = copy.deepcopy(op.get("value"))
        else:
            parent[last] = copy.deepcopy(op.get("value"))
    else:
        raise ValueError(f"unknown op {kind!r}")
    return doc


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902."""
    if not isinstance(ops, list):
        raise ValueError("a JSON patch is a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict):
            raise ValueError("a JSON patch operation is an object")
        doc = _json_patch_op(doc, op)
    return doc


# Lists merged by key in a strategic merge patch; None means a list of scalars merged as a set.
STRATEGIC_KEYS: dict[str, str | None] = {
    "finalizers": None,
    "ports": "port",
    "conditions": "type",
    "taints": "key",
    "addresses": "type",
    "ownerReferences": "uid",
}


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = dict(target) if isinstance(target, dict) else {}
    deletions = {k.split("/", 1)[1]: v for k, v in patch.items() if k.startswith("$deleteFromPrimitiveList/")}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and key in STRATEGIC_KEYS and isinstance(result.get(key), list):
            result[key] = _merge_list(result[key], value, STRATEGIC_KEYS[key])
        elif isinstance(value, list):
            result[key] = [strategic_merge_patch({}, v) if isinstance(v, dict) else v for v in value
                           if not (isinstance(v, dict) and v.get("$patch") == "delete")]
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    for key, gone in deletions.items():
        if isinstance(result.get(key), list) and isinstance(gone, list):
            result[key] = [v for v in result[key] if v not in gone]
    return result


def _merge_list(current: list[Any], patch: list[Any], key: str | None) -> list[Any]:
    if key is None:
        return list(current) + [v for v in patch if v not in current]
    merged = [copy.deepcopy(item) for item in current]
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise ValueError(f"list items need the merge key {key!r}")
        index = next((i for i, old in enumerate(merged) if isinstance(old, dict) and old.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del merged[index]
        elif index is None:
            merged.append(strategic_merge_patch({}, item))
        else:
            merged[index] = strategic_merge_patch(merged[index], item)
    return merged


# -- selectors --------------------------------------------------------------------------------

def _label_matcher(selector: str) -> Callable[[dict[str, str]], bool]:
    """Equality-based label selectors: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``."""
    terms: list[tuple[str, str, str]] = []  # (operator, key, value)
    for term in (t.strip() for t in selector.split(",") if t.strip()):
        if "!=" in term:
            key, value = (part.strip() for part in term.split("!=", 1))
            terms.append(("!=", key, value))
        elif "=" in term:
            key, value = (part.strip() for part in re.split("==?", term, maxsplit=1))
            terms.append(("=", key, value))
        elif term.startswith("!"):
            terms.append(("!", term[1:], ""))
        else:
            terms.append(("exists", term, ""))

    def matches(labels: dict[str, str]) -> bool:
        for op, key, value in terms:
            if (op == "!=" and labels.get(key) == value) or (op == "=" and labels.get(key) != value) \
                    or (op == "!" and key in labels) or (op == "exists" and key not in labels):
                return False
        return True
    return matches


def _field_matcher(selector: str) -> Callable[[Obj], bool]:
    terms: list[tuple[str, str, bool]] = []  # (metadata field, value, negated)
    for term in (t.strip() for t in selector.split(",") if t.strip()):
        negate = "!=" in term
        name, value = (part.strip() for part in re.split("!=|==?", term, maxsplit=1))
        if name not in ("metadata.name", "metadata.namespace"):
            raise ApiError(400, "BadRequest", f'"{name}" is not a known field selector')
        terms.append((name.split(".", 1)[1], value, negate))

    def matches(obj: Obj) -> bool:
        return all((obj["metadata"].get(attr, "") == value) != negate for attr, value, negate in terms)
    return matches


# -- the store --------------------------------------------------------------------------------

@dataclass
class RequestRecord:
    method: str
    path: str
    query: str
    user: str
    status: int
    content_type: str = ""


@dataclass
class _Failure:
    method: str
    pattern: re.Pattern[str]
    status: int
    count: int


@dataclass
class _Event:
    rv: int
    resource: Resource
    namespace: str
    type: str
    obj: Obj


@dataclass
class _Store:
    objects: dict[tuple[str, str], dict[tuple[str, str], Obj]] = field(default_factory=dict)
    history: deque[_Event] = field(default_factory=lambda: deque(maxlen=HISTORY))
    rv: int = 1000
    compacted_rv: int = 1000


class KubeApiServer:
    """The stand-in server; ``start()`` serves on a free loopback port."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, tokens: dict[str, str] | None = None,
                 namespaces: tuple[str, ...] = ("default", "kube-system"),
                 permissions: dict[str, list[PolicyRule]] | None = None) -> None:
        self.tokens = dict(tokens or {})
        """bearer token -> user name; empty: anonymous access allowed."""
        self.permissions = dict(permissions or {})
        """user -> what RBAC grants it; a user not listed may do everything (no RBAC for it)."""
        self._store = _Store()
        self._cond = threading.Condition()
        self._stopping = False
        self._watch_epoch = 0
        self._records: list[RequestRecord] = []
        self._failures: list[_Failure] = []
        self._rng = random.Random()
        self._cluster_ips = 10
        self._server = QuietHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        for name in namespaces:
            self.create(self.resource("v1", "namespaces"), "", {"metadata": {"name": name}})

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{int(port)}"

    def start(self) -> KubeApiServer:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="kube-apiserver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def write_kubeconfig(self, path: Path, *, token: str | None = None, namespace: str = "default") -> Path:
        """A kubeconfig file pointing at this server over plain HTTP."""
        user: Obj = {"token": token} if token else {}
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "standin",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "standin", "user": user}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "standin",
                                                         "namespace": namespace}}],
        }
        path.write_text(json.dumps(config))
        return path

    # -- test hooks -------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        with self._cond:
            return list(self._records)

    def inject_failure(self, method: str, path_pattern: str, *, status: int = 500, count: int = 1) -> None:
        """The next ``count`` requests whose method and path match fail with ``status``."""
        with self._cond:
            self._failures.append(_Failure(method.upper(), re.compile(path_pattern), status, count))

    def clear_failures(self) -> None:
        """Forget every failure injected and not yet used up."""
        with self._cond:
            self._failures.clear()

    def end_watches(self) -> None:
        """Close every open watch stream, as an API server restart or a dropped connection does."""
        with self._cond:
            self._watch_epoch += 1
            self._cond.notify_all()

    def compact(self) -> int:
        """Forget all history: a watch from any earlier resourceVersion gets 410 Gone."""
        with self._cond:
            self._store.history.clear()
            self._store.compacted_rv = self._store.rv
            return self._store.rv

    def resource(self, group_version: str, plural: str) -> Resource:
        for res in RESOURCES:
            if res.group_version == group_version and res.plural == plural:
                return res
        raise ApiError(404, "NotFound", f"the server could not find the requested resource ({plural})")

    def objects(self, group_version: str, plural: str) -> list[Obj]:
        """Copies of every stored object of a kind (for assertions)."""
        res = self.resource(group_version, plural)
        with self._cond:
            return [copy.deepcopy(o) for o in self._bucket(res).values()]

    def get_object(self, group_version: str, plural: str, namespace: str, name: str) -> Obj | None:
        res = self.resource(group_version, plural)
        with self._cond:
            obj = self._bucket(res).get((namespace if res.namespaced else "", name))
            return copy.deepcopy(obj) if obj is not None else None

    # -- the store --------------------------------------------------------------------------

    def _bucket(self, res: Resource) -> dict[tuple[str, str], Obj]:
        return self._store.objects.setdefault((res.group_version, res.plural), {})

    def _record(self, res: Resource, namespace: str, kind: str, obj: Obj) -> None:
        """Store an event for ``obj`` (already holding its new resourceVersion); wake watchers."""
        self._store.history.append(_Event(int(obj["metadata"]["resourceVersion"]), res, namespace, kind,
                                          copy.deepcopy(obj)))
        if len(self._store.history) == self._store.history.maxlen:
            self._store.compacted_rv = self._store.history[0].rv - 1
        self._cond.notify_all()

    def _next_rv(self) -> str:
        self._store.rv += 1
        return str(self._store.rv)

    def _typed(self, res: Resource, obj: Obj) -> Obj:
        out = copy.deepcopy(obj)
        out["kind"] = res.kind
        out["apiVersion"] = res.group_version
        return out

    def _check_namespace(self, res: Resource, namespace: str) -> None:
        if res.namespaced and res.plural != "namespaces":
            ns_res = self.resource("v1", "namespaces")
            if ("", namespace) not in self._bucket(ns_res):
                raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found')

    def create(self, res: Resource, namespace: str, body: Obj) -> Obj:
        with self._cond:
            return self._create(res, namespace, body)

    def _create(self, res: Resource, namespace: str, body: Obj) -> Obj:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body must be a JSON object")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(self._rng.choices(string.ascii_lowercase + string.digits,
                                                                             k=5))
        name = meta.get("name") or ""
        if not name:
            raise _invalid(res, "", "metadata.name: Required value: name or generateName is required")
        if res.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise ApiError(400, "BadRequest", "the namespace of the object does not match the request")
            self._check_namespace(res, namespace)
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        bucket = self._bucket(res)
        key = (namespace if res.namespaced else "", name)
        if key in bucket:
            raise ApiError(409, "AlreadyExists", f'{res.plural} "{name}" already exists',
                           details={"name": name, "kind": res.plural})
        if meta.get("resourceVersion"):
            raise _invalid(res, name, "metadata.resourceVersion: Invalid value: must be empty on create")
        for drop in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(drop, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta["generation"] = 1
        obj.pop("kind", None)
        obj.pop("apiVersion", None)
        if res.kind == "Service":
            obj.pop("status", None)
            obj["status"] = {"loadBalancer": {}}
            self._service_defaults(obj, None)
        meta["resourceVersion"] = self._next_rv()
        bucket[key] = obj
        self._record(res, key[0], "ADDED", obj)
        return self._typed(res, obj)

    def _service_defaults(self, obj: Obj, old: Obj | None) -> None:
        spec = obj.setdefault("spec", {})
        name = obj["metadata"]["name"]
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if spec["type"] not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
            raise _invalid(self.resource("v1", "services"), name, f'spec.type: Unsupported value: "{spec["type"]}"')
        if old is not None and old.get("spec", {}).get("clusterIP"):
            spec["clusterIP"] = old["spec"]["clusterIP"]
            spec["clusterIPs"] = [spec["clusterIP"]]
        elif spec["type"] != "ExternalName" and not spec.get("clusterIP"):
            self._cluster_ips += 1
            spec["clusterIP"] = f"10.96.{self._cluster_ips // 250}.{self._cluster_ips % 250 + 1}"
            spec["clusterIPs"] = [spec["clusterIP"]]
        ports = spec.setdefault("ports", [])
        seen: set[tuple[int, str]] = set()
        used = {p.get("nodePort") for o in self._bucket(self.resource("v1", "services")).values()
                if o is not old for p in o.get("spec", {}).get("ports", [])}
        old_ports = {(p.get("port"), p.get("protocol", "TCP")): p for p in (old or {}).get("spec", {}).get("ports", [])}
        for port in ports:
            port.setdefault("protocol", "TCP")
            if not isinstance(port.get("port"), int) or not 1 <= port["port"] <= 65535:
                raise _invalid(self.resource("v1", "services"), name, "spec.ports.port: Invalid value")
            ident = (port["port"], port["protocol"])
            if ident in seen:
                raise _invalid(self.resource("v1", "services"), name, f"spec.ports: Duplicate value: {ident}")
            seen.add(ident)
            port.setdefault("targetPort", port["port"])
            if spec["type"] in ("NodePort", "LoadBalancer"):
                if not port.get("nodePort"):
                    previous = old_ports.get(ident, {}).get("nodePort")
                    if previous and previous not in used:
                        port["nodePort"] = previous
                    else:
                        free = [n for n in range(*NODE_PORT_RANGE) if n not in used]
                        port["nodePort"] = self._rng.choice(free)
                elif port["nodePort"] in used:
                    raise _invalid(self.resource("v1", "services"), name,
                                   f"spec.ports.nodePort: Invalid value: {port['nodePort']}: provided port is "
                                   "already allocated")
                used.add(port["nodePort"])
            else:
                port.pop("nodePort", None)
        if spec["type"] in ("NodePort", "LoadBalancer"):
            spec.setdefault("externalTrafficPolicy", "Cluster")

    def get(self, res: Resource, namespace: str, name: str) -> Obj:
        with self._cond:
            obj = self._bucket(res).get((namespace if res.namespaced else "", name))
            if obj is None:
                raise _not_found(res, name)
            return self._typed(res, obj)

    def list_objects(self, res: Resource, namespace: str | None, query: dict[str, str]) -> Obj:
        labels = _label_matcher(query.get("labelSelector", ""))
        fields = _field_matcher(query.get("fieldSelector", ""))
        with self._cond:
            items = [copy.deepcopy(o) for (ns, _), o in sorted(self._bucket(res).items())
                     if (namespace is None or ns == namespace)
                     and labels(o["metadata"].get("labels") or {}) and fields(o)]
            rv = str(self._store.rv)
        return {"kind": f"{res.kind}List", "apiVersion": res.group_version,
                "metadata": {"resourceVersion": rv}, "items": items}

    def write(self, res: Resource, namespace: str, name: str, *, subresource: str,
              change: Callable[[Obj], Obj]) -> Obj:
        """Update one object through ``change`` (which gets a copy and returns the new object)."""
        with self._cond:
            bucket = self._bucket(res)
            key = (namespace if res.namespaced else "", name)
            old = bucket.get(key)
            if old is None:
                raise _not_found(res, name)
            try:
                new = change(self._typed(res, old))
            except ValueError as error:
                raise _invalid(res, name, str(error)) from None
            if not isinstance(new, dict) or not isinstance(new.get("metadata"), dict):
                raise ApiError(400, "BadRequest", "the result is not an object with metadata")
            sent_rv = new["metadata"].get("resourceVersion")
            if sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
                raise _conflict(res, name)
            if new["metadata"].get("name", name) != name:
                raise ApiError(400, "BadRequest", "the name of the object does not match the request")
            return self._commit(res, key, old, new, subresource)

    def _commit(self, res: Resource, key: tuple[str, str], old: Obj, new: Obj, subresource: str) -> Obj:
        name = key[1]
        new = copy.deepcopy(new)
        new.pop("kind", None)
        new.pop("apiVersion", None)
        meta = new["metadata"]
        if res.status_subresource:
            if subresource == "status":
                # Only the status changes (metadata and spec stay as stored), except that a Node's
                # labels and annotations may change through nodes/status too, as on the real server:
                # flanneld's kube subnet manager publishes its annotations that way.
                merged = copy.deepcopy(old)
                merged["status"] = new.get("status", {})
                if res.kind == "Node":
                    for field_name in ("labels", "annotations"):
                        if field_name in meta:
                            merged["metadata"][field_name] = copy.deepcopy(meta[field_name])
                new, meta = merged, merged["metadata"]
            else:
                new["status"] = copy.deepcopy(old.get("status", {}))
        # Fields the server owns.
        for owned in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "namespace"):
            if owned in old["metadata"]:
                meta[owned] = old["metadata"][owned]
            else:
                meta.pop(owned, None)
        meta["name"] = name
        old_finalizers = old["metadata"].get("finalizers") or []
        finalizers = meta.get("finalizers") or []
        if not isinstance(finalizers, list) or not all(isinstance(f, str) for f in finalizers):
            raise _invalid(res, name, "metadata.finalizers: Invalid value")
        if "deletionTimestamp" in meta and any(f not in old_finalizers for f in finalizers):
            raise _invalid(res, name, "metadata.finalizers: Forbidden: no new finalizers can be added if the "
                           "object is being deleted")
        if not finalizers:
            meta.pop("finalizers", None)
        if res.kind == "Service" and subresource != "status":
            self._service_defaults(new, old)
        if res.kind != "Event" and new.get("spec") != old.get("spec"):
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        else:
            meta["generation"] = old["metadata"].get("generation", 1)
        if self._same(old, new):
            return self._typed(res, old)  # a no-op write does not bump the resourceVersion
        meta["resourceVersion"] = self._next_rv()
        bucket = self._bucket(res)
        if "deletionTimestamp" in meta and not finalizers:
            del bucket[key]
            self._record(res, key[0], "DELETED", new)
        else:
            bucket[key] = new
            self._record(res, key[0], "MODIFIED", new)
        return self._typed(res, new)

    @staticmethod
    def _same(old: Obj, new: Obj) -> bool:
        a = copy.deepcopy(old)
        b = copy.deepcopy(new)
        a["metadata"].pop("resourceVersion", None)
        b["metadata"].pop("resourceVersion", None)
        return a == b

    def delete(self, res: Resource, namespace: str, name: str, options: Obj) -> Obj:
        with self._cond:
            bucket = self._bucket(res)
            key = (namespace if res.namespaced else "", name)
            obj = bucket.get(key)
            if obj is None:
                raise _not_found(res, name)
            pre = options.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != obj["metadata"]["uid"]:
                raise _conflict(res, name)
            if pre.get("resourceVersion") and pre["resourceVersion"] != obj["metadata"]["resourceVersion"]:
                raise _conflict(res, name)
            if obj["metadata"].get("finalizers"):
                if "deletionTimestamp" not in obj["metadata"]:
                    new = copy.deepcopy(obj)
                    new["metadata"]["deletionTimestamp"] = _now()
                    new["metadata"]["deletionGracePeriodSeconds"] = 0
                    new["metadata"]["resourceVersion"] = self._next_rv()
                    bucket[key] = new
                    self._record(res, key[0], "MODIFIED", new)
                    obj = new
                return self._typed(res, obj)
            del bucket[key]
            gone = copy.deepcopy(obj)
            gone["metadata"]["resourceVersion"] = self._next_rv()
            self._record(res, key[0], "DELETED", gone)
            return self._typed(res, gone)

    # -- watch -------------------------------------------------------------------------------

    def watch(self, res: Resource, namespace: str | None, query: dict[str, str]) -> Iterator[Obj]:
        """Watch events as dicts; ends at ``timeoutSeconds`` or when the server stops.

        Bad parameters raise here, before the stream starts; the events come from the
        returned iterator.
        """
        labels = _label_matcher(query.get("labelSelector", ""))
        fields = _field_matcher(query.get("fieldSelector", ""))
        try:
            timeout = float(query.get("timeoutSeconds") or 1800)
        except ValueError:
            raise ApiError(400, "BadRequest", "invalid timeoutSeconds") from None
        rv_text = query.get("resourceVersion", "")

        def wanted(ns: str, obj: Obj) -> bool:
            return (namespace is None or ns == namespace) and labels(obj["metadata"].get("labels") or {}) \
                and fields(obj)

        with self._cond:
            if rv_text in ("", "0"):
                cursor = self._store.rv
                initial = [self._event("ADDED", res, o) for (ns, _), o in sorted(self._bucket(res).items())
                           if wanted(ns, o)]
            else:
                try:
                    cursor = int(rv_text)
                except ValueError:
                    raise ApiError(400, "BadRequest", f"invalid resource version {rv_text!r}") from None
                initial = []
                if cursor < self._store.compacted_rv:
                    initial.append({"type": "ERROR", "object": ApiError(
                        410, "Expired", f"too old resource version: {cursor} ({self._store.compacted_rv + 1})"
                    ).status()})
                    cursor = -1
        return self._follow(res, cursor, initial, time.monotonic() + timeout, wanted)

    def _follow(self, res: Resource, cursor: int, initial: list[Obj], deadline: float,
                wanted: Callable[[str, Obj], bool]) -> Iterator[Obj]:
        yield from initial
        epoch = self._watch_epoch
        while cursor >= 0:
            with self._cond:
                while True:
                    if self._stopping or self._watch_epoch != epoch:
                        return
                    if self._store.history and self._store.history[-1].rv > cursor:
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    self._cond.wait(timeout=min(left, 1.0))
                if cursor < self._store.compacted_rv:
                    expired = ApiError(410, "Expired", f"too old resource version: {cursor}").status()
                    events = [{"type": "ERROR", "object": expired}]
                    cursor = -1
                else:
                    fresh = [e for e in self._store.history if e.rv > cursor]
                    cursor = fresh[-1].rv
                    events = [self._event(e.type, res, e.obj) for e in fresh
                              if e.resource == res and wanted(e.namespace, e.obj)]
            yield from events

    def _event(self, kind: str, res: Resource, obj: Obj) -> Obj:
        return {"type": kind, "object": self._typed(res, obj)}

    # -- request plumbing ----------------------------------------------------------------------

    def authenticate(self, header: str | None) -> str:
        if not self.tokens:
            return "anonymous"
        if header and header.startswith("Bearer ") and header[7:] in self.tokens:
            return self.tokens[header[7:]]
        raise ApiError(401, "Unauthorized", "Unauthorized")

    def authorize(self, user: str, verb: str, res: Resource, namespace: str | None, name: str | None,
                  subresource: str) -> None:
        """RBAC as the real authorizer applies it to ``user``'s rules; 403 with the real wording otherwise."""
        rules = self.permissions.get(user)
        if rules is None:
            return
        resource = f"{res.plural}/{subresource}" if subresource else res.plural
        group = "" if res.group_version == "v1" else res.group_version.split("/")[0]
        for rule in rules:
            if rule.allows(verb, group, resource, namespace, name):
                return
        scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
        what = f'{res.plural} "{name}"' if name else res.plural
        raise ApiError(403, "Forbidden", f'{what} is forbidden: User "{user}" cannot {verb} resource '
                       f'"{resource}" in API group "{group}" {scope}')

    def note(self, record: RequestRecord) -> None:
        with self._cond:
            self._records.append(record)

    def injected(self, method: str, path: str) -> int | None:
        with self._cond:
            for failure in self._failures:
                if failure.count > 0 and failure.method in (method, "*") and failure.pattern.search(path):
                    failure.count -= 1
                    return failure.status
            return None


@dataclass(frozen=True)
class PolicyRule:
    """One RBAC rule (a Role's when ``namespace`` is set, else a ClusterRole's)."""

    verbs: tuple[str, ...]
    resources: tuple[str, ...]
    api_groups: tuple[str, ...] = ("",)
    namespace: str | None = None
    resource_names: tuple[str, ...] = ()

    def allows(self, verb: str, group: str, resource: str, namespace: str | None, name: str | None) -> bool:
        if self.namespace is not None and namespace != self.namespace:
            return False
        if self.resource_names and name not in self.resource_names:
            return False
        return (verb in self.verbs or "*" in self.verbs) and group in self.api_groups and (
            resource in self.resources or "*" in self.resources)

    @classmethod
    def from_manifest(cls, rule: Obj, namespace: str | None = None) -> PolicyRule:
        return cls(verbs=tuple(rule.get("verbs") or ()), resources=tuple(rule.get("resources") or ()),
                   api_groups=tuple(rule.get("apiGroups") or ("",)), namespace=namespace,
                   resource_names=tuple(rule.get("resourceNames") or ()))


def _verb(method: str, name: str | None, watching: bool) -> str:
    if method == "GET":
        return "watch" if watching else "get" if name else "list"
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, method.lower())


_PATH = re.compile(r"^(?:/api/(?P<core>v1)|/apis/(?P<group>[^/]+)/(?P<version>[^/]+))(?P<rest>/.*)?$")
_REASONS = {400: "BadRequest", 403: "Forbidden", 404: "NotFound", 409: "Conflict", 429: "TooManyRequests",
            500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}


def _route(server: KubeApiServer, path: str) -> tuple[Resource, str | None, str | None, str]:
    """(resource, namespace or None for all, name or None, subresource) of a resource path."""
    match = _PATH.match(path)
    if not match:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    group_version = "v1" if match.group("core") else f"{match.group('group')}/{match.group('version')}"
    parts = [p for p in (match.group("rest") or "").split("/") if p]
    namespace: str | None = None
    if len(parts) >= 3 and parts[0] == "namespaces":
        namespace, parts = parts[1], parts[2:]
    if not parts or len(parts) > 3:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    res = server.resource(group_version, parts[0])
    if namespace is not None and not res.namespaced:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    name = parts[1] if len(parts) > 1 else None
    sub = parts[2] if len(parts) > 2 else ""
    if sub and (sub != "status" or not res.status_subresource):
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    if name is not None and res.namespaced and namespace is None:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    return res, namespace, name, sub


def _handler(server: KubeApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "kube-apiserver-standin"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

        def _send_json(self, status: int, body: Any) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if not raw:
                return None
            try:
                return json.loads(raw)
            except ValueError:
                raise ApiError(400, "BadRequest", "the request body is not JSON") from None

        def _handle(self, method: str) -> None:
            target = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(target.query, keep_blank_values=True).items()}
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            record = RequestRecord(method, target.path, target.query, "?", 0, content_type)
            noted = False
            try:
                body = self._body() if method in ("POST", "PUT", "PATCH", "DELETE") else None
                record.user = server.authenticate(self.headers.get("Authorization"))
                failure = server.injected(method, target.path)
                if failure is not None:
                    raise ApiError(failure, _REASONS.get(failure, "InternalError"), "injected failure")
                if target.path == "/version":
                    record.status = 200
                    self._send_json(200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0-standin",
                                          "platform": "linux/amd64"})
                    return
                if target.path in ("/healthz", "/readyz", "/livez"):
                    record.status = 200
                    payload = b"ok"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                res, namespace, name, sub = _route(server, target.path)
                watching = method == "GET" and name is None and query.get("watch") in ("true", "1")
                server.authorize(record.user, _verb(method, name, watching), res, namespace, name, sub)
                if watching:
                    # A watch is recorded when it opens (it may stay open for minutes).
                    record.status = 200
                    server.note(record)
                    noted = True
                    self._stream(res, namespace, query)
                    return
                status, answer = self._dispatch(method, res, namespace, name, sub, query, body, content_type)
            except ApiError as error:
                status, answer = error.code, error.status()
            finally:
                if not noted:
                    server.note(record)
            record.status = status
            self._send_json(status, answer)

        def _dispatch(self, method: str, res: Resource, namespace: str | None, name: str | None, sub: str,
                      query: dict[str, str], body: Any, content_type: str) -> tuple[int, Obj]:
            ns = namespace or ""
            if name is None:
                if method == "GET":
                    return 200, server.list_objects(res, namespace, query)
                if method == "POST":
                    if res.namespaced and namespace is None:
                        raise ApiError(405, "MethodNotAllowed", "create needs a namespace")
                    return 201, server.create(res, ns, body if isinstance(body, dict) else {})
                raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on a collection here")
            if method == "GET":
                obj = server.get(res, ns, name)
                if sub == "status":
                    return 200, obj
                return 200, obj
            if method == "PUT":
                if not isinstance(body, dict):
                    raise ApiError(400, "BadRequest", "the body must be a JSON object")
                return 200, server.write(res, ns, name, subresource=sub, change=lambda _old: body)
            if method == "PATCH":
                return 200, server.write(res, ns, name, subresource=sub,
                                         change=lambda old: self._patch(old, body, content_type))
            if method == "DELETE":
                return 200, server.delete(res, ns, name, body if isinstance(body, dict) else {})
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")

        @staticmethod
        def _patch(old: Obj, patch: Any, content_type: str) -> Obj:
            if content_type == "application/json-patch+json":
                result: Obj = json_patch(old, patch)
            elif content_type == "application/merge-patch+json":
                result = merge_patch(old, patch)
            elif content_type == "application/strategic-merge-patch+json":
                result = strategic_merge_patch(old, patch)
            else:
                raise ApiError(415, "UnsupportedMediaType",
                               f"the body of the request was in an unknown format - accepted media types "
                               f"include: application/json-patch+json, application/merge-patch+json, "
                               f"application/strategic-merge-patch+json (got {content_type!r})")
            return result

        def _stream(self, res: Resource, namespace: str | None, query: dict[str, str]) -> None:
            events = server.watch(res, namespace, query)  # bad parameters raise before the 200
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            try:
                for event in events:
                    self._chunk(json.dumps(event).encode() + b"\n")
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError, OSError):
                self.close_connection = True

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def do_PUT(self) -> None:
            self._handle("PUT")

        def do_PATCH(self) -> None:
            self._handle("PATCH")

        def do_DELETE(self) -> None:
            self._handle("DELETE")

    return Handler
