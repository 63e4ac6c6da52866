"""How the installer runs commands: one protocol, a real implementation and a recording one.

Every command the installer runs (``kubeadm``, ``apt-get``, ``kubectl``,
``iptables``, ...) goes through a ``CommandRunner``. ``SubprocessRunner`` runs
it; ``RecordingRunner`` records it and answers from a script, so a test sees
exactly what would have run, in order; ``NetnsRunner`` runs another runner's
commands inside a network namespace.

Secrets never go on a command line: a command that needs one gets it on
standard input (``kubectl apply -f -``) or from a file. ``CommandFailed``
carries the command, its exit status and the tail of its output, which is what
the operator needs to see to fix and retry.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from flannel_alivpc.core.errors import FlannelAliVpcError

OUTPUT_TAIL = 4000
"""How much of a failed command's output an error keeps (the end, where the reason is)."""


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def output(self) -> str:
        """stdout and stderr together, as an operator would have seen them."""
        return "\n".join(part.rstrip("\n") for part in (self.stdout, self.stderr) if part.strip())


def format_command(argv: Sequence[str]) -> str:
    return shlex.join(argv)


class CommandFailed(FlannelAliVpcError):
    """A command exited non-zero (or could not be started)."""

    def __init__(self, result: CommandResult, reason: str = "") -> None:
        self.result = result
        what = reason or f"exited with status {result.returncode}"
        super().__init__(f"`{format_command(result.argv)}` {what}")

    @property
    def output_tail(self) -> str:
        text = self.result.output
        return text if len(text) <= OUTPUT_TAIL else "..." + text[-OUTPUT_TAIL:]


class CommandRunner(Protocol):
    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run ``argv`` (no shell), feeding ``input`` on stdin.

        With ``check`` a non-zero exit raises ``CommandFailed``; without it the
        result is returned whatever the status. A missing program is exit
        status 127, as in a shell.
        """
        ...


class SubprocessRunner:
    """Runs commands on this machine."""

    def __init__(self, env: Mapping[str, str] | None = None, default_timeout: float = 1800.0) -> None:
        self.env = dict(env) if env is not None else None
        self.default_timeout = default_timeout

    def run(self, argv: Sequence[str], *, input: str | None = None, check: bool = True,
            timeout: float | None = None) -> CommandResult:
        args = tuple(argv)
        try:
            done = subprocess.run(args, input=input, capture_output=True, text=True, env=self.env,
                                  timeout=timeout or self.default_timeout, check=False)
        except FileNotFoundError:
            result = CommandResult(args, 127, "", f"{args[0]}: command not found")
        except subprocess.TimeoutExpired as error:
            result = CommandResult(args, 124, _text(error.stdout), _text(error.stderr))
            raise CommandFailed(result, f"did not finish within {error.timeout:g} s") from None
        else:
            result = CommandResult(args, done.returncode, done.stdout, done.stderr)
        if check and not result.ok:
            raise CommandFailed(result)
        return result


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


@dataclass(frozen=True)
class RecordedCall:
    argv: tuple[str, ...]
    input: str | None

    @property
    def command(self) -> str:
        return format_command(self.argv)


Responder = Callable[[tuple[str, ...], "str | None"], "CommandResult | None"]


@dataclass
class RecordingRunner:
    """Records every command and answers from a script instead of running it.

    ``respond(prefix, ...)`` sets the answer for commands starting with
    ``prefix`` (the most recently added matching rule wins); ``on(function)``
    adds a computed answer. Commands matching no rule succeed with no output.
    ``calls`` is the record, in order.
    """

    calls: list[RecordedCall] = field(default_factory=list)
    _rules: list[Responder] = field(default_factory=list)

    def respond(self, prefix: Sequence[str], *, returncode: int = 0, stdout: str = "",
                stderr: str = "") -> None:
        wanted = tuple(prefix)

        def rule(argv: tuple[str, ...], input: str | None) -> CommandResult | None:
            if argv[:len(wanted)] == wanted:
                return CommandResult(argv, returncode, stdout, stderr)
            return None

        self._rules.append(rule)

    def on(self, responder: Responder) -> None:
        self._rules.append(responder)

    def run(self, argv: Sequence[str], *, input: str | None = None, check: bool = True,
            timeout: float | None = None) -> CommandResult:
        args = tuple(argv)
        self.calls.append(RecordedCall(args, input))
        result = CommandResult(args, 0)
        for rule in reversed(self._rules):
            answer = rule(args, input)
            if answer is not None:
                result = answer
                break
        if check and not result.ok:
            raise CommandFailed(result)
        return result

    @property
    def commands(self) -> list[str]:
        return [call.command for call in self.calls]

    def ran(self, *prefix: str) -> list[RecordedCall]:
        """The calls whose argv starts with ``prefix``."""
        return [call for call in self.calls if call.argv[:len(prefix)] == prefix]


@dataclass
class NetnsRunner:
    """Runs each command of ``inner`` inside the named network namespace (``ip netns exec``)."""

    inner: CommandRunner
    netns: str

    def run(self, argv: Sequence[str], *, input: str | None = None, check: bool = True,
            timeout: float | None = None) -> CommandResult:
        result = self.inner.run(("ip", "netns", "exec", self.netns, *argv), input=input, check=False,
                                timeout=timeout)
        if not result.ok and f'exec of "{argv[0]}" failed: No such file' in result.stderr:
            # A missing program is 127 here too, as the protocol promises.
            result = CommandResult(result.argv, 127, result.stdout, result.stderr)
        if check and not result.ok:
            raise CommandFailed(result)
        return result
