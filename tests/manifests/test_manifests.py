"""manifests/: rendered from the code, valid against the Kubernetes schemas, and in agreement with the code."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from flannel_alivpc import __version__, cli
from flannel_alivpc.clients.credentials import credentials_from_env
from flannel_alivpc.core.kube_subnets import EVENT_NAMESPACE, RBAC_CLUSTER_RULES, RBAC_EVENT_RULES, RBAC_NAMESPACE_RULES
from flannel_alivpc.core.network import parse_network_config
from flannel_alivpc.installer import manifests
from flannel_alivpc.installer.options import DEFAULT_KUBERNETES_VERSION, MIN_KUBERNETES_MINOR
from flannel_alivpc.installer.ram import ActionScanError, ApiAction, called_actions, ram_policy
from flannel_alivpc.installer.teardown import CNI_FILES
from flannel_alivpc.routed.config import DEFAULT_SUBNET_FILE, config_from_args

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d]


def all_documents() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, d) for p in sorted(MANIFESTS.glob("*.yaml")) for d in documents(p.name)]


def kind(name: str, wanted: str) -> dict[str, Any]:
    (doc,) = [d for d in documents(name) if d["kind"] == wanted]
    return doc


def test_the_files_are_the_code_rendered() -> None:
    files = manifests.repository_files()
    stale = [name for name, text in files.items()
             if not (MANIFESTS / name).exists() or (MANIFESTS / name).read_text() != text]
    assert not stale, f"manifests/{', '.join(stale)} differ from the code: run `make manifests`"
    extra = {p.name for p in MANIFESTS.iterdir()} - set(files) - {"README.md"}
    assert not extra, f"manifests/ has files the code does not render: {extra}"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a network connection fails the test: the schemas must ship with the package."""
    def refuse(self: socket.socket, address: Any) -> None:
        raise AssertionError(f"network access to {address} during schema validation")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize("version", [f"1.{MIN_KUBERNETES_MINOR}.0", f"{DEFAULT_KUBERNETES_VERSION}.0"])
def test_every_manifest_is_valid_for_kubernetes(version: str, offline: None) -> None:
    rendered = manifests.cluster_objects(manifests.ManifestValues(etcd_prefix="/k8s/network"), slb_controller=True)
    secrets = [manifests.credentials_secret("id", "secret"),
               manifests.etcd_secret("https://10.0.0.1:2379", "ca", "crt", "key")]
    docs = [d for _, d in all_documents()] + rendered + secrets
    assert len(docs) >= 11
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


OWN_IMAGE = "registry.example.com:5000/team/flannel-alivpc:0.1.0-rc1"
PLACEHOLDER = re.compile(r"REPLACE|CHANGE-?ME|<[a-z -]+>|\bTODO\b|example\.(com|org)|\.\.\.", re.I)


