"""What the import command shows and writes: a progress bar on a terminal, the end-of-run
summary, and the line-level error report (CSV or JSON, chosen by the file's extension).

Reports carry file names, line numbers, element ids and reasons, never values (values may be
PHI).
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TextIO

import orjson

from app.apcd.importer import FileResult
from app.apcd.reader import LineError

__all__ = ["ProgressBar", "summary", "write_report"]


class ProgressBar:
    """`file [#####.....] 45% 12,345/27,000 lines 5,432 lines/s ETA 0:03` on one line."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 30, min_interval: float = 0.2):
        self.stream = stream
        self.width = width
        self.min_interval = min_interval
        self._file = ""
        self._t0 = 0.0
        self._start_line = 0
        self._last = 0.0

    def __call__(self, file: str, done: int, total: int) -> None:
        now = time.monotonic()
        if file != self._file:
            if self._file:
                self.stream.write("\n")
            self._file, self._t0, self._start_line, self._last = file, now, done, 0.0
        if done < total and now - self._last < self.min_interval:
            return
        self._last = now
        share = done / total if total else 1.0
        filled = int(self.width * share)
        elapsed = max(now - self._t0, 1e-6)
        rate = (done - self._start_line) / elapsed
        eta = (total - done) / rate if rate > 0 else 0.0
        self.stream.write(
            f"\r{file} [{'#' * filled}{'.' * (self.width - filled)}] {share:4.0%} "
            f"{done:,}/{total:,} lines {rate:,.0f} lines/s ETA {int(eta) // 60}:{int(eta) % 60:02d}"
        )
        if done >= total:
            self.stream.write("\n")
            self._file = ""
        self.stream.flush()


def summary(results: Sequence[FileResult]) -> str:
    rows = [
        f"{r.file}: {r.status}{f' ({r.reason})' if r.reason else ''}"
        + (
            f"; {r.file_type} lines read {r.lines_read:,}, loaded {r.loaded:,}, rejected "
            f"{r.rejected:,}; resources created {r.created:,}, updated {r.updated:,}, "
            f"unchanged {r.unchanged:,}, deleted {r.deleted:,}; {r.seconds:.1f} s"
            if r.status in ("imported", "dry-run")
            else ""
        )
        for r in results
    ]
    total = sum(r.lines_read for r in results)
    seconds = sum(r.seconds for r in results)
    rows.append(
        f"total: {len(results)} file(s), lines read {total:,}, loaded "
        f"{sum(r.loaded for r in results):,}, rejected {sum(r.rejected for r in results):,}, "
        f"resources created {sum(r.created for r in results):,}, updated "
        f"{sum(r.updated for r in results):,}, {seconds:.1f} s"
        + (f" ({total / seconds:,.0f} lines/s)" if seconds > 0 and total else "")
    )
    return "\n".join(rows)


ErrorSource = Callable[[FileResult], AsyncIterator[LineError]]


async def _rows(
    results: Sequence[FileResult], errors_of: ErrorSource
) -> AsyncIterator[dict[str, object]]:
    for r in results:
        if r.status == "rejected":
            yield {"file": r.file, "line": None, "field_id": "", "reason": r.reason}
            continue
        async for e in errors_of(r):
            yield {"file": e.file, "line": e.line, "field_id": e.field_id, "reason": e.reason}


async def write_report(path: Path, results: Sequence[FileResult], errors_of: ErrorSource) -> int:
    """Write the line errors (and rejected files) to `path`, streaming: JSON (an array of
    objects) when the name ends in .json, else CSV. Returns the number of rows."""
    count = 0
    with path.open("w", newline="", encoding="utf-8") as f:
        if path.suffix.lower() == ".json":
            f.write("[")
            async for row in _rows(results, errors_of):
                f.write(("\n  " if count == 0 else ",\n  ") + orjson.dumps(row).decode())
                count += 1
            f.write("\n]\n" if count else "]\n")
        else:
            writer = csv.DictWriter(f, ["file", "line", "field_id", "reason"])
            writer.writeheader()
            async for row in _rows(results, errors_of):
                writer.writerow(row)
                count += 1
    return count
