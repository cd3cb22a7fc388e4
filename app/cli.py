"""The `dxf-bridge` command: serve, migrate, analyze, token, mllp, ingest-hl7, hl7, events,
clients, users, launch, keys, import-apcd, synth, conformance, intermediaries."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
    _auth_commands(sub)
    from app.events.commands import add_arguments as _event_commands

    _event_commands(sub)
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

    conformance = sub.add_parser(
        "conformance", help="check a FHIR server against its own CapabilityStatement"
    )
    _conformance_arguments(conformance)
    _intermediary_commands(sub)

    args = parser.parse_args(argv)
    if args.command == "synth":
        return _synth(args)
    settings = Settings()
    if args.command == "serve":
        if args.mllp:
            settings = settings.model_copy(update={"mllp_enabled": True})
        return _serve(settings, args.host, args.port, args.workers)
    if args.command in ("mllp", "ingest-hl7", "hl7"):
        from app.hl7 import commands

        return asyncio.run(commands.run(settings, args))
    if args.command == "events":
        from app.events import commands as event_commands

        return asyncio.run(event_commands.run(settings, args))
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
    if args.command in ("clients", "users"):
        return asyncio.run(_registry(settings, args))
    if args.command == "launch":
        return _launch(settings, args)
    if args.command == "keys":
        return _keys(settings, args)
    if args.command == "import-apcd":
        return _import_apcd(settings, args)
    if args.command == "conformance":
        from conformance.cli import run as run_conformance

        return run_conformance(args)
    if args.command == "intermediaries":
        return asyncio.run(_intermediaries(settings, args))
    return 2


def _keys(settings: Settings, args: argparse.Namespace) -> int:
    from app.auth.keys import load_or_create_signing_keys, retire_signing_key, rotate_signing_keys

    path = settings.signing_key_file
    try:
        if args.action == "rotate":
            kid = rotate_signing_keys(path)
            print(f"new signing key {kid}; restart the server to sign with it")
        elif args.action == "retire":
            retire_signing_key(path, args.kid)
            print(f"key {args.kid} retired; restart the server")
        else:
            keys, _ = load_or_create_signing_keys(path)
            for key in keys.keyset.keys:
                print(key.kid)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _auth_commands(sub: Any) -> None:
    clients = sub.add_parser("clients", help="register SMART clients (apps, backend services)")
    csub = clients.add_subparsers(dest="action", required=True)
    add = csub.add_parser("add", help="register a client")
    add.add_argument("--client-id", required=True)
    add.add_argument(
        "--scope", required=True, help='the scopes it may be granted, e.g. "system/*.rs"'
    )
    key_source = add.add_mutually_exclusive_group()
    key_source.add_argument(
        "--jwks-file", help="its public keys, a JWKS file (confidential clients)"
    )
    key_source.add_argument("--jwks-url", help="where it publishes its JWKS (https)")
    add.add_argument(
        "--redirect-uri", action="append", default=[], help="an app-launch redirect URI (repeat)"
    )
    add.add_argument("--public", action="store_true", help="a public app (PKCE, no keys)")
    csub.add_parser("list", help="list registered clients")
    disable = csub.add_parser("disable", help="refuse a client from now on")
    disable.add_argument("--client-id", required=True)
    enable = csub.add_parser("enable", help="accept a disabled client again")
    enable.add_argument("--client-id", required=True)

    users = sub.add_parser("users", help="people who sign in at app launch")
    usub = users.add_subparsers(dest="action", required=True)
    uadd = usub.add_parser(
        "add", help="add a user; the password is read from stdin, or prompted for on a terminal"
    )
    uadd.add_argument("--username", required=True)
    uadd.add_argument("--fhir-user", help="the user's FHIR resource, e.g. Practitioner/123")

    keys = sub.add_parser("keys", help="rotate the server's signing key")
    ksub = keys.add_subparsers(dest="action", required=True)
    ksub.add_parser("rotate", help="add a new signing key; old keys keep verifying")
    ksub.add_parser("list", help="list key ids, the signing one first")
    retire = ksub.add_parser("retire", help="remove an old key (after its tokens expired)")
    retire.add_argument("--kid", required=True, help="write --kid=KID: key ids may begin with -")

    launch = sub.add_parser("launch", help="print an EHR launch value for a patient context")
    launch.add_argument("--patient", required=True, help="the Patient id the EHR has open")
    launch.add_argument("--encounter", help="the Encounter id in context")
    launch.add_argument("--ttl", type=int, default=300, help="lifetime in seconds (default 300)")


def _read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Password (again): "):
        raise ValueError("the passwords do not match")
    return first


async def _registry(settings: Settings, args: argparse.Namespace) -> int:
    from app.auth.registry import Client, ClientRegistry, UserRegistry
    from app.db import Database

    db = Database(settings.database_url, pool_size=1)
    try:
        if args.command == "users":
            await UserRegistry(db).add(args.username, _read_password(), args.fhir_user)
            print(f"user {args.username} added")
            return 0
        registry = ClientRegistry(db)
        if args.action == "add":
            jwks = None
            if args.jwks_file:
                with open(args.jwks_file, encoding="utf-8") as fh:
                    jwks = json.load(fh)
            await registry.add(
                Client(
                    client_id=args.client_id,
                    scopes=tuple(args.scope.split()),
                    jwks=jwks,
                    jwks_url=args.jwks_url,
                    redirect_uris=tuple(args.redirect_uri),
                    public=args.public,
                )
            )
            print(f"client {args.client_id} registered")
        elif args.action == "list":
            for c in await registry.list():
                keys = c.jwks_url or ("inline JWKS" if c.jwks else "public")
                state = "disabled" if c.disabled else "enabled"
                print(f"{c.client_id}\t{state}\t{keys}\t{' '.join(c.scopes)}")
        else:
            disabled = args.action == "disable"
            if not await registry.set_disabled(args.client_id, disabled):
                print(f"no client {args.client_id!r}", file=sys.stderr)
                return 1
            print(f"client {args.client_id} {args.action}d")
        return 0
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        await db.dispose()


def _launch(settings: Settings, args: argparse.Namespace) -> int:
    from app.auth.keys import load_or_create_signing_keys
    from app.auth.launch import issue_launch

    if not 0 < args.ttl <= 3600:
        print("--ttl must be between 1 and 3600 seconds", file=sys.stderr)
        return 2
    keys, _ = load_or_create_signing_keys(settings.signing_key_file)
    print(
        issue_launch(
            keys, settings, patient=args.patient, encounter=args.encounter, ttl_seconds=args.ttl
        )
    )
    return 0


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
        db = Database.from_settings(settings)
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


def _intermediary_commands(sub: Any) -> None:
    inter = sub.add_parser(
        "intermediaries", help="register QHIOs and other intermediaries, and check them"
    )
    isub = inter.add_subparsers(dest="action", required=True)
    add = isub.add_parser(
        "add", help="register an intermediary (Organization + Endpoint) and check it"
    )
    add.add_argument("name", help="a short name: [a-z0-9-], e.g. health-gorilla-prod")
    add.add_argument("--kind", required=True, help="adapter kind (see `intermediaries kinds`)")
    where = add.add_mutually_exclusive_group(required=True)
    where.add_argument("--base-url", help="FHIR base URL, or mllp://host:port for MLLP kinds")
    where.add_argument("--endpoint-id", help="attach to an Endpoint already in the FHIR store")
    add.add_argument("--org-name", help="the Organization's name (default: the kind's title)")
    add.add_argument(
        "--auth",
        help="none, smart-backend or mtls (default: smart-backend with --client-id, "
        "mtls with --cert alone, else the kind's default)",
    )
    add.add_argument("--client-id", help="our client id at the intermediary's token endpoint")
    add.add_argument("--token-url", help="the intermediary's token endpoint")
    add.add_argument("--key-file", help="our private key (JWK, JWKS or PEM; RS384 or ES384)")
    add.add_argument("--scope", help='scopes to ask for (default "system/*.rs")')
    add.add_argument("--cert", help="client certificate (PEM) for mutual TLS")
    add.add_argument("--cert-key", help="the client certificate's key, if not in --cert")
    add.add_argument("--ca-file", help="CA certificates to trust for this endpoint (PEM)")
    add.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting (capability or limit, e.g. patient_match=true, page_size=100); repeat",
    )
    add.add_argument("--no-check", action="store_true", help="register without checking now")
    lst = isub.add_parser("list", help="registrations: status, last check, failed checks")
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    check = isub.add_parser("check", help="run the checks now and record the outcome")
    which = check.add_mutually_exclusive_group(required=True)
    which.add_argument("name", nargs="?", help="one registration")
    which.add_argument("--all", action="store_true", help="every enabled registration")
    for action, text in (("disable", "stop using it (status off)"), ("enable", "use it again")):
        cmd = isub.add_parser(action, help=text)
        cmd.add_argument("name")
    isub.add_parser("kinds", help="the adapter kinds: the nine QHIOs and generic FHIR")


async def _intermediaries(settings: Settings, args: argparse.Namespace) -> int:
    from app.adapters.config import EndpointCredentials
    from app.adapters.profiles import load_profiles, parse_setting
    from app.adapters.service import Intermediaries
    from app.db import Database

    if args.action == "kinds":
        for profile in load_profiles().values():
            qhio = "QHIO" if profile.qhio else "-"
            print(f"{profile.kind}\t{qhio}\t{profile.adapter}\t{profile.auth}\t{profile.title}")
        return 0
    db = Database(settings.database_url, pool_size=1)
    service = Intermediaries.build(db, settings)
    try:
        registry = service.registry
        if args.action == "add":
            profiles = load_profiles()
            if args.kind not in profiles:
                print(f"error: unknown kind; known: {', '.join(profiles)}", file=sys.stderr)
                return 2
            method = args.auth or (
                "smart-backend"
                if args.client_id
                else "mtls"
                if args.cert
                else profiles[args.kind].auth
            )
            credentials = EndpointCredentials(
                auth_method=method,
                client_id=args.client_id,
                token_url=args.token_url,
                key_file=str(Path(args.key_file).resolve()) if args.key_file else None,
                scope=args.scope,
                cert_file=str(Path(args.cert).resolve()) if args.cert else None,
                cert_key_file=str(Path(args.cert_key).resolve()) if args.cert_key else None,
                ca_file=str(Path(args.ca_file).resolve()) if args.ca_file else None,
            )
            values = dict(parse_setting(item) for item in args.set)
            reg = await registry.add(
                args.name,
                kind=args.kind,
                credentials=credentials,
                address=args.base_url,
                endpoint_id=args.endpoint_id,
                organization_name=args.org_name,
                settings=values,
            )
            print(f"intermediary {reg.name} registered: Endpoint/{reg.endpoint_id}")
            if args.no_check:
                return 0
            reg = await service.checker.check(reg.name)
            _print_registration(reg)
            return 0 if reg.status == "active" else 1
        if args.action == "list":
            registrations = await registry.list()
            if args.json:
                print(json.dumps([r.as_json() for r in registrations], indent=2))
            else:
                for reg in registrations:
                    _print_registration(reg)
            return 0
        if args.action == "check":
            if args.all:
                outcome = await service.checker.check_round()
                for reg in await registry.list():
                    if reg.name in outcome:
                        _print_registration(reg)
                return 0 if all(s == "active" for s in outcome.values()) else 1
            if await registry.get(args.name, with_address=False) is None:
                print(f"no intermediary {args.name!r}", file=sys.stderr)
                return 1
            reg = await service.checker.check(args.name)
            _print_registration(reg)
            return 0 if reg.status == "active" else 1
        changed = await registry.set_enabled(args.name, args.action == "enable")
        if changed is None:
            print(f"no intermediary {args.name!r}", file=sys.stderr)
            return 1
        print(f"intermediary {args.name} {args.action}d (status {changed.status})")
        return 0
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        await service.aclose()
        await db.dispose()


def _print_registration(reg: Any) -> None:
    """One line per registration, then its last check's failures (never credentials)."""
    last = reg.last_check
    when = last.as_json()["checkedAt"] if last else "never checked"
    state = "enabled" if reg.enabled else "disabled"
    print(f"{reg.name}\t{reg.kind}\t{reg.status}\t{state}\t{reg.address or '-'}\t{when}")
    if last is not None:
        print(f"    {last.passed} passed, {last.failed} failed, {last.skipped} skipped")
        for check_id, reason in last.failures:
            print(f"    FAIL {check_id}: {reason}")


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
        from app.serving import serve_workers

        # each worker process builds its own app and database engines from DXF_* settings
        return serve_workers(options, workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
