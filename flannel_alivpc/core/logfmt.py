"""How every command logs: the level and format flags, text or one JSON object per line.

``--log-level`` takes the level in any case; klog's ``-v N`` (flanneld has it)
turns on debug output when no level is given. ``--log-format json`` writes one
object per line with ``time``, ``level``, ``logger`` and ``message``, then the
structured fields a caller passed with ``extra=`` (``table_id``,
``destination``, ``instance``, ...), so log pipelines need no regexes.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import IO, Any

from flannel_alivpc.core import flags

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

LOG_LEVEL = flags.Flag("log-level", flags.choice(*LEVELS, aliases={"warn": "warning"}), None,
                       "debug, info, warning or error, in any case (default info, or debug with -v)",
                       metavar="LEVEL")
LOG_FORMAT = flags.Flag("log-format", flags.choice(*FORMATS), "text",
                        "text, or json: one object per line (time, level, logger, message, fields)",
                        metavar="FORMAT")
VERBOSITY = flags.Flag("v", flags.integer(0), 0, "klog verbosity as flanneld takes it: 1 or more means "
                       "--log-level debug unless a level is given", metavar="N")
LOG_FLAGS = (LOG_LEVEL, LOG_FORMAT, VERBOSITY)

_HANDLER_NAME = "flannel-alivpc"

# Attributes every LogRecord has; anything else on a record came in through ``extra=``.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def effective_level(level: str | None, verbosity: int) -> str:
    if level:
        return level
    return "debug" if verbosity > 0 else "info"


def configure(level: str | None = None, log_format: str = "text", verbosity: int = 0,
              stream: IO[str] | None = None) -> None:
    """Send every logger's records to ``stream`` (stderr) at the chosen level and format."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    # Only our own earlier handler is replaced: others (pytest's capture, an embedding program's) stay.
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(effective_level(level, verbosity).upper())
