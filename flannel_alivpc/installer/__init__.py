"""``flannel-alivpc install``: set up (or tear down) a Kubernetes node with flannel-alivpc.

The safe successor of the 2017 guide's kubemgr.sh: ordered, idempotent steps
with a check and an apply each, a dry run, a state file for resuming, keys
kept out of argv and logs. Also home of the manifests and the RAM policy
(``manifests``, ``ram``), which the installer applies and the repository ships.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``install`` subcommand (imported lazily: the daemon does not pay for it)."""
    from flannel_alivpc.installer.cli import add_parser as add

    add(subparsers)


__all__ = ["add_parser"]
