"""Server-assigned identifiers that sort by creation time: UUID version 7 (RFC 9562 §5.7).

Every index keyed on a resource id (the resource and history tables, the search index rows'
`(res_type, res_id, ...)` indexes, and within each token value the rows of that value) places a
new random (version 4) id at a random leaf of its B-tree. Once the tables outgrow the page
cache, each of those inserts reads a page from disk and dirties it, so a write transaction
touches one page per index row, and the log and checkpoints copy them all. A time-ordered id
lands at the right-hand end of those indexes instead: consecutive writes share the same few
pages, which stay cached, and a checkpoint copies each page once for many rows.

Layout (RFC 9562 §5.7): 48 bits of Unix time in milliseconds, version 7, 12 bits `rand_a`,
variant `10`, 62 random bits `rand_b`. `rand_a` is a per-process counter (§6.2, method 1)
started at a random value below 1,024 at each new millisecond, so ids made by one process are
strictly increasing even within a millisecond or when the clock steps back; the 62 random bits
keep ids of different processes apart and unguessable. The id tells when the resource was
created, to the millisecond, which `meta.lastUpdated` of its first version tells anyway.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

__all__ = ["time_ordered_uuid"]

_RAND_B_MASK = (1 << 62) - 1
_COUNTER_MAX = 0xFFF

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def time_ordered_uuid() -> uuid.UUID:
    """A new UUIDv7, greater than every one this process made before."""
    global _last_ms, _counter
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits: 62 for rand_b, 10 for a start
    with _lock:
        now = time.time_ns() // 1_000_000
        if now > _last_ms:
            _last_ms, _counter = now, rand >> 70
        elif _counter < _COUNTER_MAX:
            _counter += 1  # same millisecond, or the clock went back: keep counting
        else:
            _last_ms, _counter = _last_ms + 1, 0  # counter spent: borrow the next millisecond
        millis, counter = _last_ms, _counter
    value = (
        (millis & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76
        | counter << 64
        | 0b10 << 62
        | (rand & _RAND_B_MASK)
    )
    return uuid.UUID(int=value)
