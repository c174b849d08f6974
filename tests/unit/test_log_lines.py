"""`make dev`'s JSON logs: each format its children write becomes one object of our schema (nmdc_runtime/logs.py)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest

from nmdc_runtime.logs import JsonFormatter, LineNormalizer

NOW = datetime(2026, 12, 1, 10, 0, 0, 123000, tzinfo=UTC)
KEYS = ["time", "level", "logger", "message"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # Dagster's JSON (`--log-format json`): event, lower-case level, timestamp.
        (
            '{"event": "Sensor x skipped: idle", "logger": "dagster.daemon.SensorDaemon", "level": "info", '
            '"timestamp": "2026-12-06T02:00:19.383228Z"}',
            {
                "time": "2026-12-06T02:00:19.383+00:00",
                "level": "INFO",
                "logger": "dagster.daemon.SensorDaemon",
                "message": "Sensor x skipped: idle",
            },
        ),
        # Dagster's plain lines (the code server's sensor log).
        (
            "2026-12-06 02:00:39 +0000 - dagster - WARNING - __repository__ - runtime_health - recorded",
            {
                "time": "2026-12-06T02:00:39.000+00:00",
                "level": "WARNING",
                "logger": "dagster",
                "message": "__repository__ - runtime_health - recorded",
            },
        ),
        # uvicorn's supervisor, before any of our code runs in it, with its colours.
        (
            "\x1b[32mINFO\x1b[0m:     Uvicorn running on \x1b[1mhttp://127.0.0.1:8000\x1b[0m",
            {
                "time": "2026-12-01T10:00:00.123+00:00",
                "level": "INFO",
                "logger": "uvicorn.error",
                "message": "Uvicorn running on http://127.0.0.1:8000",
            },
        ),
        # Our own JSON, passed through; uvicorn's colour copy of the message dropped.
        (
            '{"time": "2026-12-01T09:59:59.001+00:00", "level": "INFO", "logger": "uvicorn.error", '
            '"message": "Started server process [7]", "color_message": "Started server process [\\u001b[36m%d"}',
            {
                "time": "2026-12-01T09:59:59.001+00:00",
                "level": "INFO",
                "logger": "uvicorn.error",
                "message": "Started server process [7]",
            },
        ),
        # Anything else: the child's name as the logger.
        (
            "something printed",
            {
                "time": "2026-12-01T10:00:00.123+00:00",
                "level": "INFO",
                "logger": "dagster",
                "message": "something printed",
            },
        ),
    ],
)
def test_each_format_becomes_one_object_of_our_schema(line, expected):
    record = LineNormalizer("dagster")(line + "\n", now=NOW)
    assert record == {**expected, "process": "dagster"}
    assert list(record)[:4] == KEYS


def test_fields_of_a_json_line_are_kept_after_the_four_keys():
    record = LineNormalizer("api")(
        '{"message": "GET /health 200", "status": 200, "level": "info", "time": 0}', now=NOW
    )
    assert list(record) == [*KEYS, "status", "process"]
    assert record["time"] == "1970-01-01T00:00:00.000+00:00"


def test_a_plain_traceback_is_error_lines_and_blank_lines_are_dropped():
    normalize = LineNormalizer("api")
    lines = [
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        "ValueError: bad",
        "",
        "next",
    ]
    records = [normalize(line, now=NOW) for line in lines]
    assert [r and r["level"] for r in records] == ["ERROR", "ERROR", "ERROR", None, "INFO"]


def test_our_json_formatter_leaves_out_uvicorns_color_message():
    record = logging.makeLogRecord(
        {"name": "uvicorn.error", "msg": "Started server process [%d]", "args": (7,), "levelname": "INFO"}
    )
    record.color_message = "Started server process [\x1b[36m%d\x1b[0m]"
    line = json.loads(JsonFormatter().format(record))
    assert list(line) == KEYS and line["message"] == "Started server process [7]"
