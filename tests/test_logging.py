"""The access log: one JSON line per request, naming the route template, never the path."""

from __future__ import annotations

import logging
import time

import orjson
import pytest

from app import logging as dxf_logging


@pytest.fixture
def configured(capsys):
    dxf_logging.configure_logging("INFO")
    yield capsys
    dxf_logging._access_direct = False
    logging.getLogger("dxf").handlers[:] = []
    logging.getLogger("dxf").propagate = True
    logging.getLogger("dxf").setLevel(logging.NOTSET)


def test_access_line_is_json_with_route_template(configured):
    dxf_logging.access_log(
        request_id="abc",
        method="GET",
        route="/fhir/{type}/{id}",
        status=200,
        started=time.perf_counter(),
    )
    line = configured.readouterr().err.strip()
    record = orjson.loads(line)
    assert record["route"] == "/fhir/{type}/{id}" and record["status"] == 200
    assert record["logger"] == "dxf.http" and record["ms"] >= 0


async def test_requests_are_logged_without_ids_or_queries(configured, client, auth):
    await client.get("/Patient/secret-id?name=Jane", headers=auth)
    err = configured.readouterr().err
    assert '"route":"/fhir/{type}/{id}"' in err
    assert "secret-id" not in err and "Jane" not in err
