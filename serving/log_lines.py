"""What the server prints: one JSON object per line, on stderr, and never a customer's data.

``offers serve`` hands uvicorn :func:`uvicorn_log_config`, so that its own loggers, the
``serving`` loggers and every library's (Feast, MLflow, redis, warnings) write JSON lines through
one handler; nothing prints plain text or a traceback. A line names what happened, the route
template and the error's type and frames, never a message or a path that may quote an id.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import traceback
from typing import Any

# The innermost frames: where the error was raised, not the framework's layers around it.
FRAMES_LOGGED = 8
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's copy of the message with terminal colours
}


def frames_of(error: BaseException) -> list[str]:
    """Where an error came from, as ``file:line function`` for each frame: a traceback without
    its text, since exception messages and source lines may quote the values being handled."""
    frames = traceback.extract_tb(error.__traceback__)[-FRAMES_LOGGED:]
    return [f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno} {frame.name}" for frame in frames]


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _RECORD_FIELDS:
                entry[name] = value
        if record.exc_info and record.exc_info[1] is not None:
            # The type and where it was raised, never the message or the source lines: either
            # may quote a customer's values.
            error = record.exc_info[1]
            entry["exception"] = {"type": type(error).__name__, "frames": frames_of(error)}
        return json.dumps(entry, default=str, ensure_ascii=False)


def _prints_json_lines(logger: logging.Logger) -> bool:
    return any(isinstance(handler.formatter, JsonLinesFormatter) for handler in logger.handlers)


def configure_logging(level: int = logging.INFO) -> None:
    """JSON lines on stderr for the ``serving`` loggers, once per process.

    Under ``offers serve`` every logger already writes JSON lines through the root; then Python's
    warnings, which print plain text of their own, are routed there too.
    """
    if _prints_json_lines(logging.getLogger()):
        logging.captureWarnings(True)
        return
    serving = logging.getLogger("serving")
    if _prints_json_lines(serving):
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLinesFormatter())
    serving.addHandler(handler)
    serving.setLevel(level)


def uvicorn_log_config(level: str = "WARNING") -> dict[str, Any]:
    """uvicorn's ``log_config``: every logger through one JSON-lines handler on stderr; the
    ``serving`` loggers from INFO (decisions, failures), the others from ``level``. uvicorn's
    access log is not configured here: ``offers serve`` turns it off (its lines carry paths,
    and paths carry customer ids)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json_lines": {"()": f"{__name__}.JsonLinesFormatter"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json_lines",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": {"level": level},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"level": level},
            "serving": {"level": "INFO"},
        },
        "root": {"handlers": ["stderr"], "level": level},
    }
