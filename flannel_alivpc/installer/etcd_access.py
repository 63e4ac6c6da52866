"""Least privilege in etcd mode: the route daemons' etcd identity reaches flannel's prefix and nothing else.

The choice, and why: etcd's own role-based access control. A role ``flannel``
gets read-write on the prefix only (``/coreos.com/network/``: leases, config,
writer locks, cluster id) and the daemons' user (``flannel``) gets only that
role; a ``root`` user is needed to enable authentication at all. A separate
etcd with its own CA would isolate flannel too, but it is one more quorum to
run, back up and upgrade, and the old 2017 guide's clusters already share one;
with RBAC a node's credential is useless outside the prefix whichever etcd it
is, and the same commands work on a dedicated etcd. With client-certificate
authentication (kubeadm's etcd) etcd takes the certificate's CN as the user:
the daemons' certificate then has CN ``flannel`` and that user needs no
password (``--no-password``). Every other client of that etcd (kube-apiserver,
kubeadm's health checks) needs a user with the ``root`` role before
``auth enable`` — the plan says so, and enabling is the last step.

``access_commands`` is the plan as etcdctl argument lists: passwords never go
on a command line, they are written to etcdctl's stdin (``--interactive=false``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

ROLE = "flannel"
USER = "flannel"
ROOT = "root"


@dataclass(frozen=True)
class EtcdctlCommand:
    args: tuple[str, ...]
    stdin: str | None = field(default=None, repr=False)
    """A password for etcdctl to read, or None."""


def access_commands(prefix: str, *, root_password: str, user_password: str | None,
                    user: str = USER, other_root_users: tuple[str, ...] = ()) -> list[EtcdctlCommand]:
    """The etcdctl steps that confine ``user`` to ``prefix``, in order; ``auth enable`` last.

    ``user_password`` None makes a certificate-only user (its CN is its name).
    ``other_root_users`` (e.g. the kube-apiserver's certificate CN) keep full
    access once authentication is on.
    """
    base = prefix.rstrip("/") + "/"
    commands = [
        EtcdctlCommand(("user", "add", ROOT, "--interactive=false"), stdin=root_password + "\n"),
        EtcdctlCommand(("user", "grant-role", ROOT, "root")),
        EtcdctlCommand(("role", "add", ROLE)),
        EtcdctlCommand(("role", "grant-permission", ROLE, "--prefix=true", "readwrite", base)),
        EtcdctlCommand(("user", "add", user, "--interactive=false"), stdin=user_password + "\n")
        if user_password is not None else EtcdctlCommand(("user", "add", user, "--no-password")),
        EtcdctlCommand(("user", "grant-role", user, ROLE)),
    ]
    for other in other_root_users:
        commands += [EtcdctlCommand(("user", "add", other, "--no-password")),
                     EtcdctlCommand(("user", "grant-role", other, "root"))]
    commands.append(EtcdctlCommand(("auth", "enable")))
    return commands
