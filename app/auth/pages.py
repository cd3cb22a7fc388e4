"""The few server-rendered pages of the authorize endpoint: login, consent with patient picker,
and errors that cannot be sent to the app. Plain HTML, every value escaped, no scripts."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

__all__ = ["PatientChoice", "consent_page", "error_page", "login_page"]

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem}"
    "label{display:block;margin:.6rem 0 .2rem}input[type=text],input[type=password]"
    "{width:100%;padding:.4rem}button{margin:.8rem .4rem 0 0;padding:.4rem 1rem}"
    ".error{color:#a00}code{background:#eee;padding:0 .2rem}"
)


@dataclass(frozen=True, slots=True)
class PatientChoice:
    id: str
    label: str


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>"
    )


def _hidden(flow: str) -> str:
    return f'<input type=hidden name=flow value="{escape(flow)}">'


def error_page(message: str) -> str:
    return _page("Authorization failed", f"<p class=error>{escape(message)}</p>")


def login_page(*, action: str, flow: str, client_id: str, error: str | None = None) -> str:
    notice = f"<p class=error>{escape(error)}</p>" if error else ""
    return _page(
        "Sign in",
        f"<p>The application <code>{escape(client_id)}</code> asks to access FHIR data.</p>"
        f'{notice}<form method=post action="{escape(action)}">{_hidden(flow)}'
        "<label for=u>Username</label><input type=text id=u name=username autocomplete=username>"
        "<label for=p>Password</label>"
        "<input type=password id=p name=password autocomplete=current-password>"
        "<button type=submit>Sign in</button></form>",
    )


def consent_page(
    *,
    action: str,
    flow: str,
    client_id: str,
    username: str,
    scopes: tuple[str, ...],
    patient: str | None,
    choices: list[PatientChoice] | None,
    name_filter: str = "",
    error: str | None = None,
) -> str:
    notice = f"<p class=error>{escape(error)}</p>" if error else ""
    items = "".join(f"<li><code>{escape(s)}</code></li>" for s in scopes)
    picker = ""
    if patient:
        picker = f"<p>Patient in context: <code>Patient/{escape(patient)}</code></p>"
    elif choices is not None:
        options = "".join(
            f'<label><input type=radio name=patient value="{escape(c.id)}"> {escape(c.label)}'
            f" <code>{escape(c.id)}</code></label>"
            for c in choices
        )
        picker = (
            "<fieldset><legend>Choose the patient</legend>"
            f"<label for=q>Find by name</label><input type=text id=q name=name "
            f'value="{escape(name_filter)}"><button type=submit name=decision value=search>'
            f"Search</button>{options or '<p>No patient matches.</p>'}"
            "<label for=pid>or enter a Patient id</label>"
            "<input type=text id=pid name=patient_id></fieldset>"
        )
    return _page(
        "Allow access?",
        f"<p>Signed in as <code>{escape(username)}</code>. The application "
        f"<code>{escape(client_id)}</code> asks for:</p><ul>{items}</ul>{notice}"
        f'<form method=post action="{escape(action)}">{_hidden(flow)}{picker}'
        "<button type=submit name=decision value=approve>Allow</button>"
        "<button type=submit name=decision value=deny>Deny</button></form>",
    )
