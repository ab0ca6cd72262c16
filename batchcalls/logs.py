"""One log format for every process: logfmt-style lines (`key=value`), UTC timestamps, and the
ids of the batch and call a line is about written as `batch_id=... call_id=...` by the caller."""

from __future__ import annotations

import logging
import os
import sys
import time


class LineFormatter(logging.Formatter):
    converter = time.gmtime  # type: ignore[assignment]

    def format(self, record: logging.LogRecord) -> str:
        stamp = self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z"
        line = f"ts={stamp} level={record.levelname.lower()} logger={record.name} pid={record.process} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(level: str | None = None) -> None:
    """Send every logger's lines to stderr in the one format (`BATCHCALLS_LOG_LEVEL`, default INFO)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or os.environ.get("BATCHCALLS_LOG_LEVEL", "INFO"))
