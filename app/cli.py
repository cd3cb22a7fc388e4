"""The `dxf-bridge` command: serve, migrate, token, mllp, ingest-hl7, hl7, conformance."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence

from app.settings import Settings

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dxf-bridge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the FHIR API")
    serve.add_argument("--host", help="bind address (default: DXF_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: DXF_PORT, 8080)")
    serve.add_argument("--workers", type=int, help="server processes (default: DXF_WORKERS, 1)")
    serve.add_argument(
        "--mllp",
        action="store_true",
        help="also run the MLLP listener in the same process (or set DXF_MLLP_ENABLED=true)",
    )

    sub.add_parser("migrate", help="apply database migrations (alembic upgrade head)")
    sub.add_parser(
        "analyze", help="refresh the database's query planner statistics (after a bulk load)"
    )

    token = sub.add_parser("token", help="print an access token signed with the server's key")
    token.add_argument("--scope", required=True, help='e.g. "system/*.cruds" or "patient/*.rs"')
    token.add_argument("--patient", help="Patient id for patient/ scopes (launch context)")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    token.add_argument("--subject", default="dxf-bridge-cli", help="the token's sub claim")

    mllp = sub.add_parser("mllp", help="run the HL7v2 MLLP listener")
    mllp.add_argument("--host", help="bind address (default: DXF_MLLP_HOST, 127.0.0.1)")
    mllp.add_argument("--port", type=int, help="port (default: DXF_MLLP_PORT, 2575; 0 = any)")

    ingest = sub.add_parser("ingest-hl7", help="ingest files of HL7v2 messages (FHS/BHS too)")
    ingest.add_argument("files", nargs="+", metavar="FILE")

    hl7 = sub.add_parser("hl7", help="the HL7v2 journal")
    hl7_sub = hl7.add_subparsers(dest="hl7_command", required=True)
    hl7_list = hl7_sub.add_parser("list", help="list journaled messages, newest first")
    hl7_list.add_argument(
        "--status", choices=["received", "processed", "error", "rejected", "conflict"]
    )
    hl7_list.add_argument("--limit", type=int, default=100)
    reprocess = hl7_sub.add_parser("reprocess", help="map journaled messages again")
    which = reprocess.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", type=int, help="journal id")
    which.add_argument(
        "--all-failed",
        action="store_true",
        help="every message in status error (and received ones left by a crash)",
    )

    conformance = sub.add_parser(
        "conformance", help="check a FHIR server against its own CapabilityStatement"
    )
    _conformance_arguments(conformance)

    args = parser.parse_args(argv)
    settings = Settings()
    if args.command == "serve":
        if args.mllp:
            settings = settings.model_copy(update={"mllp_enabled": True})
        return _serve(settings, args.host, args.port, args.workers)
    if args.command in ("mllp", "ingest-hl7", "hl7"):
        import asyncio

        from app.hl7 import commands

        return asyncio.run(commands.run(settings, args))
    if args.command == "migrate":
        from app.migrate import upgrade_url

        upgrade_url(settings.database_url)
        print(f"database is at the latest schema ({_safe_url(settings.database_url)})")
        return 0
    if args.command == "analyze":
        from app.migrate import analyze_url

        analyze_url(settings.database_url)
        print(f"planner statistics refreshed ({_safe_url(settings.database_url)})")
        return 0
    if args.command == "token":
        return _token(settings, args)
    if args.command == "conformance":
        from conformance.cli import run as run_conformance

        return run_conformance(args)
    return 2


def _conformance_arguments(parser: argparse.ArgumentParser) -> None:
    # the kit is a client of the server, shipped beside it: imported only for this command
    from conformance.cli import add_arguments

    add_arguments(parser)


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


def _serve(settings: Settings, host: str | None, port: int | None, workers: int | None) -> int:
    import uvicorn

    from app import __version__
    from app.container import build_container
    from app.logging import configure_logging
    from app.main import create_app

    workers = workers or settings.workers
    if workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    container = build_container(settings)  # creates the signing key before any worker starts
    print(
        _BANNER.format(
            version=__version__,
            base=settings.fhir_base_url,
            keyfile=settings.signing_key_file,
            cmd=_command_name(),
        ),
        flush=True,
    )
    if settings.mllp_enabled:
        if workers > 1:
            print(
                "the MLLP listener runs in one process: serve it with --workers 1, or run "
                "`dxf-bridge mllp` beside a multi-worker API",
                file=sys.stderr,
            )
            return 2
        tls = " (TLS)" if settings.mllp_tls_cert_file else ""
        print(
            f"HL7v2 MLLP listener on {settings.mllp_host}:{settings.mllp_port}{tls}; "
            f"POST {settings.base_url}/hl7v2 takes single messages too.\n",
            flush=True,
        )
    options: dict[str, object] = {
        "host": host or settings.host,
        "port": port or settings.port,
        "access_log": False,
        "log_level": settings.log_level.lower(),
        "proxy_headers": True,
    }
    if workers == 1:
        uvicorn.run(create_app(settings, container=container), **options)  # type: ignore[arg-type]
    else:
        # each worker process builds its own app and database engines from DXF_* settings
        uvicorn.run(
            "app.main:app_from_environment",
            factory=True,
            workers=workers,
            **options,  # type: ignore[arg-type]
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
