"""Checking registered intermediaries: at registration, on demand, and on a schedule.

A FHIR endpoint is checked with the conformance kit (conformance/, see conformance/README.md)
in read-only mode: the kit reads the endpoint's CapabilityStatement and SMART discovery and
exercises what it claims with reads and searches only, authenticated with the registration's
own credentials (a SMART Backend Services token from the registered token URL, and the client
certificate for mutual TLS). The token request is itself a check (`auth.token`). An MLLP
endpoint is checked by opening a connection (and the TLS handshake): `mllp.connect`.

The outcome is recorded (app/adapters/registry.py): status `active` when no check failed
except those the registration tolerates (setting `tolerated_checks`, ids or id prefixes),
`error` otherwise, with each failed check's id and reason. `check_groups` limits the kit to
some groups. Nothing here logs a credential, a token or a response body.

The schedule: `run_periodic_checks` is started by the server (app/main.py lifespan) when
DXF_INTERMEDIARY_CHECK_INTERVAL is above 0; each round checks the enabled registrations whose
last check is older than 90 % of the interval, so several server processes do not all check
the same endpoint. `check_round` is the one round, callable directly (tests, the CLI).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx

from app.adapters.base import AdapterError
from app.adapters.config import EndpointCredentials, RegisteredEndpoint
from app.adapters.factory import AdapterFactory
from app.adapters.manifest_medex import parse_mllp_address, probe
from app.adapters.profiles import load_profiles
from app.adapters.registry import (
    CheckRun,
    IntermediaryRegistry,
    Registration,
    client_ssl_context,
)

__all__ = ["IntermediaryChecker", "run_periodic_checks"]

log = logging.getLogger("dxf.intermediaries")


def _now() -> datetime:
    return datetime.now(UTC)


class IntermediaryChecker:
    def __init__(
        self,
        registry: IntermediaryRegistry,
        factory: AdapterFactory,
        *,
        timeout_seconds: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,  # tests: an in-process server
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.registry = registry
        self.factory = factory
        self._timeout = timeout_seconds
        self._transport = transport
        self._clock = clock

    async def check(self, name: str) -> Registration:
        """Check one registration now and record the outcome. KeyError when unknown."""
        reg = await self.registry.get(name)
        if reg is None:
            raise KeyError(name)
        run = await self._run(reg)
        recorded = await self.registry.record_check(name, run)
        assert recorded is not None
        log.info(
            "intermediary checked",
            extra={"intermediary": name, "check_status": run.status, "failed": run.failed},
        )
        return recorded

    async def check_round(self, *, due_after: float | None = None) -> dict[str, str]:
        """Check every enabled registration (with `due_after` seconds: only those whose last
        check is older). One failing check never stops the round. Returns name -> status."""
        out: dict[str, str] = {}
        now = self._clock()
        for reg in await self.registry.list():
            if not reg.enabled:
                continue
            last = reg.last_check
            recent = last is not None and now - last.checked_at < timedelta(seconds=due_after or 0)
            if due_after is not None and recent:
                continue
            try:
                out[reg.name] = (await self.check(reg.name)).status
            except Exception as exc:  # noqa: BLE001 - the next registration still gets checked
                log.warning(
                    "intermediary check failed to run",
                    extra={"intermediary": reg.name, "error": type(exc).__name__},
                )
        return out

    # ---- one check -------------------------------------------------------------------------

    async def _run(self, reg: Registration) -> CheckRun:
        config = await self.registry.endpoint_config(reg)
        if config is None:
            return self._failed("registry.endpoint", "the Endpoint resource is gone")
        credentials = await self.registry.credentials(reg.name)
        if load_profiles()[reg.kind].transport == "hl7v2-mllp":
            return await self._probe_mllp(config, credentials)
        return await self._kit(config, credentials, reg)

    async def _probe_mllp(
        self, config: RegisteredEndpoint, credentials: EndpointCredentials
    ) -> CheckRun:
        host, port, tls = parse_mllp_address(config.address)
        try:
            context = client_ssl_context(credentials)
        except (OSError, ValueError):
            return self._failed("mllp.tls", "the TLS files do not load")
        if tls and context is None:
            context = ssl.create_default_context()
        try:
            await probe(host, port, context, timeout=self._timeout)
        except TimeoutError:
            return self._failed("mllp.connect", "no connection within the timeout")
        except OSError as exc:
            return self._failed("mllp.connect", f"cannot connect ({type(exc).__name__})")
        return CheckRun(self._clock(), "active", passed=1)

    async def _kit(
        self, config: RegisteredEndpoint, credentials: EndpointCredentials, reg: Registration
    ) -> CheckRun:
        # the kit is shipped beside the server (conformance/), imported only to check
        from conformance.model import Outcome
        from conformance.runner import run_kit

        token = None
        passed = 0
        if credentials.uses_smart:
            try:
                source = self.factory.token_source(config, credentials)
                assert source is not None
                token = await source.token(timeout=self._timeout)
            except AdapterError as err:
                return self._failed(
                    "auth.token", f"no access token: {err.kind.value} ({err.detail})"
                )
            except (OSError, ValueError):
                return self._failed("auth.key", "the key file does not load")
            passed = 1
        transport = self._transport
        if transport is None:
            try:
                context = client_ssl_context(credentials)
            except (OSError, ValueError):
                return self._failed("tls.files", "the TLS files do not load")
            if context is not None:
                transport = httpx.AsyncHTTPTransport(verify=context)
        groups = reg.settings.get("check_groups") or None
        try:
            report = await run_kit(
                config.address, token=token, transport=transport, read_only=True, only=groups
            )
        except httpx.HTTPError as exc:
            return self._failed(
                "kit.reachable", f"the endpoint did not answer ({type(exc).__name__})"
            )
        except ValueError as exc:
            return self._failed("kit.groups", str(exc))
        tolerated = tuple(reg.settings.get("tolerated_checks") or ())
        failures: list[tuple[str, str]] = []
        blocking = 0
        for result in report.results:
            if result.outcome is not Outcome.FAIL:
                continue
            if tolerated and result.id.startswith(tolerated):
                failures.append((result.id, f"(tolerated) {result.reason}"))
            else:
                blocking += 1
                failures.append((result.id, result.reason))
        return CheckRun(
            self._clock(),
            "error" if blocking else "active",
            passed=passed + report.count(Outcome.PASS),
            failed=len(failures),
            skipped=report.count(Outcome.SKIP),
            failures=tuple(failures),
        )

    def _failed(self, check_id: str, reason: str) -> CheckRun:
        return CheckRun(self._clock(), "error", failed=1, failures=((check_id, reason),))


async def run_periodic_checks(
    checker: IntermediaryChecker, interval: float, stop: asyncio.Event
) -> None:
    """Until `stop` is set: wait `interval` seconds, then run one round of due checks."""
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
            return
        except TimeoutError:
            pass
        try:
            await checker.check_round(due_after=interval * 0.9)
        except Exception as exc:  # noqa: BLE001 - e.g. the database is down: try next round
            log.warning("intermediary check round failed", extra={"error": type(exc).__name__})
