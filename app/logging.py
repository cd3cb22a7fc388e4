"""JSON-lines logging. Log records name routes, statuses and timings; never resource content,
query strings, identifiers or anything else that could carry PHI."""

from __future__ import annotations

import logging
import sys
import time

import orjson

__all__ = ["access_log", "configure_logging"]

_access_direct = False  # set by configure_logging: access lines go straight to stderr


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in (
            "request_id",
            "method",
            "route",
            "status",
            "ms",
            "error",
            # HL7v2 ingestion (app/hl7/service.py): ids and counts only, never content
            "journal_id",
            "sender",
            "control_id",
            "message_type",
            "ack_code",
            "resources",
            "transport",
            "peer",
            # SQLite log checkpoints (app/db.py)
            "wal_bytes_before",
            "wal_bytes_after",
            "busy",
            # intermediary registry (app/adapters): names and outcomes, never credentials
            "intermediary",
            "check_status",
            "failed",
            # event notifications (app/events/dispatcher.py): ids, kinds and timings only
            "delivery_id",
            "event_id",
            "target",
            "channel",
            "attempts",
            "outcome",
            "delay_ms",
        ):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        return orjson.dumps(out).decode()


def configure_logging(level: str = "INFO") -> None:
    global _access_direct
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter())
    root = logging.getLogger("dxf")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    _access_direct = root.isEnabledFor(logging.INFO)


_access_logger = logging.getLogger("dxf.http")


def access_log(*, request_id: str, method: str, route: str, status: int, started: float) -> None:
    """One line per request. With configure_logging's JSON output it is written directly (a
    LogRecord per request costs as much as a point read); otherwise it goes through logging."""
    ms = round((time.perf_counter() - started) * 1000, 2)
    fields = {
        "request_id": request_id,
        "method": method,
        "route": route,
        "status": status,
        "ms": ms,
    }
    if _access_direct:
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
            "level": "info",
            "logger": "dxf.http",
            "msg": "request",
            **fields,
        }
        sys.stderr.write(orjson.dumps(line).decode() + "\n")
    elif _access_logger.isEnabledFor(logging.INFO):
        _access_logger.info("request", extra=fields)
