"""`dxf-bridge conformance BASE_URL ...`: run the kit from the command line.

Exit status 0 when no check failed, 1 when any did, 2 for usage errors (bad options, an
unreadable key file, a server that cannot be reached).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import httpx
from joserfc.errors import JoseError

from conformance.model import Outcome
from conformance.registry import GROUPS
from conformance.report import write_report
from conformance.runner import run_kit
from conformance.smart import load_private_key

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "base_url", metavar="BASE_URL", help="the FHIR base, e.g. https://host/fhir"
    )
    auth = parser.add_mutually_exclusive_group()
    auth.add_argument("--token", help="a Bearer access token to send")
    auth.add_argument("--client-id", help="SMART Backend Services client id (needs --key)")
    parser.add_argument("--key", type=Path, help="the client's private key (JWK JSON or PEM)")
    parser.add_argument(
        "--scope", default="system/*.cruds", help="scopes to request with --client-id"
    )
    parser.add_argument(
        "--read-only", action="store_true", help="read and search probes only; create nothing"
    )
    parser.add_argument("--report", type=Path, help="write FILE.json or FILE.html")
    parser.add_argument(
        "--only", help=f"run only these groups (comma-separated): {', '.join(GROUPS)}"
    )


def run(args: argparse.Namespace) -> int:
    if bool(args.client_id) != bool(args.key):
        print("--client-id and --key go together", file=sys.stderr)
        return 2
    if args.report and args.report.suffix.lower() not in (".json", ".html", ".htm"):
        print("--report must name a .json or .html file", file=sys.stderr)
        return 2
    only = [g.strip() for g in args.only.split(",") if g.strip()] if args.only else None
    if only and set(only) - set(GROUPS):
        print(f"--only: unknown group; known: {', '.join(GROUPS)}", file=sys.stderr)
        return 2
    try:
        key = load_private_key(args.key) if args.key else None
    except (OSError, ValueError, JoseError) as exc:
        print(f"cannot read the key: {exc}", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(
            run_kit(
                args.base_url,
                token=args.token,
                client_id=args.client_id,
                key=key,
                scope=args.scope,
                read_only=args.read_only,
                only=only,
            )
        )
    except httpx.HTTPError as exc:
        print(f"cannot talk to {args.base_url}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    for result in report.results:
        if result.outcome is Outcome.FAIL:
            print(f"FAIL {result.id}: {result.reason}")
    print(
        f"{report.count(Outcome.PASS)} passed, {report.count(Outcome.FAIL)} failed, "
        f"{report.count(Outcome.SKIP)} skipped in {report.seconds:.1f} s"
    )
    if report.leftovers:
        print(f"not cleaned up: {', '.join(report.leftovers)}")
    if args.report:
        write_report(report, args.report)
        print(f"report written to {args.report}")
    return 1 if report.failed else 0
