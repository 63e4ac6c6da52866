"""Ordered, idempotent steps and the loop that runs them (or, with --dry-run, only shows them).

Each step has ``check`` (read-only: is it already done?) and ``apply`` (make
it so). The loop asks every step in order; a done step is skipped, any other
is applied and recorded in the state file, so a re-run after a failure goes
straight to the step that failed. A failure stops the run with the command,
its output and how to retry.

With ``--dry-run`` only ``check`` runs: each step prints "already done" or
"would run" with the commands and files it would use, and nothing changes
(not even the state file).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from flannel_alivpc.core.errors import ConfigError, FlannelAliVpcError
from flannel_alivpc.installer.hostfs import HostFS
from flannel_alivpc.installer.runner import CommandFailed, CommandRunner

STATE_FILE = "/var/lib/flannel-alivpc/install-state.json"
STATE_VERSION = 1
PINNED_SETTINGS = ("pod_cidr", "service_cidr", "backend", "kubernetes_version")
"""Settings a re-run must repeat: changing them under a running cluster breaks it."""


class StepBlocked(FlannelAliVpcError):
    """A step cannot run here and no command would fix it (an operator must act)."""


class InstallFailed(FlannelAliVpcError):
    """A step failed; the message says which, why, and how to retry."""


@dataclass(frozen=True)
class Status:
    done: bool
    detail: str = ""
    done_word: str = "already done"


class Step(Protocol):
    name: str
    title: str
    always: bool
    """Run even when ``check`` says done (printing the join command)."""

    def check(self, ctx: Any) -> Status: ...

    def plan(self, ctx: Any) -> list[str]:
        """The commands and files ``apply`` would use, for --dry-run."""
        ...

    def apply(self, ctx: Any) -> None: ...


@dataclass
class State:
    """What earlier runs did on this machine: ``/var/lib/flannel-alivpc/install-state.json``."""

    node_type: str = ""
    settings: dict[str, str] = field(default_factory=dict)
    completed: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, fs: HostFS) -> State:
        text = fs.read(STATE_FILE)
        if text is None:
            return cls()
        try:
            data = json.loads(text)
            return cls(node_type=str(data.get("node_type", "")),
                       settings={str(k): str(v) for k, v in dict(data.get("settings", {})).items()},
                       completed={str(k): str(v) for k, v in dict(data.get("completed", {})).items()})
        except (ValueError, TypeError, AttributeError):
            raise ConfigError(f"the state file {fs.path(STATE_FILE)} is not valid JSON: move it away "
                              f"(the steps' checks will find what is already done) and re-run") from None

    def save(self, fs: HostFS) -> None:
        fs.write(STATE_FILE, json.dumps({"version": STATE_VERSION, "node_type": self.node_type,
                                         "settings": self.settings, "completed": self.completed},
                                        indent=2, sort_keys=True) + "\n", mode=0o600)

    def mark(self, step: str) -> None:
        self.completed[step] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def pin(self, node_type: str, settings: Mapping[str, str]) -> None:
        """Record the settings of this run, refusing ones that contradict an earlier run."""
        if self.node_type and self.node_type != node_type:
            raise ConfigError(f"this machine was set up as a {self.node_type} ({STATE_FILE}); to make it a "
                              f"{node_type}, tear it down first: flannel-alivpc install --node-type down --yes")
        for name in PINNED_SETTINGS:
            old, new = self.settings.get(name), settings.get(name)
            if old and new and old != new:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} {new} differs from {old}, used when this machine was set up "
                                  f"({STATE_FILE}): repeat {flag} {old}, or tear down first "
                                  f"(flannel-alivpc install --node-type down --yes)")
        self.node_type = node_type
        self.settings.update({k: v for k, v in settings.items() if v})


@dataclass
class Reporter:
    """Where the plan prints: progress on ``out``, warnings on ``err``."""

    out: TextIO
    err: TextIO
    warnings: list[str] = field(default_factory=list)

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        print(f"WARNING: {text}", file=self.err, flush=True)


@dataclass
class RunContext:
    """What the plan loop itself needs of the installer's context."""

    fs: HostFS
    runner: CommandRunner
    report: Reporter
    state: State
    dry_run: bool
    retry_command: str
    save_state: bool = True


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def _failure(step: Step, error: Exception, run: RunContext) -> InstallFailed:
    lines = [f"step {step.name!r} ({step.title}) failed:"]
    if isinstance(error, CommandFailed):
        lines.append(f"  command: {error}")
        tail = error.output_tail
        lines.append("  output:" if tail else "  output: (none)")
        if tail:
            lines.append(_indent(tail))
    else:
        lines.append(_indent(str(error), "  "))
    lines.append("to retry: fix the cause above, then run the same command again; the steps already done are "
                 "skipped" + (f" ({run.fs.path(STATE_FILE)})" if run.save_state else "") + ":")
    lines.append(f"  {run.retry_command}")
    return InstallFailed("\n".join(lines))


_UNCHECKABLE: tuple[type[Exception], ...] = (FlannelAliVpcError, OSError)


def run_plan(steps: list[Step], ctx: Any, run: RunContext,
             before_apply: Callable[[], None] | None = None) -> bool:
    """Run (or with ``run.dry_run`` show) ``steps`` in order; True when nothing would fail.

    Raises ``InstallFailed`` when a step fails for real. ``before_apply`` runs
    once, before the first step that changes anything (it pins the state).
    """
    report = run.report
    total = len(steps)
    fine = True
    started = False
    done_before = [s.name for s in steps if s.name in run.state.completed]
    if done_before and not run.dry_run:
        report.say(f"resuming: {len(done_before)} of {total} steps were done by an earlier run")
    for number, step in enumerate(steps, 1):
        label = f"[{number}/{total}] {step.name}"
        try:
            status = step.check(ctx)
        except StepBlocked as error:
            if run.dry_run:
                report.say(f"{label}: would fail:\n{_indent(str(error))}")
                fine = False
                continue
            raise _failure(step, error, run) from None
        except _UNCHECKABLE as error:
            status = Status(False, f"cannot tell yet ({error})")
        detail = f" ({status.detail})" if status.detail else ""
        if status.done and not step.always:
            report.say(f"{label}: {status.done_word}{detail}")
            if not run.dry_run and run.save_state and step.name not in run.state.completed:
                run.state.mark(step.name)
                run.state.save(run.fs)
            continue
        if run.dry_run:
            try:
                lines = step.plan(ctx)
            except StepBlocked as error:
                # Its check could not tell, and what it would do depends on the same missing input.
                report.say(f"{label}: would fail:\n{_indent(str(error))}")
                fine = False
                continue
            report.say(f"{label}: would run: {step.title}{detail}")
            for line in lines:
                report.say(f"      {line}")
            continue
        if not started:
            started = True
            if before_apply is not None:
                before_apply()
        report.say(f"{label}: {step.title}")
        try:
            step.apply(ctx)
        except (FlannelAliVpcError, OSError) as error:
            if run.save_state:
                run.state.save(run.fs)
            raise _failure(step, error, run) from None
        if run.save_state:
            run.state.mark(step.name)
            run.state.save(run.fs)
    return fine
