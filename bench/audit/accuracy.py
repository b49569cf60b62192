"""Attribution and cause accuracy of `driftless audit` against the simulator's ground truth.

For each scenario and seed, `driftless simulate --out DIR` writes the files and `truth.csv`;
this runs `driftless audit` on them and counts, over the truly drifting keys, how many got the
right hand-off and the right cause.

usage: python3 bench/audit/accuracy.py [DRIFTLESS_BINARY] [SEEDS]
"""

import csv
import json
import subprocess
import sys
import tempfile

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/debug/driftless"
SEEDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
SCENARIOS = ["weekend-batch", "flash-sale-polling", "uom-cases", "phantom", "overrides",
             "retry-storm", "everything"]

total = hand = cause = 0
with tempfile.TemporaryDirectory() as tmp:
    for sc in SCENARIOS:
        for seed in range(1, SEEDS + 1):
            d = f"{tmp}/{sc}-{seed}"
            subprocess.run([BIN, "simulate", "--scenario", sc, "--architecture", "point-to-point",
                            "--seed", str(seed), "--out", d], check=True, capture_output=True)
            at = open(f"{d}/at.txt").read().strip()
            args = [BIN, "audit", "--config", f"{d}/driftless.toml", "--baseline", f"{d}/baseline.csv",
                    "--at", at, "--format", "json", "--no-history"]
            for s in ("wms", "erp", "shop"):
                args += ["--snapshot", f"{s}={d}/{s}.csv", "--changes", f"{s}={d}/{s}-changes.csv"]
            out = subprocess.run(args, capture_output=True, text=True)
            if out.returncode == 2:
                sys.exit(out.stderr)
            rows = {(r["sku"], r["location"]): r for r in json.loads(out.stdout)["rows"]}
            t = h = c = 0
            for tr in csv.DictReader(open(f"{d}/truth.csv")):
                t += 1
                r = rows.get((tr["sku"], tr["location"]))
                if r and r["handoff"] == tr["handoff"]:
                    h += 1
                    c += r["cause"] == tr["cause"]
            print(f"{sc:<20} seed {seed}: {t:4} drifting keys, hand-off {h / max(t, 1):6.1%}, cause {c / max(t, 1):6.1%}")
            total, hand, cause = total + t, hand + h, cause + c
print(f"all: {total} drifting keys, hand-off right {hand / total:.2%}, cause right {cause / total:.2%}")
