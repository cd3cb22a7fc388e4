"""The `dxf-bridge` command: serve, migrate, token, import-apcd, synth."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from app.settings import Settings

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dxf-bridge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the FHIR API")
    serve.add_argument("--host", help="bind address (default: DXF_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: DXF_PORT, 8080)")

    sub.add_parser("migrate", help="apply database migrations (alembic upgrade head)")

    token = sub.add_parser("token", help="print an access token signed with the server's key")
    token.add_argument("--scope", required=True, help='e.g. "system/*.cruds" or "patient/*.rs"')
    token.add_argument("--patient", help="Patient id for patient/ scopes (launch context)")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    token.add_argument("--subject", default="dxf-bridge-cli", help="the token's sub claim")

    apcd = sub.add_parser(
        "import-apcd", help="import APCD-CDL files (ME, MC, PC, DC, PV) into the FHIR store"
    )
    apcd.add_argument("paths", nargs="+", metavar="PATH", help="CDL files, imported in order")
    apcd.add_argument("--layout", help="CDL version or layout CSV (default: DXF_APCD_LAYOUT)")
    apcd.add_argument("--delimiter", help="field delimiter (default: DXF_APCD_DELIMITER, '|')")
    apcd.add_argument("--dry-run", action="store_true", help="check and map, store nothing")
    apcd.add_argument("--report", type=Path, help="write line-level errors (.json, else CSV)")
    apcd.add_argument("--batch-lines", type=int, help="lines per transaction")
    apcd.add_argument(
        "--no-progress", action="store_true", help="no progress bar even on a terminal"
    )

    synth = sub.add_parser("synth", help="write synthetic test data")
    synth_sub = synth.add_subparsers(dest="kind", required=True)
    synth_apcd = synth_sub.add_parser("apcd", help="seeded synthetic APCD-CDL files")
    synth_apcd.add_argument("outdir", type=Path, metavar="OUTDIR")
    synth_apcd.add_argument("--members", type=int, required=True)
    synth_apcd.add_argument("--seed", type=int, default=1)
    synth_apcd.add_argument("--bad-share", type=float, default=0.01, help="share of bad lines")
    synth_apcd.add_argument("--medical-lines", type=int, help="MC file size in lines")
    synth_apcd.add_argument("--column-row", action="store_true", help="add a column-name row")

    args = parser.parse_args(argv)
    if args.command == "synth":
        return _synth(args)
    settings = Settings()
    if args.command == "serve":
        return _serve(settings, args.host, args.port)
    if args.command == "migrate":
        from app.migrate import upgrade_url

        upgrade_url(settings.database_url)
        print(f"database is at the latest schema ({_safe_url(settings.database_url)})")
        return 0
    if args.command == "token":
        return _token(settings, args)
    if args.command == "import-apcd":
        return _import_apcd(settings, args)
    return 2


def _synth(args: argparse.Namespace) -> int:
    from app.apcd.synth import write_apcd_files

    if args.members < 1 or not 0 <= args.bad_share < 1:
        print("--members must be positive and --bad-share in [0, 1)", file=sys.stderr)
        return 2
    result = write_apcd_files(
        args.outdir,
        members=args.members,
        seed=args.seed,
        bad_share=args.bad_share,
        medical_lines=args.medical_lines,
        column_row=args.column_row,
    )
    for kind, path in result.files.items():
        print(f"{path}: {result.lines[kind]:,} {kind} lines, {result.bad_lines[kind]:,} bad")
    return 0


def _import_apcd(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from app.apcd.importer import ApcdImporter, ImportOptions
    from app.apcd.layout import LayoutError, load_layout
    from app.apcd.links import parse_link_rules
    from app.apcd.report import ProgressBar, summary, write_report
    from app.auth.policy import AccessPolicy, ScopeGrant
    from app.db import Database
    from app.logging import configure_logging
    from app.store.repository import FhirRepository

    configure_logging(settings.log_level)
    options = ImportOptions(
        layout=args.layout or settings.apcd_layout,
        delimiter=args.delimiter or settings.apcd_delimiter,
        batch_lines=args.batch_lines or settings.apcd_batch_lines,
        dry_run=args.dry_run,
        link_rules=parse_link_rules(settings.apcd_link_identifiers),
        validation_workers=settings.apcd_validation_workers,
    )
    if len(options.delimiter) != 1 or options.batch_lines < 1:
        print("--delimiter must be one character and --batch-lines positive", file=sys.stderr)
        return 2
    try:
        load_layout(options.layout)
    except LayoutError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    missing = [p for p in args.paths if not Path(p).is_file()]
    if missing:
        print(f"not a file: {', '.join(missing)}", file=sys.stderr)
        return 2
    progress = ProgressBar() if sys.stderr.isatty() and not args.no_progress else None

    async def run() -> list:  # type: ignore[type-arg]
        db = Database(
            settings.database_url,
            pool_size=settings.db_pool_size,
            sqlite_synchronous=settings.sqlite_synchronous,
        )
        try:
            policy = AccessPolicy((ScopeGrant("system", "*", frozenset("cruds")),))
            repo = FhirRepository(db, policy=policy, base_url=settings.fhir_base_url)
            importer = ApcdImporter(repo, options, progress=progress)
            done = await importer.import_files(args.paths)
            print(summary(done))
            if args.report:
                count = await write_report(args.report, done, importer.all_errors)
                print(f"report: {count:,} row(s) written to {args.report}")
            return done
        finally:
            await db.dispose()

    from sqlalchemy.exc import DBAPIError

    try:
        results = asyncio.run(run())
    except DBAPIError as exc:
        # no statement text or parameters: they can hold values from the files
        print(
            f"database error ({type(exc.orig).__name__}); is the database reachable and migrated "
            "(dxf-bridge migrate)? Batches committed before the error stay, and running the "
            "same command again resumes.",
            file=sys.stderr,
        )
        return 1
    return 1 if any(r.status == "rejected" for r in results) else 0


def _safe_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


def _token(settings: Settings, args: argparse.Namespace) -> int:
    from app.auth.keys import load_or_create_signing_keys
    from app.auth.tokens import issue_token

    if args.ttl <= 0:
        print("--ttl must be positive", file=sys.stderr)
        return 2
    keys, _ = load_or_create_signing_keys(settings.signing_key_file)
    print(
        issue_token(
            keys,
            issuer=settings.issuer,
            audience=settings.fhir_base_url,
            scope=args.scope,
            subject=args.subject,
            patient=args.patient,
            ttl_seconds=args.ttl,
        )
    )
    return 0


_BANNER = """\
dxf-bridge {version}: FHIR R4 API at {base}
Every request except {base}/metadata needs a Bearer token. Get one (signed with the key in
{keyfile}) and try the API:

    TOKEN=$({cmd} token --scope "system/*.cruds")
    curl -s -H "Authorization: Bearer $TOKEN" {base}/Patient
    curl -s -X POST -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/fhir+json" \\
         -d '{{"resourceType":"Patient","name":[{{"family":"Example"}}]}}' {base}/Patient
"""


def _command_name() -> str:
    """How the user invoked us: `.venv/bin/dxf-bridge` under make run, `dxf-bridge` when on PATH."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "dxf-bridge"
    if os.path.basename(argv0) != "dxf-bridge":
        return "dxf-bridge"
    resolved = shutil.which("dxf-bridge")
    if resolved and os.path.realpath(resolved) == os.path.realpath(argv0):
        return "dxf-bridge"
    return os.path.relpath(argv0) if not os.path.isabs(argv0) else argv0


def _serve(settings: Settings, host: str | None, port: int | None) -> int:
    import uvicorn

    from app import __version__
    from app.container import build_container
    from app.logging import configure_logging
    from app.main import create_app

    configure_logging(settings.log_level)
    container = build_container(settings)
    print(
        _BANNER.format(
            version=__version__,
            base=settings.fhir_base_url,
            keyfile=settings.signing_key_file,
            cmd=_command_name(),
        ),
        flush=True,
    )
    app = create_app(settings, container=container)
    uvicorn.run(
        app,
        host=host or settings.host,
        port=port or settings.port,
        access_log=False,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
