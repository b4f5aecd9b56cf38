"""How `lockerctl serve` writes its log: one line per record, as text for a person or as one JSON
object per line for a log collector (`--log-format json`).

JSON fields: `time` (ISO 8601, UTC, milliseconds), `level` (`debug`, `info`, `warning`,
`error`, `critical`), `logger` (e.g. `lockerctl.serve`, `lockerctl.web`), `message`, and
`exc` (the traceback's text) only for an unexpected failure. The format is kept in
`$LOCKERCTL_LOG_FORMAT` so that the ingest process, which `serve` spawns, writes the same.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys

FORMATS = ("text", "json")
ENV = "LOCKERCTL_LOG_FORMAT"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        obj = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, ensure_ascii=False)


def make_handler(fmt: str | None = None) -> logging.Handler:
    fmt = fmt or os.environ.get(ENV) or "text"
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s serve: %(message)s", "%Y-%m-%d %H:%M:%S")
        )
    return handler
