"""Command-line flags that can also come from the environment, validated one way.

The model is flanneld's (coreos/pkg ``flagutil.SetFlagsFromEnv`` with the prefix
``FLANNELD``): a flag on the command line wins; otherwise a non-empty
``FLANNELD_<FLAG>`` variable (upper case, dashes as underscores); otherwise the
default. Booleans read as Go's ``strconv.ParseBool``, on the command line as
``--flag`` or ``--flag=false``. Go's single-dash spelling (``-etcd-endpoints``)
is rewritten to the double-dash one before parsing (``go_spelling``).

Every value goes through its flag's one converter, whether it came from argv or
from the environment, so types, ranges, choices, regexes and ports are checked
the same way, and an error names where the bad value came from.

Why hand code and not ConfigArgParse: that library hands environment values to
argparse as extra command-line words (appended after the subcommand, where a
parent's flag is unknown), so a bad value is reported against the flag and not
the variable, and its booleans are true/false/yes/no/1/0 rather than Go's set.
What is here uses argparse's public surface only: ``type=`` converters,
``SUPPRESS`` defaults (so "given" and "not given" can be told apart) and a
custom action for refusals.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import urlsplit

ENV_PREFIX = "FLANNELD"

GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})

Converter = Callable[[str], Any]


def go_bool(text: str) -> bool:
    """Go's strconv.ParseBool: 1, t, T, TRUE, true, True and their false twins, nothing else."""
    if text in GO_TRUE:
        return True
    if text in GO_FALSE:
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean: use true or false (or 1/0, t/f)")


