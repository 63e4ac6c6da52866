"""Everything a step can use: options, the host's files, the runner, identity, cloud and etcd.

Identity, cloud clients and the etcd connection are made on first use and
kept, so a dry run that never needs them never contacts anything.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flannel_alivpc.clients.cloud import Cloud, CloudConfig, build_cloud
from flannel_alivpc.clients.etcd import EtcdClient
from flannel_alivpc.clients.metadata import MetadataClient
from flannel_alivpc.core.cloud import InstanceIdentity
from flannel_alivpc.core.errors import ConfigError, MetadataError
from flannel_alivpc.core.network import parse_subnet_env
from flannel_alivpc.core.secrets import Secret
from flannel_alivpc.installer.hostfs import HostFS
from flannel_alivpc.installer.options import Options
from flannel_alivpc.installer.plan import Reporter, State, StepBlocked
from flannel_alivpc.installer.runner import CommandRunner

SUBNET_ENV = "/run/flannel/subnet.env"
CONFIG_DIR = "/etc/flannel-alivpc"
ETCD_ROOT_PASSWORD = f"{CONFIG_DIR}/pki/etcd-root-password"
"""The password of etcd's root user, made by the etcd-access step (mode 0600, on the master only)."""
ADMIN_KUBECONFIG = "/etc/kubernetes/admin.conf"
KUBELET_KUBECONFIG = "/etc/kubernetes/kubelet.conf"


@dataclass(frozen=True)
class OsInfo:
    id: str
    version: str
    pretty: str
    family: str | None
    """``apt`` or ``yum``; ``None`` when the installer does not know the system."""


_APT = {"debian", "ubuntu"}
_YUM = {"rhel", "centos", "fedora", "rocky", "almalinux", "alinux", "anolis", "ol", "openEuler".lower()}


def read_os_release(text: str | None) -> OsInfo:
    values: dict[str, str] = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip("'\"")
    ids = {values.get("ID", "").lower(), *values.get("ID_LIKE", "").lower().split()}
    family = "apt" if ids & _APT else "yum" if ids & _YUM else None
    return OsInfo(id=values.get("ID", ""), version=values.get("VERSION_ID", ""),
                  pretty=values.get("PRETTY_NAME", values.get("ID", "unknown")), family=family)


