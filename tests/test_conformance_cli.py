"""`dxf-bridge conformance` over a real loopback port, and the reports it writes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from app.cli import main
from conformance import Evidence, Outcome, Report, Result, render_html
from conformance.rules import READ
from tests.test_conformance_lies import TOKEN, _LyingServer


@pytest.fixture(scope="module")
def liar_url() -> Iterator[str]:
    """The lying server of test_conformance_lies on a loopback port, in a thread."""
    config = uvicorn.Config(
        _LyingServer().app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        ws="none",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the test server did not start"
        assert thread.is_alive(), "the test server stopped"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/fhir"
    server.should_exit = True
    thread.join(timeout=20)


def test_exit_status_is_1_on_failures_and_the_html_report_is_written(
    liar_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.html"
    assert main(["conformance", liar_url, "--token", TOKEN, "--report", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "FAIL search.Patient.family" in printed
    html = out.read_text()
    assert html.index("<h2>Summary</h2>") < html.index("<h2>Failures</h2>")
    assert html.index("<h2>Failures</h2>") < html.index("<h2>All checks</h2>")
    assert "search.Patient.family" in html
    assert TOKEN not in html  # the Authorization header is masked


def test_exit_status_is_0_when_nothing_fails_and_json_report(liar_url: str, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    code = main(
        ["conformance", liar_url, "--token", TOKEN, "--only", "capability", "--report", str(out)]
    )
    assert code == 0
    data = json.loads(out.read_text())
    assert data["summary"]["fail"] == 0 and data["summary"]["pass"] == 3
    assert {r["group"] for r in data["results"]} == {"capability"}
    first = data["results"][0]
    assert first["rule"]["url"].startswith("https://hl7.org/fhir/R4/")
    assert first["evidence"][0]["request"]["url"].endswith("/fhir/metadata")


def test_only_us_core_runs_that_group_and_fails_a_false_claim(
    liar_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.json"
    args = ["conformance", liar_url, "--token", TOKEN, "--only", "us-core", "--report", str(out)]
    assert main(args) == 1  # it claims US Core Patient without the SHALL searches
    printed = capsys.readouterr().out
    assert "FAIL us-core.us-core-patient.search.identifier" in printed
    data = json.loads(out.read_text())
    assert {r["group"] for r in data["results"]} == {"us-core"}
    failed = next(r for r in data["results"] if r["id"] == "us-core.us-core-patient.declared")
    assert failed["rule"]["url"].endswith("CapabilityStatement-us-core-server.html#patient")


@pytest.mark.parametrize(
    "args",
    [
        ["--only", "nosuchgroup"],
        ["--report", "report.txt"],
        ["--client-id", "x"],
        ["--client-id", "x", "--key", "/nonexistent/key.pem"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    assert main(["conformance", "http://127.0.0.1:9/fhir", *args]) == 2


def test_a_key_file_that_is_no_key_exits_2(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    args = ["conformance", "http://127.0.0.1:9/fhir", "--client-id", "x", "--key", str(junk)]
    assert main(args) == 2


def test_unreachable_server_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    # port 9 (discard) on loopback: nothing listens there
    assert main(["conformance", "http://127.0.0.1:9/fhir"]) == 2
    assert "cannot talk to" in capsys.readouterr().err


def test_html_report_escapes_what_the_server_said() -> None:
    hostile = "<script>alert(1)</script>"
    report = Report(base_url=f"http://x/{hostile}", started="now", groups=["crud"])
    report.results.append(
        Result(
            id=f"crud.{hostile}",
            group="crud",
            title=hostile,
            rule=READ,
            outcome=Outcome.FAIL,
            reason=hostile,
            evidence=[Evidence("GET", "http://x/", 200, response_excerpt=hostile)],
        )
    )
    html = render_html(report)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_the_kit_exports_what_its_readme_uses() -> None:
    import conformance

    assert sorted(conformance.__all__) == [
        "Evidence",
        "GROUPS",
        "Outcome",
        "Report",
        "Result",
        "Rule",
        "render_html",
        "render_json",
        "run_kit",
        "write_report",
    ]
    assert list(conformance.GROUPS) == [
        "capability",
        "crud",
        "system",
        "search",
        "errors",
        "http",
        "operations",
        "smart",
        "us-core",
    ]
