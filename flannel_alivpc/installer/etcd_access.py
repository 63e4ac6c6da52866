"""Least privilege in etcd mode: the route daemons' etcd identity reaches flannel's prefix and nothing else.

The choice, and why: etcd's own role-based access control on the cluster's
etcd. A role ``flannel-alivpc`` may read and write the prefix only
(``/coreos.com/network/``: leases, config, writer locks, cluster id,
overflow), and the daemons' user, ``flannel-alivpc``, holds only that role.
A separate etcd with its own CA would isolate flannel too, but it is one more
quorum to run, back up and upgrade on every master, and clusters of the 2017
guide already share one; with RBAC the node credential is useless outside
the prefix, and the same confinement works on a dedicated etcd as well.

kubeadm's etcd authenticates clients by certificate: etcd then takes the
certificate's CN as the user. The daemons' certificate has CN
``flannel-alivpc`` (``cluster.EtcdClientCert``); the CNs kubeadm's own
clients use (kube-apiserver, the health checks) get the ``root`` role before
authentication is turned on, so the control plane keeps full access; a
``root`` user with a random password (kept 0600 on the master) is what etcd
requires to enable authentication, and what the installer itself logs in as
afterwards. Every step can be repeated: existing users, roles and grants are
left as they are, and turning authentication on twice is a no-op.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from flannel_alivpc.clients.etcd import EtcdClient
from flannel_alivpc.core.secrets import Secret

ROLE = "flannel-alivpc"
USER = "flannel-alivpc"
ROOT = "root"
KUBEADM_CLIENTS = ("kube-apiserver-etcd-client", "kube-etcd-healthcheck-client")
"""The certificate CNs of kubeadm's etcd clients: they must stay root once authentication is on."""


def prefix_range(prefix: str) -> str:
    """The key prefix the role covers: flannel's prefix as a directory (``/coreos.com/network/``)."""
    return prefix.rstrip("/") + "/"


def confine_to_prefix(client: EtcdClient, prefix: str, *, root_password: Secret, user: str = USER,
                      user_password: Secret | None = None, root_users: Sequence[str] = ()) -> None:
    """Make ``user`` able to use ``prefix`` only, then turn authentication on (last, so nothing locks us out).

    ``user_password`` None: the user authenticates by certificate only (its
    password is random and kept nowhere).
    """
    client.ensure_user(ROOT, root_password, "root")
    for other in root_users:
        client.ensure_user(other, Secret(secrets.token_urlsafe(24)), "root")
    client.ensure_prefix_role(ROLE, prefix_range(prefix))
    client.ensure_user(user, user_password or Secret(secrets.token_urlsafe(24)), ROLE)
    client.enable_auth()


def is_confined(client: EtcdClient, prefix: str) -> bool:
    """Whether the role exists with exactly the prefix's read-write permission."""
    key = prefix_range(prefix).encode()
    end = key[:-1] + bytes([key[-1] + 1])
    return client.role_prefixes(ROLE) == [(key, end, "READWRITE")]
