"""Logs for operators: one format for every runtime logger, plain text or JSON (`NMDC_LOG_FORMAT`), with the
request id of the API request a line was written for.

A JSON line is one object whose first keys are always `time` (ISO 8601, UTC, milliseconds), `level` (upper
case: DEBUG, INFO, WARNING, ERROR, CRITICAL), `logger` and `message`, then the line's own fields. `make dev`
holds every process it starts to that schema: what they cannot be configured to write (uvicorn's supervisor,
Dagster's own JSON, the code server's plain lines) is rewritten by `normalize_line`.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id: ContextVar[str | None] = ContextVar("nmdc_request_id", default=None)
"""The id of the API request being answered (see `api.middleware.RequestTelemetry`)."""

# Attributes every LogRecord has; anything else was passed in `extra=` and goes into the JSON line. uvicorn's
# `color_message` (the message again, with terminal colour codes) is left out: it is noise to a log system.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request_id", "color_message"}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, and the record's `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": _iso(datetime.fromtimestamp(record.created, UTC)),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "request_id", None):
            line["request_id"] = record.request_id
        line.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """The plain format, with `[request id]` after the level when there is one."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        rid = getattr(record, "request_id", None)
        return text.replace(f" {record.levelname} ", f" {record.levelname} [{rid}] ", 1) if rid else text


def configure(log_format: str = "text", level: int = logging.INFO, *, everything: bool = False) -> None:
    """Send the runtime's logs (and uvicorn's) to standard error in `log_format`: "text" or "json".

    `everything`: every logger's too (the root's handler) and Python's warnings, for a process whose every
    line must be in the format (`make dev`'s supervisor).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(_RequestIdFilter())
    for name in ("nmdc_runtime", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False
        logger.setLevel(level)
    if everything:
        logging.getLogger().handlers = [handler]
        logging.captureWarnings(True)
    # Each request gets one line from the API's own middleware instead (with its request id).
    logging.getLogger("uvicorn.access").disabled = True


# What the processes `make dev` starts write when they are not writing our JSON.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_LEVEL = "|".join(LEVELS)
_UVICORN = re.compile(rf"^({_LEVEL}):\s+(.*)$")
"""uvicorn's own format (its supervisor process logs before any of our code runs): `INFO:     message`."""
_DAGSTER = re.compile(rf"^(\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{{4}}) - (\S+) - ({_LEVEL}) - (.*)$")
"""Dagster's plain format (the code server's sensor lines): `2026-12-01 10:00:00 +0000 - dagster - INFO - message`."""
_TEXT = re.compile(rf"^(\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{{3}}) ({_LEVEL}) (?:\[(\S+)\] )?(\S+): (.*)$")
"""Our own text format (TEXT_FORMAT), local time."""
_LEVEL_NAMES = {"warn": "WARNING", "fatal": "CRITICAL", "exception": "ERROR", "err": "ERROR"}


def _level(value: Any) -> str:
    name = str(value or "INFO").strip()
    return _LEVEL_NAMES.get(name.lower(), name.upper())


def _time(value: Any, default: datetime) -> str:
    """`value` (ISO 8601, or seconds since the epoch) as our `time`; `default` when it is neither."""
    try:
        if isinstance(value, int | float):
            return _iso(datetime.fromtimestamp(value, UTC))
        moment = datetime.fromisoformat(str(value))
        return _iso(moment if moment.tzinfo else moment.astimezone())
    except (TypeError, ValueError, OverflowError, OSError):
        return _iso(default)


def _from_json(line: dict[str, Any], now: datetime, source: str) -> dict[str, Any]:
    """A JSON line of another schema (Dagster's: `event`, `level` in lower case, `timestamp`) in ours."""
    fields = {k: v for k, v in line.items() if k != "color_message"}

    def take(*names: str) -> Any:
        """The first of these keys the line has (all of them removed from its fields)."""
        found = [fields.pop(name) for name in names if name in fields]
        return found[0] if found else None

    message = take("message", "event", "msg")
    logger = take("logger", "name")
    return {
        "time": _time(take("time", "timestamp", "asctime"), now),
        "level": _level(take("level", "levelname", "severity")),
        "logger": source if logger is None else str(logger),
        "message": "" if message is None else _ANSI.sub("", str(message)),
        **fields,
    }


class LineNormalizer:
    """Rewrites each line one child process prints as one JSON object of our schema (see the module docstring).

    Keeps one piece of state: a Python traceback printed as plain text is several lines, each an ERROR.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self._in_traceback = False

    def __call__(self, raw: str, now: datetime | None = None) -> dict[str, Any] | None:
        """The line as an object of our schema with `process` (the child's name); None for a blank line."""
        now = now or datetime.now(UTC)
        line = _ANSI.sub("", raw).rstrip("\r\n")
        if not line.strip():
            return None
        record = self._parse(line, now)
        record.setdefault("process", self.source)
        return record

    def _parse(self, line: str, now: datetime) -> dict[str, Any]:
        if line.startswith("{"):
            try:
                parsed = json.loads(line)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                self._in_traceback = False
                return _from_json(parsed, now, self.source)
        if self._in_traceback and (line[:1].isspace() or line.startswith("Traceback")):
            return self._plain("ERROR", line, now)
        if line.startswith("Traceback (most recent call last)"):
            self._in_traceback = True
            return self._plain("ERROR", line, now)
        if self._in_traceback:
            # The traceback's last line, the exception itself.
            self._in_traceback = False
            return self._plain("ERROR", line, now)
        if match := _UVICORN.match(line):
            return {"time": _iso(now), "level": match[1], "logger": "uvicorn.error", "message": match[2]}
        if match := _DAGSTER.match(line):
            stamp = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S %z")
            return {"time": _iso(stamp), "level": match[3], "logger": match[2], "message": match[4]}
        if match := _TEXT.match(line):
            stamp = datetime.strptime(f"{match[1]}.{match[2]}", "%Y-%m-%d %H:%M:%S.%f").astimezone()
            record = {"time": _iso(stamp), "level": match[3], "logger": match[5], "message": match[6]}
            return record | ({"request_id": match[4]} if match[4] else {})
        return self._plain("INFO", line, now)

    def _plain(self, level: str, line: str, now: datetime) -> dict[str, Any]:
        return {"time": _iso(now), "level": level, "logger": self.source, "message": line}
