"""ER7 (pipe-and-hat) parsing: bytes in, a tokenised message out, or a located error.

Implements HL7 v2.x chapter 2 (2.5.1 section 2.6 "Message construction rules", 2.7 "Use of escape
sequences in text fields", 2.15.9 MSH-18 character set) as the v2-to-FHIR IG expects of a
receiver (v2-to-fhir.md sections 4.6-4.8):

- the delimiters are the ones MSH-1 and MSH-2 declare (4 encoding characters, or 5 with the
  v2.7 truncation character); they must be distinct punctuation, else the message is refused;
- segments may end in CR (the standard), LF or CRLF; a UTF-8 byte-order mark is skipped;
- the bytes are decoded with the MSH-18 character set, or the configured default;
- escape sequences are decoded only after splitting, with the message's own escape character.

Nothing here logs: field values are patient data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "Delimiters",
    "Hl7Error",
    "Message",
    "Rep",
    "Segment",
    "charset_codec",
    "parse_message",
    "split_batch",
    "unescape",
]

_BOM = b"\xef\xbb\xbf"
_SEGMENT_NAME = re.compile(r"^[A-Z][A-Z0-9]{2}$")


class Hl7Error(Exception):
    """A message we cannot accept, with what an ERR segment needs.

    `code` is from HL7 table 0357 (100 segment sequence, 101 required field missing, 102 data
    type error, 103 table value not found, 200 unsupported message type, 201 unsupported event,
    202 unsupported processing id, 203 unsupported version, 205 duplicate key, 207 internal
    error); `reject` selects AR/CR (the message is not one we take) over AE/CE (it is wrong).
    `location` is (segment id, sequence, field position, component) for ERR-2. The reason never
    quotes field values: it is stored and returned to the sender, and may be logged.
    """

    def __init__(
        self,
        reason: str,
        *,
        code: str = "102",
        reject: bool = False,
        location: tuple[str, int, int, int] | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.reject = reject
        self.location = location


@dataclass(frozen=True, slots=True)
class Delimiters:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""

    @property
    def encoding_characters(self) -> str:
        return self.component + self.repetition + self.escape + self.subcomponent + self.truncation


DEFAULT_DELIMITERS = Delimiters()

# MSH-18 values (HL7 table 0211) to Python codecs. Unknown values fall back to the default.
_CHARSETS = {
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "8859/1": "latin-1",
    "ISO IR100": "latin-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
    "UNICODE": "utf-8",
    "ISO IR192": "utf-8",
    "UTF-8": "utf-8",
    "BIG-5": "big5",
    "GB 18030-2000": "gb18030",
    "KS X 1001": "euc-kr",
    "ISO IR87": "iso2022-jp",
    "ISO IR159": "iso2022-jp",
    "ISO IR13": "shift_jis",
}


def charset_codec(msh18: str, default: str) -> str:
    """The Python codec for an MSH-18 value (its first repetition), or `default`."""
    first = msh18.split("~", 1)[0].strip().upper()
    return _CHARSETS.get(first, default) if first else default


class Rep:
    """One repetition of a field: components (1-based) of subcomponents, decoded lazily."""

    __slots__ = ("_delims", "raw")

    def __init__(self, raw: str, delims: Delimiters) -> None:
        self.raw = raw
        self._delims = delims

    def __bool__(self) -> bool:
        return bool(self.raw) and self.raw != '""'

    @property
    def is_null(self) -> bool:
        """The explicit HL7 null `""`: the sender says the value is to be removed."""
        return self.raw == '""'

    def c(self, component: int = 1, sub: int = 1) -> str:
        """Component `component`, subcomponent `sub` (both 1-based), unescaped and stripped."""
        d = self._delims
        parts = self.raw.split(d.component)
        if component > len(parts):
            return ""
        subs = parts[component - 1].split(d.subcomponent)
        if sub > len(subs):
            return ""
        value = subs[sub - 1]
        if value == '""':
            return ""
        return unescape(value, d).strip()

    def comp(self, component: int) -> Rep:
        """A component as its own value, its subcomponents taking the component's place."""
        d = self._delims
        parts = self.raw.split(d.component)
        raw = parts[component - 1] if component <= len(parts) else ""
        return Rep(raw.replace(d.subcomponent, d.component), d)

    def text(self) -> str:
        """The whole repetition as text (for ST/TX/FT): unescaped, components kept as sent."""
        return unescape(self.raw, self._delims) if self else ""


