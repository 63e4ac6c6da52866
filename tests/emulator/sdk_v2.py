"""Helpers for driving the emulator with the V2 (Tea / darabonba) Python SDKs, and for checking
that their models take every response without loss.

``CloudV2`` holds one client per product, built the way a user builds them:
``Config(endpoint="127.0.0.1:<port>", protocol="http", ...)``; credentials are
always explicit, so the SDK's default chain (environment, profile files, the
real metadata address) is never consulted. Calls are made by API name with
the API's own parameter names, which ``<Action>Request().from_map`` turns into
the SDK's request model (nested lists included), and go through the SDK's
generated ``<action>`` method, so the wire format is exactly the SDK's.

Each client records the raw JSON body of its last answer, and every successful
``call`` checks it against the SDK's response model (``model_problems``): a key
the model does not know, or a value whose JSON type differs from the model's
annotation, is a loss, unless it is one of the few ``DOCUMENTED_DIVERGENCES``.
``unset_fields`` lists the model fields an answer left out.

``RawV3`` builds and signs a V3 request with a second implementation of the
algorithm, for tests that must control every byte of it.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import importlib
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from alibabacloud_tea_openapi.exceptions import AlibabaCloudException
from alibabacloud_tea_openapi.utils_models import Config
from darabonba.model import DaraModel

from flannel_alivpc.emulator.server import Emulator
from tests.conftest import EMULATOR_AK, EMULATOR_SECRET

REGION = "cn-hangzhou"
PRODUCTS = {"vpc": "alibabacloud_vpc20160428", "ecs": "alibabacloud_ecs20140526", "slb": "alibabacloud_slb20140515"}


def _recording(client_class: type[Any]) -> type[Any]:
    """``client_class`` that keeps the raw body of its last answer in ``last_body``."""

    class Recording(client_class):  # type: ignore[misc]
        last_body: Any = None

        def call_api(self, params: Any, request: Any, runtime: Any) -> Any:
            self.last_body = None
            result = super().call_api(params, request, runtime)
            self.last_body = result.get("body")
            return result

    return Recording


def _method_for(client: Any, action: str) -> Any:
    """The generated method: ``CreateLoadBalancerHTTPListener`` -> ``create_load_balancer_httplistener``."""
    wanted = action.lower()
    for name in dir(type(client)):
        if name.replace("_", "") == wanted:
            return getattr(client, name)
    raise AttributeError(f"the SDK has no method for {action}")


@dataclass
class Answer:
    """One successful call: the SDK's response body model and the raw JSON it was built from."""

    model: Any
    raw: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.model.to_map()[key]


class CloudV2:
    """The three product clients of the V2 SDKs against one emulator."""

    def __init__(self, emulator: Emulator, *, access_key_id: str = EMULATOR_AK,
                 access_key_secret: str = EMULATOR_SECRET, security_token: str | None = None,
                 signature_algorithm: str | None = None) -> None:
        if not access_key_id:
            raise ValueError("pass credentials explicitly; the SDK's default chain would look outside the test")
        self.emulator = emulator
        self.endpoint = emulator.endpoint.removeprefix("http://")
        self.clients: dict[str, Any] = {}
        self.models: dict[str, Any] = {}
        for product, package in PRODUCTS.items():
            client_class = importlib.import_module(f"{package}.client").Client
            config = Config(access_key_id=access_key_id, access_key_secret=access_key_secret,
                            security_token=security_token, endpoint=self.endpoint, protocol="http",
                            region_id=REGION, signature_algorithm=signature_algorithm)
            self.clients[product] = _recording(client_class)(config)
            self.models[product] = importlib.import_module(f"{package}.models")

    def request(self, product: str, action: str, **params: Any) -> Any:
        """The SDK's ``<action>Request`` model filled from API parameter names (RegionId defaults to ours)."""
        request = getattr(self.models[product], f"{action}Request")()
        if "region_id" in vars(request):
            params.setdefault("RegionId", REGION)
        return request.from_map(params)

    def call(self, product: str, action: str, **params: Any) -> Answer:
        """A successful call; the answer must also fit the SDK's model (see ``model_problems``)."""
        client = self.clients[product]
        response = _method_for(client, action)(self.request(product, action, **params))
        assert response.status_code == 200
        answer = Answer(response.body, client.last_body)
        problems = model_problems(product, action, answer)
        assert not problems, "the answer does not fit the SDK's model:\n" + "\n".join(problems)
        return answer

    def fail(self, product: str, action: str, **params: Any) -> AlibabaCloudException:
        with pytest.raises(AlibabaCloudException) as caught:
            self.call(product, action, **params)
        return caught.value

    def vpc(self, action: str, **params: Any) -> Answer:
        return self.call("vpc", action, **params)

    def ecs(self, action: str, **params: Any) -> Answer:
        return self.call("ecs", action, **params)

    def slb(self, action: str, **params: Any) -> Answer:
        return self.call("slb", action, **params)


