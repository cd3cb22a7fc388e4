"""The run's report as JSON (machine-readable) or HTML (for a person: summary first, then details).

Passing checks show their requests and a short response excerpt; failures and skips show
headers, bodies and the full excerpt. Every value that came from the server or the command
line is HTML-escaped: the report shows what a server said, and a hostile server must not be
able to script the page.
"""

from __future__ import annotations

from collections import Counter
from html import escape
from pathlib import Path

import orjson

from conformance.model import Outcome, Result
from conformance.runner import Report

__all__ = ["render_html", "render_json", "write_report"]


def render_json(report: Report) -> bytes:
    return orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2)


def write_report(report: Report, path: Path) -> None:
    if path.suffix.lower() in (".html", ".htm"):
        path.write_text(render_html(report), encoding="utf-8")
    elif path.suffix.lower() == ".json":
        path.write_bytes(render_json(report))
    else:
        raise ValueError(f"report file must end in .json or .html, not {path.name!r}")


_BRIEF = 160  # characters of a passing check's response shown in HTML (JSON keeps 600)

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:80em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:left;vertical-align:top}th{background:#f3f3f3}.pass{color:#176f2c}.fail{color:#b00020;
font-weight:bold}.skip{color:#7a6400}pre{white-space:pre-wrap;background:#f8f8f8;padding:.5em;
margin:.2em 0;font-size:.85em}details{margin:.3em 0}summary{cursor:pointer}
"""


def render_html(report: Report) -> str:
    e = escape
    totals = {o: report.count(o) for o in Outcome}
    verdict = "FAILED" if report.failed else "PASSED"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>FHIR conformance report: {e(report.base_url)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>FHIR conformance report: {e(verdict)}</h1>",
        "<table>",
        f"<tr><th>Server</th><td>{e(report.base_url)}</td></tr>",
        f"<tr><th>Software</th><td>{e(report.software or 'not stated')}</td></tr>",
        f"<tr><th>Run</th><td>{e(report.started)}, {report.seconds:.1f} s"
        f"{', read-only' if report.read_only else ''}</td></tr>",
        f"<tr><th>Groups</th><td>{e(', '.join(report.groups))}</td></tr>",
        "<tr><th>Results</th><td>"
        + ", ".join(f'<span class="{o.value}">{totals[o]} {o.value}</span>' for o in Outcome)
        + "</td></tr>",
    ]
    if report.leftovers:
        parts.append(f"<tr><th>Not cleaned up</th><td>{e(', '.join(report.leftovers))}</td></tr>")
    parts.append("</table>")
    parts += _summary(report)
    failures = [r for r in report.results if r.outcome is Outcome.FAIL]
    if failures:
        parts.append("<h2>Failures</h2>")
        parts += [_detail(r, open_=True) for r in failures]
    parts.append("<h2>All checks</h2>")
    for group in report.groups:
        rows = [r for r in report.results if r.group == group]
        if rows:
            parts.append(f'<h3 id="group-{e(group)}">{e(group)}</h3>')
            parts += [_detail(r) for r in rows]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _summary(report: Report) -> list[str]:
    e = escape
    rows = [
        "<h2>Summary</h2>",
        "<table><tr><th>Group</th><th>Pass</th><th>Fail</th><th>Skip</th></tr>",
    ]
    for group in report.groups:
        counts = Counter(r.outcome for r in report.results if r.group == group)
        rows.append(
            f'<tr><td><a href="#group-{e(group)}">{e(group)}</a></td>'
            f'<td class="pass">{counts[Outcome.PASS]}</td>'
            f'<td class="fail">{counts[Outcome.FAIL]}</td>'
            f'<td class="skip">{counts[Outcome.SKIP]}</td></tr>'
        )
    rows.append("</table>")
    return rows


def _detail(r: Result, *, open_: bool = False) -> str:
    e = escape
    head = (
        f'<span class="{r.outcome.value}">{r.outcome.value.upper()}</span> '
        f"<code>{e(r.id)}</code>: {e(r.title)}" + (f" &mdash; {e(r.reason)}" if r.reason else "")
    )
    body = [f'<p>Rule: {e(r.rule.source)}, <a href="{e(r.rule.url)}">{e(r.rule.section)}</a></p>']
    brief = r.outcome is Outcome.PASS  # passes show less: the reader looks at the rest
    for ev in r.evidence:
        request = f"{ev.method} {ev.url}"
        if not brief:
            request += "\n" + "\n".join(f"{k}: {v}" for k, v in ev.request_headers.items())
            if ev.request_body:
                request += f"\n\n{ev.request_body}"
        response = f"HTTP {ev.status}"
        if not brief:
            response += "\n" + "\n".join(f"{k}: {v}" for k, v in ev.response_headers.items())
        excerpt = ev.response_excerpt
        if brief and len(excerpt) > _BRIEF:
            excerpt = excerpt[:_BRIEF] + " [...]"
        if excerpt:
            response += f"\n\n{excerpt}"
        body.append(f"<pre>{e(request)}</pre><pre>{e(response)}</pre>")
    return f"<details{' open' if open_ else ''}><summary>{head}</summary>{''.join(body)}</details>"
