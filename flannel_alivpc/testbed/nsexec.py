"""Run a command inside a named network namespace: ``python -m flannel_alivpc.testbed.nsexec NS CMD...``.

What ``ip netns exec`` does for our purposes, without needing iproute2: the
launcher is single-threaded, so ``setns`` moves the whole process, and the
command it then ``exec``s starts in the namespace (its pid stays the
launcher's, so the caller can signal it directly).
"""

from __future__ import annotations

import os
import sys

from flannel_alivpc.clients.netns import NamespaceError, enter_namespace


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m flannel_alivpc.testbed.nsexec NAMESPACE COMMAND [ARG...]", file=sys.stderr)
        return 2
    name, command = argv[0], argv[1:]
    try:
        enter_namespace(name)
    except NamespaceError as error:
        print(f"nsexec: {error}", file=sys.stderr)
        return 1
    os.execvp(command[0], command)
    return 127  # not reached: exec replaces the process or raises


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