@dataclass
class Context:
    options: Options
    fs: HostFS
    runner: CommandRunner
    report: Reporter
    state: State
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ), repr=False)
    """The process environment: it may hold ACCESS_KEY_SECRET, so it is kept out of the repr."""
    etcd_factory: Callable[..., EtcdClient] | None = None
    """Tests: makes the etcd client, given ``username``/``password`` once authentication is on."""
    """How to reach etcd; default: ``options.etcd_*`` with paths under the root."""
    _identity: InstanceIdentity | None = field(default=None, init=False, repr=False)
    _identity_error: str | None = field(default=None, init=False, repr=False)
    _cloud: Cloud | None = field(default=None, init=False, repr=False)
    _etcd: EtcdClient | None = field(default=None, init=False, repr=False)

    # -- this machine -------------------------------------------------------------------

    def os_info(self) -> OsInfo:
        return read_os_release(self.fs.read("/etc/os-release"))

    def identity(self) -> InstanceIdentity:
        """This instance, from the metadata service (``--metadata-url``); asked once, failure included."""
        if self._identity is None:
            if self._identity_error is not None:
                raise StepBlocked(self._identity_error)
            client = MetadataClient(self.options.metadata_url)
            try:
                self._identity = client.identity()
            except MetadataError as error:
                self._identity_error = f"cannot read this instance's identity: {error}"
                raise StepBlocked(self._identity_error) from None
            finally:
                client.close()
        return self._identity

    @property
    def region(self) -> str:
        return self.options.region or self.identity().region_id

    @property
    def provider_id(self) -> str:
        """``<region>.<instance-id>``: how the cloud controllers find this node's instance."""
        return f"{self.region}.{self.identity().instance_id}"

    @property
    def node_name(self) -> str:
        # ECS hostnames such as iZbp1...Z carry capitals; Node names must be lower case.
        return self.identity().hostname.lower()

    @property
    def backend(self) -> str:
        if self.options.backend:
            return self.options.backend
        return "ali-vpc" if self.identity().network_type == "vpc" else "vxlan"

    # -- the cloud and etcd -------------------------------------------------------------

    def cloud_env(self) -> dict[str, str]:
        """The environment for the cloud clients: the chosen access key wins over the process's."""
        env = {k: v for k, v in self.env.items()
               if k not in ("ACCESS_KEY_ID", "ACCESS_KEY_SECRET")}
        key = self.options.access_key
        if key is not None:
            env["ACCESS_KEY_ID"] = key.key_id
            env["ACCESS_KEY_SECRET"] = key.secret.reveal()
        return env

    def cloud(self) -> Cloud:
        if self._cloud is None:
            config = CloudConfig(region=self.options.region, api_endpoint=self.options.api_endpoint,
                                 metadata_url=self.options.metadata_url)
            try:
                self._cloud = build_cloud(config, self.cloud_env())
            except ConfigError as error:
                raise StepBlocked(str(error)) from None
        return self._cloud

    def etcd(self) -> EtcdClient:
        """The cluster's etcd; as its root user once the installer has turned authentication on."""
        if self._etcd is None:
            password = self.fs.read(ETCD_ROOT_PASSWORD)
            auth: dict[str, Any] = {"username": "root", "password": Secret(password.strip())} if password else {}
            if self.etcd_factory is not None:
                self._etcd = self.etcd_factory(**auth)
            else:
                opts = self.options

                def local(path: str) -> str | None:
                    return str(self.fs.path(path)) if path else None

                self._etcd = EtcdClient([e.strip() for e in opts.etcd_endpoints.split(",") if e.strip()],
                                        ca_file=local(opts.etcd_cafile), cert_file=local(opts.etcd_certfile),
                                        key_file=local(opts.etcd_keyfile), **auth)
        return self._etcd

    def reconnect_etcd(self) -> None:
        """Log in again at the next use (authentication was just turned on)."""
        if self._etcd is not None:
            self._etcd.close()
            self._etcd = None

    def etcd_configured(self) -> bool:
        """Whether this machine has what it takes to reach etcd (an injected client or the cert files)."""
        if self.etcd_factory is not None:
            return True
        opts = self.options
        return all(not p or self.fs.exists(p) for p in (opts.etcd_cafile, opts.etcd_certfile, opts.etcd_keyfile))

    def close(self) -> None:
        if self._etcd is not None:
            self._etcd.close()
        if self._cloud is not None:
            self._cloud.api.close()
            self._cloud.metadata.close()

    # -- flannel on this node ----------------------------------------------------------

    def subnet_env(self) -> dict[str, str]:
        return parse_subnet_env(self.fs.read(SUBNET_ENV) or "")

    def flannel_network(self) -> ipaddress.IPv4Network | None:
        """The pod network: subnet.env, else what the install recorded, else ``None`` (unknown)."""
        for value in (self.subnet_env().get("FLANNEL_NETWORK"), self.state.settings.get("pod_cidr")):
            if value:
                try:
                    return ipaddress.IPv4Network(value)
                except ValueError:
                    continue
        return None

    def node_subnet(self) -> ipaddress.IPv4Network | None:
        value = self.subnet_env().get("FLANNEL_SUBNET")
        if not value:
            return None
        try:
            return ipaddress.IPv4Interface(value).network
        except ValueError:
            return None

    def kubectl(self, *args: str) -> list[str]:
        return ["kubectl", "--kubeconfig", str(self.fs.path(ADMIN_KUBECONFIG)), *args]
