"""The subset of FHIRPath (http://hl7.org/fhirpath/N1/) that FHIR R4 search parameter
expressions use, evaluated over a resource's JSON to extract index values at write time.

Supported, which covers every expression of the resource types this server stores:
- paths (`Observation.code.coding`), unions (`a | b`), parentheses, an index (`entry[0]`);
- choice types, both `X.value as Quantity` / `(X.value as Quantity)` and `X.value.as(Quantity)`
  (in JSON `valueQuantity`), and `ofType(T)`;
- `where(resolve() is T)` and `where(... is T)`: keeps References whose target type is T;
- `where(field='literal')`: keeps elements whose field equals the literal;
- `%resource` inside the components of a composite parameter;
- `Patient.deceased.exists() and Patient.deceased != false`, the one boolean expression.
Anything else is refused when compiled, so an unsupported expression can never index silently
wrong values.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Any

__all__ = ["FhirPathError", "compile_path", "evaluate"]

Evaluator = Callable[..., list[Any]]  # (node, resource=None) -> selected values


class FhirPathError(ValueError):
    """An expression outside the supported subset."""


_ANY_RESOURCE = frozenset({"Resource", "DomainResource"})  # the common parameters' roots
_DECEASED = "Patient.deceased.exists() and Patient.deceased != false"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WHERE_RESOLVE = re.compile(r"^(?:resolve\(\)\s+)?is\s+([A-Za-z]+)$")
_WHERE_EQUALS = re.compile(r"^([A-Za-z]+)\s*=\s*'([^']*)'$")


def evaluate(expression: str, resource: dict[str, Any]) -> list[Any]:
    return compile_path(expression)(resource)


@cache
def compile_path(expression: str, *, relative: bool = False) -> Evaluator:
    """Compile once; the evaluator maps a resource (or, when `relative`, any element, as for
    the components of a composite parameter) to the list of selected values."""
    expression = expression.strip()
    if expression == _DECEASED:
        return _deceased
    terms = [_compile_term(t, relative) for t in _split_top(expression, "|")]
    if len(terms) == 1:
        return terms[0]

    def union(node: Any, resource: dict[str, Any] | None = None) -> list[Any]:
        out: list[Any] = []
        for term in terms:
            out.extend(term(node, resource))
        return out

    return union


def _deceased(resource: dict[str, Any], _root: dict[str, Any] | None = None) -> list[Any]:
    if "deceasedBoolean" in resource:
        return [resource["deceasedBoolean"] is True]
    return [True] if "deceasedDateTime" in resource else [False]


def _split_top(text: str, sep: str) -> list[str]:
    parts, depth, current, quoted = [], 0, "", False
    for ch in text:
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        if ch == sep and depth == 0 and not quoted:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    parts.append(current.strip())
    if any(not p for p in parts):
        raise FhirPathError(f"empty term in {text!r}")
    return parts


def _compile_term(term: str, relative: bool) -> Evaluator:
    steps = _parse_term(term)
    steps = _resolve_choices(steps)
    if relative:
        root, rest = None, steps
    elif not steps or steps[0][0] != "name" or not steps[0][1][0].isupper():
        raise FhirPathError(f"expression must start with a resource type: {term!r}")
    else:
        root, rest = steps[0][1], steps[1:]

    def run(node: Any, resource: dict[str, Any] | None = None) -> list[Any]:
        if root is not None and (
            not isinstance(node, dict)
            or (root not in _ANY_RESOURCE and node.get("resourceType") != root)
        ):
            return []
        nodes: list[Any] = [node]
        for kind, arg in rest:
            if kind == "resource":  # %resource: the resource the element belongs to
                nodes = [resource if resource is not None else node]
                continue
            nodes = _apply(kind, arg, nodes)
            if not nodes:
                break
        return nodes

    return run


def _parse_term(term: str) -> list[tuple[str, Any]]:
    """`path`, `path as Type`, `(path as Type)` and `(path as Type).more` -> steps."""
    term = term.strip()
    if term.startswith("("):
        close = _closing(term, 0)
        rest = term[close + 1 :].strip()
        return _parse_term(term[1:close]) + (_steps(rest) if rest else [])
    match = re.match(r"^(.*\S)\s+as\s+([A-Za-z]+)$", term)
    if match:
        return [*_parse_term(match.group(1)), ("as", match.group(2))]
    return _steps(term)


def _resolve_choices(steps: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """`value` then `as(Quantity)` -> the JSON element `valueQuantity`."""
    out: list[tuple[str, Any]] = []
    for kind, arg in steps:
        if kind == "as":
            if not out or out[-1][0] != "name":
                raise FhirPathError(f"'as {arg}' must follow an element name")
            name = out.pop()[1]
            out.append(("element", name + arg[0].upper() + arg[1:]))
        else:
            out.append((kind, arg))
    return out


def _closing(text: str, start: int) -> int:
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    raise FhirPathError(f"unbalanced parentheses in {text!r}")


def _steps(term: str) -> list[tuple[str, Any]]:
    steps: list[tuple[str, Any]] = []
    i = 0
    while i < len(term):
        if term[i] == ".":
            i += 1
            continue
        if term.startswith("%resource", i):
            steps.append(("resource", None))
            i += len("%resource")
            continue
        if term[i] == "[":
            end = term.index("]", i)
            steps.append(("index", int(term[i + 1 : end])))
            i = end + 1
            continue
        match = _IDENT.match(term, i)
        if not match:
            raise FhirPathError(f"cannot read {term[i:]!r}")
        name = match.group(0)
        i = match.end()
        if i < len(term) and term[i] == "(":
            end = _closing(term, i)
            steps.append(_function(name, term[i + 1 : end].strip()))
            i = end + 1
        else:
            steps.append(("name", name))
    return steps


def _function(name: str, arg: str) -> tuple[str, Any]:
    if name in ("as", "ofType"):
        return ("as", arg)
    if name == "where":
        resolve = _WHERE_RESOLVE.match(arg)
        if resolve:
            return ("where_type", resolve.group(1))
        equals = _WHERE_EQUALS.match(arg)
        if equals:
            return ("where_eq", (equals.group(1), equals.group(2)))
    raise FhirPathError(f"unsupported function {name}({arg})")


def _apply(kind: str, arg: Any, nodes: list[Any]) -> list[Any]:
    if kind == "name":
        return _children(nodes, arg)
    if kind == "element":
        return _exact(nodes, arg)
    if kind == "index":
        return nodes[arg : arg + 1]
    if kind == "where_type":
        return [n for n in nodes if _reference_type(n) == arg]
    if kind == "where_eq":
        field, value = arg
        return [n for n in nodes if isinstance(n, dict) and n.get(field) == value]
    raise FhirPathError(kind)


def _exact(nodes: list[Any], key: str) -> list[Any]:
    out: list[Any] = []
    for node in nodes:
        if isinstance(node, dict) and key in node:
            value = node[key]
            out.extend(value if isinstance(value, list) else [value])
    return out


def _children(nodes: list[Any], name: str) -> list[Any]:
    out: list[Any] = []
    for node in nodes:
        if not isinstance(node, dict):
            continue
        if name in node:
            value = node[name]
            out.extend(value if isinstance(value, list) else [value])
            continue
        # a choice element: `value` is stored as valueQuantity, valueString, ...
        for key, value in node.items():
            if key.startswith(name) and len(key) > len(name) and key[len(name)].isupper():
                out.extend(value if isinstance(value, list) else [value])
    return out


def _reference_type(node: Any) -> str | None:
    if not isinstance(node, dict):
        return None
    ref = node.get("reference")
    if isinstance(ref, str) and "/" in ref and not ref.startswith(("#", "urn:")):
        parts = ref.split("?")[0].split("/")
        if len(parts) >= 2:
            # Type/id, Type/id/_history/n, or an absolute URL ending in one of those
            if len(parts) >= 4 and parts[-2] == "_history":
                return parts[-4]
            return parts[-2]
    node_type = node.get("type")
    return node_type if isinstance(node_type, str) else None
