"""Checks that two audits found exactly the same drifting rows: the same set of
(sku, location, hand-off, delta), not only the same counts.

usage: python3 check_rows.py AUDIT.csv DUCKDB.csv
AUDIT.csv is `driftless audit --format csv` (columns named in its header), DUCKDB.csv is
`duckdb_audit.py`'s `sku,location,handoff,delta`. Exit 1 (with a few differences) when they differ.
"""

import csv
import sys


def rows(path):
    with open(path, newline="") as f:
        r = csv.DictReader(f)
        return {(x["sku"], x["location"], x["handoff"], int(x["delta"])) for x in r}


a, d = rows(sys.argv[1]), rows(sys.argv[2])
if a == d:
    print(f"row sets equal: {len(a)} rows", file=sys.stderr)
    sys.exit(0)
print(f"row sets differ: audit {len(a)}, duckdb {len(d)}", file=sys.stderr)
for x in sorted(a - d)[:5]:
    print(f"  only in the audit: {x}", file=sys.stderr)
for x in sorted(d - a)[:5]:
    print(f"  only in duckdb: {x}", file=sys.stderr)
sys.exit(1)
