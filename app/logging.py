"""JSON-lines logging. Log records name routes, statuses and timings; never resource content,
query strings, identifiers or anything else that could carry PHI."""

from __future__ import annotations

import logging
import sys
import time

import orjson

__all__ = ["configure_logging"]


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("request_id", "method", "route", "status", "ms", "error"):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        return orjson.dumps(out).decode()


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter())
    root = logging.getLogger("dxf")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
