"""Checks GraphQL requests against Shopify's published Admin GraphQL schemas.

usage: shopify_schema.py SCHEMA_DIR CASES_JSON

SCHEMA_DIR holds admin-<version>.graphql.gz (real SDL, see its SOURCE.md). CASES_JSON is a list of
{"name": str, "body": {"query": str, "variables": {...}}, "valid": {"<version>": bool, ...}}.
Each body is validated as a GraphQL server would before running it: the document against the
schema (fields, arguments, directives such as @idempotent, variable types and positions), then
the variables coerced to their declared types (unknown input fields, missing required ones, Int
being 32-bit). Prints one line per case and version; exits 1 when any result is not the expected
one. Needs graphql-core (pip install graphql-core); the Rust test that runs it installs it.
"""

import gzip
import json
import os
import sys

from graphql import build_schema, parse, validate
from graphql.execution.values import get_variable_values
from graphql.language import OperationDefinitionNode


def problems(schema, body):
    doc = parse(body["query"])
    errors = validate(schema, doc)
    if errors:
        return [e.message for e in errors]
    ops = [d for d in doc.definitions if isinstance(d, OperationDefinitionNode)]
    if len(ops) != 1:
        return ["expected exactly one operation"]
    coerced = get_variable_values(schema, ops[0].variable_definitions or [], body.get("variables") or {})
    if isinstance(coerced, list):
        return [e.message for e in coerced]
    return []


def main():
    schema_dir, cases_path = sys.argv[1], sys.argv[2]
    with open(cases_path) as f:
        cases = json.load(f)
    versions = sorted({v for c in cases for v in c["valid"]})
    failed = 0
    for version in versions:
        path = os.path.join(schema_dir, f"admin-{version}.graphql.gz")
        with gzip.open(path, "rt", encoding="utf-8") as f:
            # Published SDL, trusted as valid: skipping its own validation and source locations
            # halves the time.
            schema = build_schema(f.read(), assume_valid_sdl=True, no_location=True)
        for case in cases:
            if version not in case["valid"]:
                continue
            found = problems(schema, case["body"])
            want = case["valid"][version]
            ok = (not found) == want
            failed += not ok
            verdict = "valid" if not found else "invalid: " + "; ".join(found)
            print(f"{'ok  ' if ok else 'FAIL'} {version} {case['name']}: {verdict}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