@dataclass(slots=True)
class Segment:
    name: str
    fields: list[str]  # fields[n] is field n (for MSH, fields[1] is the field separator)
    delims: Delimiters
    index: int  # position in the message, 1-based (for ERR-2 locations)

    def raw(self, n: int) -> str:
        return self.fields[n] if n < len(self.fields) else ""

    def reps(self, n: int) -> list[Rep]:
        value = self.raw(n)
        if not value:
            return []
        if self.name == "MSH" and n <= 2:
            return [Rep(value, self.delims)]
        return [Rep(r, self.delims) for r in value.split(self.delims.repetition) if r]

    def rep(self, n: int) -> Rep:
        reps = self.reps(n)
        return reps[0] if reps else Rep("", self.delims)

    def c(self, n: int, component: int = 1, sub: int = 1) -> str:
        return self.rep(n).c(component, sub)

    def text(self, n: int) -> str:
        return self.rep(n).text()


@dataclass(slots=True)
class Message:
    segments: list[Segment]
    delims: Delimiters
    codec: str
    text: str = field(repr=False)

    @property
    def msh(self) -> Segment:
        return self.segments[0]

    def first(self, name: str) -> Segment | None:
        for seg in self.segments:
            if seg.name == name:
                return seg
        return None

    def all(self, name: str) -> list[Segment]:
        return [s for s in self.segments if s.name == name]

    @property
    def message_code(self) -> str:
        return self.msh.c(9, 1).upper()

    @property
    def trigger_event(self) -> str:
        event = self.msh.c(9, 2).upper()
        if not event and self.message_code == "ORU":
            return "R01"  # v2.1/2.2 ORU carried no event; R01 was the only one
        return event

    @property
    def message_type(self) -> str:
        return (
            f"{self.message_code}^{self.trigger_event}" if self.trigger_event else self.message_code
        )

    @property
    def control_id(self) -> str:
        return self.msh.c(10)

    @property
    def version(self) -> str:
        return self.msh.c(12)

    @property
    def sender(self) -> str:
        """MSH-3 and MSH-4 (namespace ids, or universal ids when no namespace is sent)."""
        app = self.msh.c(3) or self.msh.c(3, 2)
        fac = self.msh.c(4) or self.msh.c(4, 2)
        return f"{app}|{fac}"


def _decode(data: bytes, default_codec: str) -> tuple[str, str]:
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    # MSH is ASCII: find MSH-18 in a byte-transparent decoding, then decode the whole message.
    probe = data.decode("latin-1")
    codec = default_codec
    start = probe.find("MSH")
    if start >= 0 and len(probe) > start + 4:
        fs = probe[start + 3]
        header = re.split(r"[\r\n]", probe[start:], maxsplit=1)[0]
        parts = header.split(fs)
        if len(parts) > 17:
            codec = charset_codec(parts[17], default_codec)
    try:
        return data.decode(codec), codec
    except (UnicodeDecodeError, LookupError):
        raise Hl7Error(
            f"the message is not valid {codec} (MSH-18 or the configured default charset)",
            code="102",
            location=("MSH", 1, 18, 1),
        ) from None


def _delimiters(header: str) -> Delimiters:
    if len(header) < 8:
        raise Hl7Error("MSH is truncated: no encoding characters", code="100")
    fs = header[3]
    enc_end = header.find(fs, 4)
    enc = header[4:] if enc_end < 0 else header[4:enc_end]
    if len(enc) == 5 and enc[2:4] == "\\\\":
        enc = enc[:3] + enc[4:]  # a doubled backslash, as some samples were committed
    if len(enc) == 3:
        # no escape character declared (component, repetition, subcomponent), as real senders do
        chars = [fs, *enc]
        if len(set(chars)) == 4 and not any(ch.isalnum() or ch.isspace() for ch in chars):
            return Delimiters(fs, enc[0], enc[1], "", enc[2], "")
    chars = [fs, *enc]
    if (
        len(enc) not in (4, 5)
        or len(set(chars)) != len(chars)
        or any(ch.isalnum() or ch.isspace() for ch in chars)
    ):
        raise Hl7Error(
            "MSH-1/MSH-2 do not declare a valid field separator and 4 or 5 distinct encoding "
            "characters",
            code="102",
            location=("MSH", 1, 2, 1),
        )
    return Delimiters(fs, enc[0], enc[1], enc[2], enc[3], enc[4] if len(enc) == 5 else "")


