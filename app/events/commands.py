"""`dxf-bridge events ...`: deliveries (list, retry, deliver-once, stats), receivers, the topic.

Output names delivery and event ids, kinds, targets, endpoints without credentials, statuses,
delays and reasons; never resource content.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from app.db import Database
from app.events import admin
from app.events.topic import KINDS, topic_definition
from app.settings import Settings
from app.store.base import utc_now_ms

__all__ = ["add_arguments", "run"]


def add_arguments(sub: Any) -> None:
    events = sub.add_parser("events", help="ADT event notifications: deliveries and receivers")
    ev = events.add_subparsers(dest="events_command", required=True)
    listing = ev.add_parser("list", help="list deliveries, newest first")
    listing.add_argument("--status", choices=["pending", "delivered", "dead"])
    listing.add_argument("--limit", type=int, default=100)
    retry = ev.add_parser("retry", help="send dead deliveries again (fresh attempt count)")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("ids", nargs="*", type=int, default=[], metavar="ID")
    which.add_argument("--all-dead", action="store_true")
    ev.add_parser(
        "deliver-once", help="route new events and attempt every due delivery now, then exit"
    )
    ev.add_parser("stats", help="deliveries by status; delay median, p99, max; queue age")
    ev.add_parser("topic", help="print the ADT topic (SubscriptionTopic JSON)")
    receiver = ev.add_parser("receiver", help="MLLP and FHIR-message receivers of every event")
    rec = receiver.add_subparsers(dest="receiver_command", required=True)
    add = rec.add_parser("add", help="register (or replace) a receiver")
    add.add_argument("name")
    how = add.add_mutually_exclusive_group(required=True)
    how.add_argument("--mllp", metavar="URL", help="mllp://host:port or mllps://host:port")
    how.add_argument("--fhir-message", metavar="URL", help="the receiver's $process-message URL")
    add.add_argument("--kinds", help=f"comma-separated, of: {','.join(KINDS)} (default: all)")
    add.add_argument("--panel", metavar="GROUP_ID", help="only events of this Group's members")
    add.add_argument(
        "--header", action="append", default=[], help='"Name: value" (FHIR message; repeatable)'
    )
    rec.add_parser("list", help="list receivers")
    remove = rec.add_parser("remove", help="remove a receiver (its pending deliveries die)")
    remove.add_argument("name")


def _database(settings: Settings) -> Database:
    return Database(
        settings.database_url,
        pool_size=settings.db_pool_size,
        sqlite_synchronous=settings.sqlite_synchronous,
    )


async def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.events_command == "topic":
        print(json.dumps(topic_definition(), indent=2))
        return 0
    db = _database(settings)
    try:
        if args.events_command == "list":
            return await _list(db, args.status, args.limit)
        if args.events_command == "retry":
            count = await admin.retry(db, args.ids, all_dead=args.all_dead)
            print(f"{count} delivery(ies) back to pending")
            return 0 if count or args.all_dead else 1
        if args.events_command == "stats":
            return await _stats(db)
        if args.events_command == "deliver-once":
            from app.events.dispatcher import Dispatcher

            dispatcher = Dispatcher(db, settings)
            try:
                result = await dispatcher.run_once()
            finally:
                await dispatcher.stop()
            print(
                f"routed={result.routed} delivered={result.delivered} retry={result.retried} "
                f"dead={result.dead} subscriptions_activated={result.activated}"
            )
            return 0
        return await _receivers(db, args)
    finally:
        await db.dispose()


async def _list(db: Database, status: str | None, limit: int) -> int:
    rows = await admin.list_deliveries(db, status=status, limit=limit)
    print(
        "id\tevent\ttrigger\tkind\ttarget\tchannel\tendpoint\tstatus\tattempts\tcreated_at\t"
        "delivered_at\tdelay_ms\tlast_error"
    )
    for r in rows:
        print(
            f"{r.id}\t{r.event_id}\t{r.trigger}\t{r.kind}\t{r.target_kind}/{r.target_id}\t"
            f"{r.channel}\t{r.endpoint}\t{r.status}\t{r.attempts}\t{r.created_at.isoformat()}\t"
            f"{r.delivered_at.isoformat() if r.delivered_at else ''}\t"
            f"{'' if r.delay_ms is None else r.delay_ms}\t{r.last_error or ''}"
        )
    return 0


async def _stats(db: Database) -> int:
    stats = await admin.delay_stats(db)
    counts = " ".join(f"{k}={v}" for k, v in sorted(stats.counts.items())) or "none"
    print(f"deliveries: {counts}; events not yet routed: {stats.unrouted}")
    if stats.delivered:
        print(
            f"delay (message received -> delivered), {stats.delivered} delivered: "
            f"median {stats.median_ms} ms, p99 {stats.p99_ms} ms, max {stats.max_ms} ms"
        )
    age = stats.pending_age_seconds(utc_now_ms())
    if age is not None:
        print(f"oldest pending delivery waits for {age:.0f} s")
    return 0


async def _receivers(db: Database, args: argparse.Namespace) -> int:
    command = args.receiver_command
    if command == "list":
        print("name\tchannel\tendpoint\tkinds\tpanel\tactive")
        for r in await admin.list_receivers(db):
            endpoint = r.endpoint.partition("?")[0]
            print(
                f"{r.name}\t{r.channel}\t{endpoint}\t{r.kinds or 'all'}\t{r.panel or ''}\t"
                f"{r.active}"
            )
        return 0
    if command == "remove":
        if await admin.remove_receiver(db, args.name):
            print(f"receiver {args.name} removed")
            return 0
        print(f"no receiver {args.name}", file=sys.stderr)
        return 1
    channel, endpoint = (
        ("hl7v2-mllp", args.mllp) if args.mllp else ("fhir-message", args.fhir_message)
    )
    try:
        await admin.add_receiver(
            db,
            args.name,
            channel,
            endpoint,
            kinds=(args.kinds or "").split(","),
            panel=args.panel,
            headers=args.header,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"receiver {args.name} ({channel}) registered")
    return 0
