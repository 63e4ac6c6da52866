"""Named network namespaces, the way ``ip netns`` keeps them: a bind mount under /run/netns.

Plain syscalls through ctypes (no pyroute2 here, so a launcher that only needs
to enter a namespace starts fast). Entering a namespace with ``setns`` changes
only the calling thread, and a socket stays in the namespace it was created
in, so ``run_in_namespace`` runs a function in a short-lived thread inside a
namespace; sockets it returns keep working from any thread. The process itself
never changes namespace.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from flannel_alivpc.core.errors import FlannelAliVpcError

NETNS_RUN_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
_MS_BIND = 4096
_MS_REC = 16384
_MS_SHARED = 1 << 20
_MNT_DETACH = 2

T = TypeVar("T")

_libc: Any = None


class NamespaceError(FlannelAliVpcError):
    """A network namespace could not be created, entered or removed."""


def _c() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise NamespaceError(f"{what}: {os.strerror(code)} (errno {code})")


def namespace_path(name: str) -> Path:
    if not name or "/" in name or name in (".", ".."):
        raise NamespaceError(f"invalid network namespace name {name!r}")
    return NETNS_RUN_DIR / name


def list_namespaces() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_RUN_DIR.iterdir())
    except FileNotFoundError:
        return []


def namespace_exists(name: str) -> bool:
    return namespace_path(name).exists()


def enter_namespace(name: str) -> None:
    """Move the calling thread into namespace ``name`` (the rest of the process stays)."""
    path = namespace_path(name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NamespaceError(f"network namespace {name!r} does not exist") from None
    try:
        _check(_c().setns(fd, CLONE_NEWNET), f"entering network namespace {name!r}")
    finally:
        os.close(fd)


def run_in_namespace(name: str | None, function: Callable[[], T]) -> T:
    """``function()`` run in a fresh thread inside namespace ``name`` (the caller's when None)."""
    if name is None:
        return function()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            enter_namespace(name)
            box["result"] = function()
        except BaseException as error:  # handed to the caller's thread
            box["error"] = error

    thread = threading.Thread(target=target, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    result: T = box["result"]
    return result


def _prepare_run_dir() -> None:
    """Make /run/netns a shared mount point, as ``ip netns add`` does, so the bind mounts propagate."""
    NETNS_RUN_DIR.mkdir(parents=True, exist_ok=True)
    libc = _c()
    directory = str(NETNS_RUN_DIR).encode()
    if libc.mount(b"none", directory, b"none", _MS_SHARED | _MS_REC, None) == 0:
        return
    _check(libc.mount(directory, directory, b"none", _MS_BIND | _MS_REC, None), "bind-mounting /run/netns")
    _check(libc.mount(b"none", directory, b"none", _MS_SHARED | _MS_REC, None), "sharing /run/netns")


def create_namespace(name: str) -> None:
    """Create the empty network namespace ``name`` (fails if it exists)."""
    path = namespace_path(name)
    _prepare_run_dir()
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    except FileExistsError:
        raise NamespaceError(f"network namespace {name!r} already exists") from None

    def unshare_and_pin() -> None:
        libc = _c()
        _check(libc.unshare(CLONE_NEWNET), f"creating network namespace {name!r}")
        source = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
        _check(libc.mount(source, str(path).encode(), b"none", _MS_BIND, None),
               f"pinning network namespace {name!r}")

    try:
        # In a throwaway thread: unshare() moves only that thread into the new namespace.
        _in_thread(unshare_and_pin)
    except BaseException:
        _c().umount2(str(path).encode(), _MNT_DETACH)
        path.unlink(missing_ok=True)
        raise


def _in_thread(function: Callable[[], None]) -> None:
    box: dict[str, BaseException] = {}

    def target() -> None:
        try:
            function()
        except BaseException as error:
            box["error"] = error

    thread = threading.Thread(target=target, name="netns-create", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]


def delete_namespace(name: str) -> bool:
    """Unpin namespace ``name``; True if it existed. Idempotent.

    The kernel frees the namespace (and destroys its interfaces) once no
    process and no open socket refers to it any more.
    """
    path = namespace_path(name)
    if not path.exists():
        return False
    result = _c().umount2(str(path).encode(), _MNT_DETACH)
    if result != 0 and ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):
        code = ctypes.get_errno()
        raise NamespaceError(f"unmounting network namespace {name!r}: {os.strerror(code)}")
    path.unlink(missing_ok=True)
    return True


def _sysctl_path(key: str) -> str:
    # "net.ipv4.ip_forward", or "net/ipv6/conf/flannel.1/accept_ra" when a part holds a dot
    return "/proc/sys/" + (key if "/" in key else key.replace(".", "/"))


def write_sysctl(key: str, value: str | int, *, netns: str | None = None) -> None:
    """Write a net.* sysctl as seen from namespace ``netns``.

    /proc/sys/net shows the namespace of the thread that opens it.
    """
    path = _sysctl_path(key)

    def write() -> None:
        with open(path, "w", encoding="ascii") as handle:
            handle.write(str(value))

    run_in_namespace(netns, write)


def read_sysctl(key: str, *, netns: str | None = None) -> str:
    path = _sysctl_path(key)

    def read() -> str:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip()

    return run_in_namespace(netns, read)
