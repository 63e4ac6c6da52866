"""Running ``flannel-alivpc`` in-process the way a shell would: argv, an environment, rc and stderr."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pytest

from flannel_alivpc import cli


@dataclass(frozen=True)
class Outcome:
    rc: int
    stdout: str
    stderr: str


def run_cli(argv: Sequence[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
            env: Mapping[str, str] | None = None) -> Outcome:
    """``main(argv)`` with only ``env``'s FLANNELD_ variables set; exceptions other than exit propagate."""
    for name in [n for n in os.environ if n.startswith("FLANNELD_")]:
        monkeypatch.delenv(name)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    try:
        rc = cli.main(list(argv))
    except SystemExit as done:
        rc = done.code if isinstance(done.code, int) else 1
    captured = capsys.readouterr()
    return Outcome(rc, captured.out, captured.err)