def parse_message(data: bytes | str, *, default_codec: str = "utf-8") -> Message:
    """Tokenise one message. Raises Hl7Error when it has no usable MSH or a bad segment."""
    if isinstance(data, bytes):
        text, codec = _decode(data, default_codec)
    else:
        text, codec = data.lstrip("\ufeff"), "utf-8"
    text = text.strip("\x00\x0b\x1c \t\r\n")
    if not text:
        raise Hl7Error("the message is empty", code="100", location=("MSH", 1, 0, 0))
    lines = [ln for ln in re.split(r"\r\n|\r|\n", text) if ln.strip()]
    if not lines[0].startswith("MSH"):
        raise Hl7Error(
            "the message does not start with an MSH segment",
            code="100",
            location=("MSH", 1, 0, 0),
        )
    delims = _delimiters(lines[0])
    segments: list[Segment] = []
    for index, line in enumerate(lines, start=1):
        parts = line.rstrip().split(delims.field)
        name = parts[0].strip()
        if not _SEGMENT_NAME.match(name):
            raise Hl7Error(
                f"segment {index} has no valid segment id",
                code="100",
                location=(name[:3] if name.isalnum() else "", index, 0, 0),
            )
        fields = ["MSH", delims.field, *parts[1:]] if name == "MSH" else parts
        segments.append(Segment(name, fields, delims, index))
    return Message(segments, delims, codec, text)


_ESCAPES = {"F": "field", "S": "component", "T": "subcomponent", "R": "repetition", "E": "escape"}


def unescape(value: str, delims: Delimiters) -> str:
    """Decode HL7 escape sequences (v2.5.1 section 2.7): delimiters, hex (\\Xhh..\\), line
    breaks (\\.br\\, \\.sp\\ to newline); highlighting and character-set switches are dropped.
    An unterminated escape is kept as text."""
    esc = delims.escape
    if not esc or esc not in value:
        return value
    out: list[str] = []
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if ch != esc:
            out.append(ch)
            i += 1
            continue
        end = value.find(esc, i + 1)
        if end < 0:
            out.append(value[i:])
            break
        seq = value[i + 1 : end]
        i = end + 1
        if seq in _ESCAPES:
            out.append(getattr(delims, _ESCAPES[seq]))
        elif seq.startswith("X") and len(seq) > 1:
            try:
                out.append(bytes.fromhex(seq[1:]).decode("utf-8", errors="replace"))
            except ValueError:
                out.append(esc + seq + esc)
        elif seq.startswith((".br", ".sp")):
            out.append("\n")
        elif seq in ("H", "N") or seq.startswith(("C", "M", ".", "Z")):
            continue
        else:
            out.append(esc + seq + esc)
    return "".join(out)


_BATCH_SEGMENTS = ("FHS", "BHS", "BTS", "FTS")


def split_batch(data: bytes) -> list[bytes]:
    """Split a file holding one or many messages (optionally in FHS/BHS batch envelopes, HL7
    v2.5.1 section 2.10.3) into the bytes of each message. Envelope segments are dropped;
    whatever precedes the first MSH that is not an envelope is returned as its own (invalid)
    item so that it gets an answer rather than vanishing."""
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    lines = re.split(rb"\r\n|\r|\n", data)
    messages: list[list[bytes]] = []
    stray: list[bytes] = []
    for line in lines:
        if not line.strip():
            continue
        head = line.lstrip()[:3]
        if head in (b"FHS", b"BHS", b"BTS", b"FTS"):
            continue
        if head == b"MSH":
            messages.append([line])
        elif messages and _SEGMENT_LINE.match(line):
            messages[-1].append(line)
        else:
            stray.append(line)  # not a segment (comments, junk): answered on its own
    out = [b"\r".join(m) + b"\r" for m in messages]
    if stray:
        out.insert(0, b"\r".join(stray) + b"\r")
    return out


_SEGMENT_LINE = re.compile(rb"^[A-Z][A-Z0-9]{2}[^A-Za-z0-9\s]")