def integer(low: int | None = None, high: int | None = None, unit: str = "") -> Converter:
    """A whole number, optionally within ``low..high``."""
    def convert(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        _check_range(text, value, low, high, unit)
        return value
    return convert


def number(low: float | None = None, high: float | None = None, unit: str = "") -> Converter:
    """A decimal number, optionally within ``low..high``."""
    def convert(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        _check_range(text, value, low, high, unit)
        return value
    return convert


def _check_range(text: str, value: float, low: float | None, high: float | None, unit: str) -> None:
    suffix = f" {unit}" if unit else ""
    if low is not None and high is not None and not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range: use {low:g} to {high:g}{suffix}")
    if low is not None and value < low:
        raise argparse.ArgumentTypeError(f"{text!r} is too small: use at least {low:g}{suffix}")
    if high is not None and value > high:
        raise argparse.ArgumentTypeError(f"{text!r} is too large: use at most {high:g}{suffix}")


port = integer(0, 65535)


def ip_address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None


def ipv4_address(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 address") from None


def regex(text: str) -> str:
    try:
        re.compile(text)
    except re.error as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid regular expression ({error})") from None
    return text


def text(value: str) -> str:
    return value


def non_empty(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("an empty value is not allowed here")
    return value.strip()


def choice(*names: str, aliases: Mapping[str, str] | None = None) -> Converter:
    """One of ``names``, in any case; ``aliases`` map other spellings onto them."""
    by_folded = {name.casefold(): name for name in names}
    by_folded.update({alias.casefold(): name for alias, name in (aliases or {}).items()})

    def convert(value: str) -> str:
        try:
            return by_folded[value.strip().casefold()]
        except KeyError:
            raise argparse.ArgumentTypeError(f"{value!r} is not one of {', '.join(names)}") from None
    return convert


def url(*schemes: str, default_scheme: str | None = None, path: bool = True) -> Converter:
    """A URL with one of ``schemes`` and a host (``default_scheme`` completes a bare host:port)."""
    def convert(value: str) -> str:
        item = value.strip()
        full = item if "://" in item or default_scheme is None else f"{default_scheme}://{item}"
        parts = urlsplit(full)
        if parts.scheme not in schemes:
            raise argparse.ArgumentTypeError(f"{item!r} is not a URL starting with "
                                             f"{' or '.join(s + '://' for s in schemes)}")
        try:
            parts.port  # noqa: B018 - urlsplit checks the port only when asked
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r} has an invalid port") from None
        if not parts.hostname:
            raise argparse.ArgumentTypeError(f"{item!r} has no host")
        if not path and parts.path.strip("/"):
            raise argparse.ArgumentTypeError(f"{item!r} has a path; give only scheme://HOST[:PORT]")
        return item
    return convert


def comma_list(item: Converter = text, *, allow_empty: bool = True) -> Converter:
    """Comma-separated values, blanks dropped, each checked by ``item``."""
    def convert(value: str) -> list[Any]:
        items = [item(part.strip()) for part in value.split(",") if part.strip()]
        if not items and not allow_empty:
            raise argparse.ArgumentTypeError(f"{value!r} is empty: give at least one value")
        return items
    return convert


@dataclass(frozen=True)
class Flag:
    """One flag: ``--name`` and ``FLANNELD_NAME``, its converter and default.

    ``dest`` is the attribute the value lands in (for the route daemon, the
    ``DaemonConfig`` field it fills). A ``boolean`` flag takes no value or
    ``=true|false``; a ``repeat`` flag may be given several times and collects a
    list (from the environment, one value, as flanneld's ``Set`` appends one).
    """

    name: str
    convert: Converter
    default: Any
    help: str
    dest: str = ""
    boolean: bool = False
    repeat: bool = False
    metavar: str | None = None

    @property
    def field(self) -> str:
        return self.dest or self.name.replace("-", "_")

    @property
    def option(self) -> str:
        return "--" + self.name

    @property
    def env_name(self) -> str:
        return f"{ENV_PREFIX}_{self.name.upper().replace('-', '_')}"

    def from_text(self, value: str) -> Any:
        converted = self.convert(value)
        return [converted] if self.repeat else converted


@dataclass(frozen=True)
class RefusedFlag:
    """A flag flanneld (or klog) knows that is refused here, with the sentence saying why."""

    name: str
    reason: str
    aliases: tuple[str, ...] = ()


class _Refuse(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, reason: str = "", **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs="?", default=argparse.SUPPRESS, **kwargs)
        self.reason = reason

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> NoReturn:
        parser.error(f"{option_string}: {self.reason}")


BEFORE = "before:"
"""Prefix of the attribute a parent parser stores its flags in, so a subcommand's own
defaults cannot overwrite them and the parent level can be told from the child's."""


def add_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, flags: Sequence[Flag], *,
              stored_as: str = "") -> None:
    """Declare ``flags`` with no default: absent ones are filled in by ``resolve``.

    ``stored_as`` prefixes the attribute (``BEFORE`` on a parent parser). A
    one-letter name (klog's ``v``) is declared as ``-v`` and ``--v``.
    """
    for flag in flags:
        kwargs: dict[str, Any] = {"dest": stored_as + flag.field, "default": argparse.SUPPRESS, "help": _help(flag)}
        if flag.boolean:
            kwargs.update(nargs="?", const=True, type=flag.convert, metavar="true|false")
        else:
            kwargs.update(type=flag.convert, metavar=flag.metavar or flag.name.split("-")[-1].upper())
            if flag.repeat:
                kwargs["action"] = "append"
        parser.add_argument(*([f"-{flag.name}"] if len(flag.name) == 1 else []), flag.option, **kwargs)


def go_spelling(argv: Sequence[str], names: Collection[str]) -> list[str]:
    """Go's flag package also takes ``-name`` and ``-name=value``: rewrite those to ``--name``.

    Done on the words, not by declaring ``-name`` options, because argparse
    matches a single-dash word by prefix against every single-dash option, so
    ``-s`` of a subcommand would turn ambiguous with ``-subnet-file``.
    """
    words = []
    for word in argv:
        name = word[1:].split("=", 1)[0]
        long_name = len(name) > 1 and word.startswith("-") and not word.startswith("--")
        words.append("-" + word if long_name and name in names else word)
    return words


def _help(flag: Flag) -> str:
    default = flag.default
    if isinstance(default, list):
        default = ",".join(str(v) for v in default)
    parts = [flag.help.replace("%", "%%")]
    if default not in (None, "", []):
        parts.append(f"(default {default})")
    parts.append(f"[env {flag.env_name}]")
    return " ".join(parts)


def add_refusals(parser: argparse.ArgumentParser, refused: Sequence[RefusedFlag]) -> None:
    """Flags that are recognised only to be refused with their sentence (rc 2)."""
    for flag in refused:
        for name in (flag.name, *flag.aliases):
            parser.add_argument(f"--{name}", action=_Refuse, reason=flag.reason, dest=f"refused:{name}",
                                help=argparse.SUPPRESS)


def given_before(namespace: argparse.Namespace) -> dict[str, Any]:
    """Remove the parent-level values from ``namespace`` and return them by field."""
    found = {}
    for key in [k for k in vars(namespace) if k.startswith(BEFORE)]:
        found[key.removeprefix(BEFORE)] = getattr(namespace, key)
        delattr(namespace, key)
    return found


def resolve(namespace: argparse.Namespace, flags: Sequence[Flag], env: Mapping[str, str],
            fail: Callable[[str], NoReturn], before: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Fill every flag into ``namespace``: argv after the subcommand, ``before`` it, env, default.

    Returns where each value came from (``--flag``, ``FLANNELD_FLAG`` or
    ``default``) for later messages; a bad environment value calls ``fail`` with
    a sentence naming the variable.
    """
    sources: dict[str, str] = {}
    earlier = before or {}
    for flag in flags:
        if hasattr(namespace, flag.field):
            sources[flag.field] = flag.option
        elif flag.field in earlier:
            setattr(namespace, flag.field, earlier[flag.field])
            sources[flag.field] = flag.option
        elif env.get(flag.env_name):
            try:
                value = flag.from_text(env[flag.env_name])
            except argparse.ArgumentTypeError as error:
                fail(f"environment variable {flag.env_name}: {error}")
            setattr(namespace, flag.field, value)
            sources[flag.field] = flag.env_name
        else:
            setattr(namespace, flag.field, list(flag.default) if isinstance(flag.default, list) else flag.default)
            sources[flag.field] = "default"
    return sources