@pytest.mark.parametrize("how", ["flag", "env"])
def test_rendered_with_an_image_reference_the_manifests_apply_as_they_are(
        how: str, tmp_path: Path, offline: None, capsys: pytest.CaptureFixture[str]) -> None:
    args, env = ([str(tmp_path), "--image", OWN_IMAGE], {}) if how == "flag" else \
        ([str(tmp_path)], {manifests.IMAGE_ENV: OWN_IMAGE})
    assert manifests.main(args, env=env) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(manifests.repository_files())
    docs = [d for p in sorted(tmp_path.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    images = set()
    for doc in docs:
        kubernetes_validate.validate(doc, f"{DEFAULT_KUBERNETES_VERSION}.0", strict=True)
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        images |= {c["image"] for c in pod.get("containers", []) + pod.get("initContainers", [])}
    assert images == {OWN_IMAGE, manifests.CNI_PLUGIN_IMAGE}
    for path in tmp_path.iterdir():
        text = path.read_text().replace(OWN_IMAGE, "")
        assert not PLACEHOLDER.search(text), f"{path.name}: {PLACEHOLDER.search(text)}"
    for name in manifests.repository_files():  # the shipped files: the same, but for the image
        assert (MANIFESTS / name).read_text() == (tmp_path / name).read_text().replace(OWN_IMAGE,
                                                                                        manifests.DEFAULT_IMAGE)


@pytest.mark.parametrize("image", ["flannel-alivpc:0.1.0", "registry.example.com/flannel-alivpc",
                                   "registry.example.com/flannel-alivpc:latest", "docker.io/Team/x:1",
                                   "https://registry.example.com/x:1"])
@pytest.mark.parametrize("how", ["flag", "env"])
def test_an_unqualified_or_unversioned_image_is_refused(image: str, how: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    args, env = ([str(tmp_path), "--image", image], {}) if how == "flag" else \
        ([str(tmp_path)], {manifests.IMAGE_ENV: image})
    assert manifests.main(args, env=env) == 2
    err = capsys.readouterr().err
    source = "--image" if how == "flag" else manifests.IMAGE_ENV
    assert err == (f"error: {source} {image!r}: expected a registry-qualified, versioned image reference such as "
                   f"{manifests.DEFAULT_IMAGE} (registry host, repository, then :<version> or @sha256:<digest>)\n")
    assert list(tmp_path.iterdir()) == []


def test_the_shipped_files_hold_no_placeholder() -> None:
    for path in MANIFESTS.iterdir():
        if path.name != "README.md":
            assert not PLACEHOLDER.search(path.read_text()), f"{path.name}: {PLACEHOLDER.search(path.read_text())}"


def test_the_daemonset_is_confined() -> None:
    ds = kind("flannel-alivpc.yaml", "DaemonSet")
    assert ds["metadata"]["namespace"] == "kube-system"
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["tolerations"] == [{"operator": "Exists"}]
    (daemon,) = pod["containers"]
    context = daemon["securityContext"]
    assert context["privileged"] is False and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]}
    for init in pod["initContainers"]:
        assert init["securityContext"]["privileged"] is False
        assert "add" not in init["securityContext"]["capabilities"]
    mounts = {m["mountPath"]: m["name"] for m in daemon["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts[str(Path(DEFAULT_SUBNET_FILE).parent)]]["hostPath"]["path"] == "/run/flannel"
    install_cni = next(c for c in pod["initContainers"] if c["name"] == "install-cni")
    conflist = install_cni["args"][-1]
    assert conflist == CNI_FILES[0]  # what `down` removes is what the init container installs
    cni_mount = next(m for m in install_cni["volumeMounts"] if conflist.startswith(m["mountPath"]))
    assert volumes[cni_mount["name"]]["hostPath"]["path"] == "/etc/cni/net.d"
    assert volumes["flannel-cfg"]["configMap"]["name"] == manifests.CONFIG_MAP_NAME
    env = {e["name"]: e for e in daemon["env"]}
    for name in (manifests.KEY_ID_ENV, manifests.KEY_SECRET_ENV):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == manifests.CREDENTIALS_SECRET and ref["optional"] is True
    secret = manifests.credentials_secret("id", "secret")  # what the installer applies
    assert set(secret["stringData"]) == {env[n]["valueFrom"]["secretKeyRef"]["key"]
                                         for n in (manifests.KEY_ID_ENV, manifests.KEY_SECRET_ENV)}


def test_the_daemonset_carries_upstream_flannels_labels() -> None:
    config_map, ds = documents("flannel-alivpc.yaml")
    template = ds["spec"]["template"]["metadata"]["labels"]
    for labels in (ds["metadata"]["labels"], template, config_map["metadata"]["labels"]):
        assert labels["app"] == labels["k8s-app"] == "flannel" and labels["tier"] == "node"  # kube-flannel.yml's
        assert labels["app.kubernetes.io/part-of"] == "flannel-alivpc"
    assert ds["spec"]["selector"]["matchLabels"].items() <= template.items()
    assert ds["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": manifests.DAEMON_NAME}  # immutable


def test_in_etcd_mode_the_configmap_holds_no_network_config() -> None:
    config_map, ds = documents("flannel-alivpc-etcd.yaml")
    assert set(config_map["data"]) == {"cni-conf.json"}  # net-conf.json lives in etcd, read from there only
    assert config_map["metadata"]["annotations"]["flannel-alivpc.io/network-config"] == \
        "read from etcd at /coreos.com/network/config, not from this ConfigMap"
    (daemon,) = ds["spec"]["template"]["spec"]["containers"]
    assert "flannel-cfg" not in {m["name"] for m in daemon["volumeMounts"]}
    with pytest.raises(ValueError, match="unknown subnet manager 'consul'"):
        manifests.configmap(manifests.ManifestValues(subnet_manager="consul"))
    assert ds["spec"]["template"]["spec"]["automountServiceAccountToken"] is False  # no API token in etcd mode


def test_the_daemon_flags_env_and_ports_are_the_daemons() -> None:
    ds = kind("flannel-alivpc-etcd.yaml", "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    (daemon,) = pod["containers"]
    plain_env = {e["name"]: e["value"] for e in daemon["env"] if "value" in e}
    flags = {max(a.option_strings, key=len) for a in cli.build_parser(env={})._actions if a.option_strings}
    flanneld_env = [e for e in daemon["env"] if e["name"].startswith("FLANNELD_")]
    assert set(plain_env) <= {e["name"] for e in flanneld_env}
    for name in (e["name"] for e in flanneld_env):
        assert "--" + name.removeprefix("FLANNELD_").lower().replace("_", "-") in flags, name
    # The etcd address comes from the etcd Secret, as the installer writes it.
    (endpoints,) = [e["valueFrom"]["secretKeyRef"] for e in flanneld_env if e["name"] == "FLANNELD_ETCD_ENDPOINTS"]
    secret = manifests.etcd_secret("https://192.168.0.10:2379", "ca", "crt", "key")
    assert endpoints["name"] == secret["metadata"]["name"] == manifests.ETCD_SECRET
    plain_env["FLANNELD_ETCD_ENDPOINTS"] = secret["stringData"][endpoints["key"]]
    args = cli.build_parser(env=plain_env).parse_args(daemon["args"])
    assert args.command is None  # the daemon itself, not a subcommand
    config = config_from_args(args, env={})
    mounts = {m["mountPath"]: m["name"] for m in daemon["volumeMounts"]}
    for path in (config.etcd_cafile, config.etcd_certfile, config.etcd_keyfile):
        assert path and mounts[str(Path(path).parent)] == "etcd-certs"
        assert Path(path).name in secret["stringData"]
    assert config.etcd_endpoints == ["https://192.168.0.10:2379"]
    assert config.etcd_prefix == "/coreos.com/network"
    assert config.ip_masq is True  # as kube-flannel.yml runs flanneld
    for probe in (daemon["livenessProbe"], daemon["readinessProbe"]):
        assert probe["httpGet"]["port"] == config.healthz_port == manifests.HEALTHZ_PORT
        assert probe["httpGet"]["host"] == config.healthz_ip
    assert daemon["livenessProbe"]["httpGet"]["path"] == "/healthz"
    key_env = {e["name"]: "x" for e in daemon["env"] if "valueFrom" in e}
    assert credentials_from_env(key_env) is not None  # the names the credential code reads


def test_kube_mode_is_the_default_in_kube_flannels_conventions() -> None:
    """net-conf.json from the ConfigMap at the daemon's default path, the downward API, exactly the RBAC it needs."""
    config_map, ds = documents("flannel-alivpc.yaml")
    pod = ds["spec"]["template"]["spec"]
    (daemon,) = pod["containers"]
    env = {e["name"]: e for e in daemon["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert not any(name.startswith("FLANNELD_ETCD") for name in env)
    args = cli.build_parser(env={}).parse_args(daemon["args"])
    config = config_from_args(args, env={"NODE_NAME": "node-1", "POD_NAMESPACE": "kube-system"})
    assert config.kube_subnet_mgr is True and config.ip_masq is True and config.iptables_forward_rules is True
    # The daemon's default --net-config-path is where the ConfigMap's net-conf.json is mounted.
    mounts = {m["mountPath"]: m["name"] for m in daemon["volumeMounts"]}
    net_conf = Path(config.net_config_path)
    assert mounts[str(net_conf.parent)] == "flannel-cfg"
    network = parse_network_config(config_map["data"][net_conf.name])
    assert network.backend_type == "ali-vpc"
    assert pod["automountServiceAccountToken"] is True
    assert "etcd-certs" not in {v["name"] for v in pod["volumes"]}
    # RBAC: what is bound to the daemon's account is exactly what the kube-mode code needs.
    rbac = documents("rbac.yaml")
    bound = {(b["roleRef"]["kind"], b["roleRef"]["name"], b["metadata"].get("namespace"))
             for b in rbac if b["kind"].endswith("Binding")
             and {"kind": "ServiceAccount", "name": manifests.DAEMON_NAME, "namespace": "kube-system"}
             in b["subjects"]}
    rules = {(r["kind"], r["metadata"].get("namespace")): r["rules"] for r in rbac
             if r["kind"] in ("Role", "ClusterRole")
             and (r["kind"], r["metadata"]["name"], r["metadata"].get("namespace")) in bound}
    assert rules == {("ClusterRole", None): [dict(r) for r in RBAC_CLUSTER_RULES],
                     ("Role", "kube-system"): [dict(r) for r in RBAC_NAMESPACE_RULES],
                     ("Role", EVENT_NAMESPACE): [dict(r) for r in RBAC_EVENT_RULES]}
    flat = [(verb, resource) for rule in RBAC_CLUSTER_RULES for verb in rule["verbs"] for resource in rule["resources"]]
    assert not any(verb in ("create", "update", "delete") or resource in ("secrets", "*") for verb, resource in flat)


def test_the_slb_controller_deployment() -> None:
    deployment = kind("slb-controller.yaml", "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][0] == "slb-controller"
    assert container["securityContext"]["runAsNonRoot"] is True
    assert pod["serviceAccountName"] == manifests.SLB_NAME
    bindings = [d for d in documents("rbac.yaml") if d["kind"] in ("ClusterRoleBinding", "RoleBinding")
                and d["metadata"]["name"] == manifests.SLB_NAME]
    assert len(bindings) == 2 and all(b["subjects"][0]["name"] == manifests.SLB_NAME for b in bindings)
    assert {e["name"] for e in container["env"]} == {manifests.KEY_ID_ENV, manifests.KEY_SECRET_ENV}
    parser = cli.build_parser(env={})
    commands = next(a for a in parser._actions if isinstance(a, type(parser._subparsers._group_actions[0])))  # type: ignore[union-attr]
    if "slb-controller" not in commands.choices:  # type: ignore[attr-defined]
        pytest.skip("the slb-controller subcommand is not in this tree yet")
    args = parser.parse_args(container["args"])
    assert args.healthz_port == manifests.SLB_HEALTHZ_PORT != manifests.HEALTHZ_PORT  # both on the host network
    for probe in (container["livenessProbe"], container["readinessProbe"]):
        assert probe["httpGet"]["port"] == args.healthz_port
        assert probe["httpGet"]["host"] == args.healthz_ip
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    role = next(d for d in documents("rbac.yaml") if d["kind"] == "ClusterRole"
                and d["metadata"]["name"] == manifests.SLB_NAME)
    watched = {(group, resource) for rule in role["rules"] if {"list", "watch"} <= set(rule["verbs"])
               for group in rule["apiGroups"] for resource in rule["resources"]}
    assert {("", "services"), ("", "nodes"), ("discovery.k8s.io", "endpointslices")} <= watched


def test_images_are_this_version_and_what_make_image_builds() -> None:
    assert f"{manifests.IMAGE_REPOSITORY}/{manifests.IMAGE_NAME}:{__version__}" == manifests.DEFAULT_IMAGE
    assert manifests.check_image_reference(manifests.DEFAULT_IMAGE, "default") == manifests.DEFAULT_IMAGE
    # Run as a top-level make even under `make test` (no "Entering directory" lines, no inherited flags).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    make = subprocess.run(["make", "--no-print-directory", "-n", "image", "push"], cwd=REPO, env=env,
                          capture_output=True, text=True, check=True)
    assert make.stdout.splitlines() == [
        f"docker build --build-arg VERSION={__version__} --tag {manifests.DEFAULT_IMAGE} .",
        f"docker push {manifests.DEFAULT_IMAGE}"]
    images = set()
    for _, doc in all_documents():
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        images |= {c["image"] for c in pod.get("containers", []) + pod.get("initContainers", [])}
    assert images == {manifests.DEFAULT_IMAGE, manifests.CNI_PLUGIN_IMAGE}
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f"ARG VERSION={__version__}\n" in dockerfile
    assert f"version = {__version__}\n" in (REPO / "setup.cfg").read_text()


@pytest.mark.parametrize("name, backend", [("net-conf-alivpc.json", "ali-vpc"), ("net-conf-vxlan.json", "vxlan")])
def test_the_network_configs(name: str, backend: str) -> None:
    text = (MANIFESTS / name).read_text()
    net_conf = parse_network_config(text, source=name)
    assert net_conf.backend_type == backend
    assert str(net_conf.network) == manifests.DEFAULT_POD_CIDR
    assert "AccessKey" not in text  # keys live in the Secret only
    cni = json.loads(kind("flannel-alivpc.yaml", "ConfigMap")["data"]["cni-conf.json"])
    assert [p["type"] for p in cni["plugins"]] == ["flannel", "portmap"]


def test_the_ram_policy_lists_exactly_the_actions_the_code_calls() -> None:
    policy = json.loads((MANIFESTS / "ram-policy.json").read_text())
    assert policy == ram_policy(), "manifests/ram-policy.json is stale: run `make manifests`"
    allowed = {a for statement in policy["Statement"] for a in statement["Action"]}
    assert {"vpc:CreateRouteEntries", "vpc:DeleteRouteEntries", "vpc:DescribeRouteEntryList",
            "vpc:DescribeRouteTableList", "vpc:DescribeVSwitches", "ecs:DescribeInstances"} <= allowed
    assert not [a for a in allowed if a.endswith(":*")]
    assert all(s["Effect"] == "Allow" for s in policy["Statement"])


def test_the_action_scanner(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "clients").mkdir(parents=True)
    (package / "emulator").mkdir()
    (package / "clients/a.py").write_text(
        "class C:\n"
        "    def direct(self):\n"
        "        self.api.call('vpc', 'DescribeVpcs', {})\n"
        "    def _list(self, action, params):\n"
        "        return self.api.call('vpc', action, params)\n"
        "    def tables(self):\n"
        "        return self._list('DescribeRouteTableList', {})\n"
        "    def entries(self):\n"
        "        return self._list(action='DescribeRouteEntryList', params={})\n"
        "    def _slb(self, action):\n"
        "        return self._api.call('slb', action, {})\n"
        "    def listener(self, protocol):\n"
        "        return self._slb(f'CreateLoadBalancer{protocol.upper()}Listener')\n"
        "    def other(self):\n"
        "        subprocess.call(['ls'])\n")
    (package / "emulator/e.py").write_text("x.api.call('vpc', name, {})\n")  # skipped: the emulator answers calls
    assert called_actions(package) == sorted([
        ApiAction("vpc", "DescribeVpcs"), ApiAction("vpc", "DescribeRouteTableList"),
        ApiAction("vpc", "DescribeRouteEntryList"), ApiAction("slb", "CreateLoadBalancer*Listener")])
    (package / "clients/b.py").write_text("def f(api, name):\n    api.call('ecs', name.strip(), {})\n")
    with pytest.raises(ActionScanError, match=r"clients/b.py:2: cannot tell the action"):
        called_actions(package)
    (package / "clients/b.py").write_text(
        "def f(api, name):\n    api.call('ecs', name, {})\n\ndef g(api, n):\n    f(api, n)\n")
    with pytest.raises(ActionScanError, match=r"clients/b.py:5: the action passed to f\(\) is not a string"):
        called_actions(package)
