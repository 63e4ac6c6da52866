"""iptables through its own commands: the only module that runs iptables-save and iptables-restore.

flannel installs its rules the same way (iptables-restore), and so do
kube-proxy and the CNI plugins, so the rules land in whichever backend
(legacy or nf_tables) the node's iptables uses. ``-w`` waits for the xtables
lock other tools hold instead of failing.
"""

from __future__ import annotations

import re
import shutil
import subprocess

from flannel_alivpc.core.errors import ConfigError, FlannelAliVpcError

_TIMEOUT = 30.0


class IptablesError(FlannelAliVpcError):
    """An iptables command failed; the message carries its output."""


def _version(text: str) -> tuple[int, ...]:
    match = re.search(r"v(\d+)\.(\d+)\.(\d+)", text)
    return tuple(int(part) for part in match.groups()) if match else ()


class Iptables:
    """The node's IPv4 iptables; raises ``ConfigError`` at construction when the commands are missing."""

    def __init__(self) -> None:
        found = {name: shutil.which(name) for name in ("iptables", "iptables-save", "iptables-restore")}
        missing = [name for name, path in found.items() if path is None]
        if missing:
            raise ConfigError(f"{', '.join(missing)} not found on PATH; install the iptables package")
        self._iptables = str(found["iptables"])
        self._save = str(found["iptables-save"])
        self._restore = str(found["iptables-restore"])
        self._random_fully: bool | None = None

    def _run(self, args: list[str], stdin: str | None = None) -> str:
        try:
            done = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise IptablesError(f"{' '.join(args)}: {error}") from None
        if done.returncode != 0:
            output = (done.stderr or done.stdout).strip()
            raise IptablesError(f"{' '.join(args)} exited with {done.returncode}: {output}")
        return done.stdout

    def save(self, table: str) -> str:
        return self._run([self._save, "-t", table])

    def restore(self, text: str) -> None:
        """Apply ``text`` without flushing the tables it names (chains it declares are emptied)."""
        self._run([self._restore, "-w", "--noflush"], stdin=text)

    @property
    def random_fully(self) -> bool:
        """Whether MASQUERADE --random-fully is available: iptables >= 1.6.2, go-iptables' HasRandomFully.

        flannel asks only the binary's version (the kernel has had the NAT flag since 3.13)."""
        if self._random_fully is None:
            self._random_fully = _version(self._run([self._iptables, "--version"])) >= (1, 6, 2)
        return self._random_fully
