"""Transient vs permanent: what no retry can fix ends the daemon within seconds (rc 2, one sentence);
only network failures are waited out, with one log line per change of state.
"""

from __future__ import annotations

import datetime
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from flannel_alivpc.cli import build_parser
from flannel_alivpc.clients.etcd import EtcdClient
from flannel_alivpc.core.errors import EtcdAuthError
from flannel_alivpc.core.retry import RetryPolicy
from flannel_alivpc.core.secrets import Secret
from flannel_alivpc.routed.config import check_local_files, config_from_args
from flannel_alivpc.routed.startup import wait_until_ready
from flannel_alivpc.testbed.etcd_server import EtcdServer
from tests.routed.support import etcdctl

FAST = RetryPolicy(max_attempts=1, base_delay=0.05, max_delay=0.2)


def _write_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return key


def _write_certificate(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flannel-alivpc test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now)
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def _daemon(*argv: str) -> tuple[int, str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLANNELD_") and not k.lower().endswith("_proxy")}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "flannel_alivpc", *argv], capture_output=True, text=True,
                          env=env, timeout=60, stdin=subprocess.DEVNULL)
    return done.returncode, done.stderr, time.monotonic() - started


def test_unusable_tls_files_end_the_daemon_at_once_with_a_sentence(tmp_path: Path) -> None:
    ca, cert, key = tmp_path / "ca.pem", tmp_path / "client.pem", tmp_path / "client.key"
    _write_certificate(ca, _write_key(tmp_path / "ca.key"))
    _write_certificate(cert, _write_key(tmp_path / "client-own.key"))
    _write_key(key)  # a key, but not the one the certificate was made for
    tls = ["--etcd-endpoints", "https://127.0.0.1:1", "--iface", "lo"]
    cases = [
        ([*tls, "--etcd-cafile", str(tmp_path / "missing.pem")], f"--etcd-cafile {tmp_path}/missing.pem: no such file"),
        ([*tls, "--etcd-cafile", str(key)], "not a PEM CA certificate"),
        ([*tls, "--etcd-cafile", str(ca), "--etcd-certfile", str(cert), "--etcd-keyfile", str(key)],
         "do not load as a certificate and its unencrypted key"),
    ]
    for argv, message in cases:
        rc, stderr, took = _daemon(*argv)
        assert rc == 2, stderr
        assert took < 15
        assert "Traceback" not in stderr
        (line,) = [line for line in stderr.splitlines() if " ERROR " in line]
        assert message in line, stderr
    # The certificate with its own key passes.
    args = build_parser(env={}).parse_args([*tls, "--etcd-cafile", str(ca), "--etcd-certfile", str(cert),
                                            "--etcd-keyfile", str(tmp_path / "client-own.key")])
    check_local_files(config_from_args(args, env={}), args)


def test_an_unreachable_etcd_is_waited_for_with_one_line_per_change(
        etcd_server: EtcdServer, caplog: pytest.LogCaptureFixture) -> None:
    etcd_server.stop()
    attempts = []
    stop = threading.Event()
    result: list[object] = []
    with EtcdClient([etcd_server.endpoint], timeout=1.0) as etcd:
        def step() -> object:
            attempts.append(time.monotonic())
            return etcd.get("/coreos.com/network/config")

        with caplog.at_level(logging.INFO, logger="flannel_alivpc.routed.startup"):
            waiter = threading.Thread(target=lambda: result.append(
                wait_until_ready(step, what="etcd", stop=stop, policy=FAST)))
            waiter.start()
            deadline = time.monotonic() + 20
            while len(attempts) < 4 and time.monotonic() < deadline:
                time.sleep(0.05)
            etcd_server.start()
            waiter.join(30)
            stop.set()
    assert not waiter.is_alive() and result == [None]  # the key is absent: get() answers None
    assert len(attempts) >= 4
    lines = [r.getMessage() for r in caplog.records if r.name == "flannel_alivpc.routed.startup"]
    assert len(lines) == 2, lines
    assert lines[0].startswith("waiting for etcd: ") and "no endpoint answered" in lines[0]
    assert lines[1].startswith("etcd: available after ")


def test_refused_etcd_credentials_are_not_retried(etcd_server: EtcdServer) -> None:
    etcdctl(etcd_server, "user", "add", "root:right-password")
    etcdctl(etcd_server, "auth", "enable")
    attempts = []
    with EtcdClient([etcd_server.endpoint], username="root", password=Secret("wrong-password"),
                    timeout=2.0) as etcd:
        def step() -> object:
            attempts.append(1)
            return etcd.get("/coreos.com/network/config")

        with pytest.raises(EtcdAuthError) as refused:
            wait_until_ready(step, what="the network config", stop=threading.Event(), policy=FAST)
    assert attempts == [1]
    assert "wrong-password" not in str(refused.value)