# -- lossless deserialisation ------------------------------------------------------------

# What the emulator sends as Alibaba Cloud documents it although the action's V2 model
# lacks the field, or types it differently: the SDK drops (or keeps untyped) the same
# field against the cloud. Paths use JSON keys, with "[]" for any list index.
# docs/emulator.md lists them; any other difference fails the tests.
DOCUMENTED_DIVERGENCES: dict[tuple[str, str], set[str]] = {
    ("vpc", "DescribeVpcs"): {"Vpcs.Vpc[].NetworkAclNum"},
    ("vpc", "DescribeRouteTableList"): {"Code", "Message", "Success"},
    ("slb", "DescribeLoadBalancerAttribute"): {"HasReservedInfo", "BackendServers.BackendServer[].VpcId"},
    ("slb", "UploadServerCertificate"): {"RegionIdAlias"},
    ("slb", "DescribeServerCertificates"): {"ServerCertificates.ServerCertificate[].RegionIdAlias"},
    ("slb", "DescribeLoadBalancerTCPListenerAttribute"): {"HealthCheckSwitch"},
    ("slb", "DescribeLoadBalancerUDPListenerAttribute"): {
        "HealthCheckSwitch", "PersistenceTimeout", "ConnectionDrain", "ConnectionDrainTimeout"},
    ("slb", "DescribeLoadBalancerListeners"): {
        "Listeners[].TCPListenerConfig.SynProxy", "Listeners[].TCPListenerConfig.HealthCheckSwitch",
        "Listeners[].UDPListenerConfig.PersistenceTimeout", "Listeners[].UDPListenerConfig.HealthCheckSwitch"},
    # The echoed list: the model has no ServerIp, and Weight as a string.
    **{("slb", f"{verb}BackendServers"): {
        "BackendServers.BackendServer[].ServerIp", "BackendServers.BackendServer[].Weight",
    } for verb in ("Add", "Set", "Remove")},
    ("slb", "DescribeHealthStatus"): {"BackendServers.BackendServer[].Type", "BackendServers.BackendServer[].EniHost"},
}
# The route actions flannel's original backend called under ECS 2014-05-26 are answered
# with the VPC action's JSON; the ECS model carries a subset of it. Keys beyond the
# model are expected there, but what the model does carry must still have its type.
VPC_SHAPED_ECS_ACTIONS = {"CreateRouteEntry", "DeleteRouteEntry", "DescribeRouteTables", "DescribeVRouters",
                          "DescribeVpcs", "DescribeVSwitches"}

_SCALARS: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "bool": (bool,), "float": (float, int)}


def _kinds(model_class: type[Any]) -> dict[str, str]:
    """attribute -> annotation of a generated model, as written in its ``__init__``."""
    annotations = dict(model_class.__init__.__annotations__)
    annotations.pop("return", None)
    return {name: str(kind).replace("main_models.", "") for name, kind in annotations.items()}


def _probe(kind: str, models: Any) -> Any:
    """A value of ``kind`` that ``to_map`` will show."""
    if kind.startswith("List["):
        return [_probe(kind[5:-1], models)]
    if kind.startswith("Dict[") or kind == "Any":
        return {"probe": 1}
    if kind in _SCALARS:
        return {"str": "probe", "int": 7, "bool": True, "float": 0.5}[kind]
    return getattr(models, kind)()


_KEYS: dict[type[Any], dict[str, tuple[str, str]]] = {}


def _keys(model_class: type[Any]) -> dict[str, tuple[str, str]]:
    """JSON key -> (attribute, annotation) of a generated model, found by setting each attribute in turn."""
    if model_class not in _KEYS:
        models = importlib.import_module(model_class.__module__.split(".")[0] + ".models")
        keys: dict[str, tuple[str, str]] = {}
        base = model_class().to_map()
        for name, kind in _kinds(model_class).items():
            instance = model_class()
            setattr(instance, name, _probe(kind, models))
            changed = [k for k, v in instance.to_map().items() if base.get(k, None) != v]
            assert len(changed) == 1, (model_class, name, changed)
            keys[changed[0]] = (name, kind)
        _KEYS[model_class] = keys
    return _KEYS[model_class]


