"""The machine's files as the installer sees them: every path under one root.

``HostFS("/")`` is the machine itself. ``HostFS(tmpdir)`` (``--root DIR``) puts
every file the installer reads or writes under ``DIR``: ``/etc/os-release`` is
``DIR/etc/os-release``, ``/proc/swaps`` is ``DIR/proc/swaps``. That is how plans
and rendered files are tested without touching the host.

Writes are atomic (a temporary file in the same directory, then a rename) and
compare first: writing the same content again changes nothing and says so.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


class HostFS:
    def __init__(self, root: str | Path = "/") -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"HostFS({str(self.root)!r})"

    @property
    def is_real(self) -> bool:
        return self.root.resolve() == Path("/")

    def path(self, host_path: str) -> Path:
        """Where ``host_path`` (an absolute path on the machine) lives under the root."""
        if not host_path.startswith("/"):
            raise ValueError(f"host paths are absolute, got {host_path!r}")
        return self.root / host_path.lstrip("/")

    def exists(self, host_path: str) -> bool:
        return self.path(host_path).exists()

    def read(self, host_path: str) -> str | None:
        """The file's text, ``None`` when it does not exist (or cannot be read)."""
        try:
            return self.path(host_path).read_text()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError):
            return None

    def same(self, host_path: str, content: str, mode: int | None = None) -> bool:
        """True when the file exists with exactly ``content`` (and ``mode``, when given)."""
        if self.read(host_path) != content:
            return False
        return mode is None or (self.path(host_path).stat().st_mode & 0o7777) == mode

    def write(self, host_path: str, content: str, mode: int = 0o644) -> bool:
        """Write atomically; returns False when the file already had this content and mode."""
        if self.same(host_path, content, mode):
            return False
        target = self.path(host_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            # The mode is set before any content is written: a key is never readable by others.
            os.fchmod(fd, mode)
            with os.fdopen(fd, "w") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return True

    def remove(self, host_path: str) -> bool:
        """Remove a file or a directory tree; False when there was nothing to remove."""
        target = self.path(host_path)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
            return True
        try:
            target.unlink()
        except FileNotFoundError:
            return False
        return True

    def listdir(self, host_path: str) -> list[str]:
        try:
            return sorted(p.name for p in self.path(host_path).iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []
