"""The conformance kit against our own server: every check passes or is skipped with a reason.

The kit talks to the app in process through httpx's ASGI transport, on both backends.
"""

from __future__ import annotations

import httpx
import pytest

from app.container import Container
from app.main import create_app
from conformance import Outcome, run_kit
from tests.conftest import FHIR_BASE, TokenFactory


@pytest.fixture
def transport(container: Container) -> httpx.ASGITransport:
    return httpx.ASGITransport(app=create_app(container.settings, container=container))


async def test_our_server_passes_every_check_or_skips_with_a_reason(
    transport: httpx.ASGITransport, make_token: TokenFactory
) -> None:
    report = await run_kit(FHIR_BASE, token=make_token(), transport=transport)
    failures = [f"{r.id}: {r.reason}" for r in report.results if r.outcome is Outcome.FAIL]
    assert failures == []
    assert all(r.reason for r in report.results if r.outcome is Outcome.SKIP)
    assert report.leftovers == []