def _walk(raw: Any, kind: str, models: Any, path: str, problems: list[tuple[str, str]]) -> None:
    if raw is None or kind in ("Any", "Dict[str, Any]"):
        return
    if kind.startswith("List["):
        if not isinstance(raw, list):
            problems.append((path, f"expected a list, got {raw!r}"))
            return
        for item in raw:
            _walk(item, kind[5:-1], models, path + "[]", problems)
        return
    if kind in _SCALARS:
        # bool is an int in Python, but not in JSON.
        if isinstance(raw, bool) != (kind == "bool") or not isinstance(raw, _SCALARS[kind]):
            problems.append((path, f"the model has {kind}, the answer {type(raw).__name__} {raw!r}"))
        return
    if not isinstance(raw, dict):
        problems.append((path, f"the model has an object ({kind}), the answer {raw!r}"))
        return
    keys = _keys(getattr(models, kind))
    for key, value in raw.items():
        where = f"{path}.{key}" if path else key
        if key not in keys:
            problems.append((where, f"not in the SDK's model (value {value!r})"))
        else:
            _walk(value, keys[key][1], models, where, problems)


def model_problems(product: str, action: str, answer: Answer) -> list[str]:
    """Every way the JSON the emulator sent differs from the action's V2 model, less the documented ones."""
    problems: list[tuple[str, str]] = []
    models = importlib.import_module(type(answer.model).__module__.split(".")[0] + ".models")
    _walk(answer.raw, type(answer.model).__name__, models, "", problems)
    allowed = DOCUMENTED_DIVERGENCES.get((product, action), set())
    superset = product == "ecs" and action in VPC_SHAPED_ECS_ACTIONS
    return [f"{action} {path}: {problem}" for path, problem in problems
            if path not in allowed and not (superset and problem.startswith("not in the SDK's model"))]


def unset_fields(model: Any, path: str = "") -> list[str]:
    """Model fields that the answer did not fill, recursively (lists by their first item)."""
    missing: list[str] = []
    for name in _kinds(type(model)):
        value = getattr(model, name)
        where = f"{path}.{name}" if path else name
        if value is None:
            missing.append(where)
        elif isinstance(value, DaraModel):
            missing.extend(unset_fields(value, where))
        elif isinstance(value, list) and value and isinstance(value[0], DaraModel):
            missing.extend(unset_fields(value[0], where + "[]"))
    return missing


# -- raw V3-signed requests ----------------------------------------------------------------
#
# A second implementation of signature V3, written from Alibaba Cloud's description of
# the algorithm (not from the emulator's code), for tests that must control every byte.

ALGORITHM = "ACS3-HMAC-SHA256"
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")


def rfc3986(text: str) -> str:
    """Percent-encoding as the V3 description requires: unreserved bytes kept, the rest %XX."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in text.encode())


def v3_authorization(method: str, path: str, query: list[tuple[str, str]], headers: dict[str, str],
                     body: bytes, key_id: str, secret: str) -> str:
    """The ``Authorization`` value for a request whose signed headers are all of ``headers``."""
    payload = hashlib.sha256(body).hexdigest()
    canonical_query = "&".join(f"{k}={v}" for k, v in sorted((rfc3986(k), rfc3986(v)) for k, v in query))
    names = sorted(headers, key=str.lower)
    canonical_headers = "".join(f"{n.lower()}:{headers[n].strip()}\n" for n in names)
    signed = ";".join(n.lower() for n in names)
    canonical = f"{method}\n{path}\n{canonical_query}\n{canonical_headers}\n{signed}\n{payload}"
    to_sign = f"{ALGORITHM}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    signature = hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{ALGORITHM} Credential={key_id},SignedHeaders={signed},Signature={signature}"


@dataclass
class RawV3:
    """A V3 request built piece by piece; ``sign()`` fills Authorization, ``send()`` puts it on the wire as is."""

    host: str
    action: str
    version: str = "2016-04-28"
    method: str = "POST"
    path: str = "/"
    query: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    content_type: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.headers = {
            "host": self.host,
            "x-acs-action": self.action,
            "x-acs-version": self.version,
            "x-acs-date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "x-acs-signature-nonce": uuid.uuid4().hex,
            "x-acs-content-sha256": hashlib.sha256(self.body).hexdigest(),
            **({"content-type": self.content_type} if self.content_type else {}),
            **self.headers,
        }

    def sign(self, key_id: str = EMULATOR_AK, secret: str = EMULATOR_SECRET) -> RawV3:
        self.headers["Authorization"] = v3_authorization(self.method, self.path, self.query,
                                                         {k: v for k, v in self.headers.items()
                                                          if k != "Authorization"}, self.body, key_id, secret)
        return self

    def target(self) -> str:
        return self.path + ("?" + "&".join(f"{rfc3986(k)}={rfc3986(v)}" for k, v in self.query)
                            if self.query else "")

    def send(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body)."""
        address, port = self.host.rsplit(":", 1)
        connection = http.client.HTTPConnection(address, int(port), timeout=10)
        try:
            connection.putrequest(self.method, self.target(), skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                connection.putheader(name, value)
            connection.putheader("Content-Length", str(len(self.body)))
            connection.endheaders(self.body)
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()
