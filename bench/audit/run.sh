#!/usr/bin/env bash
# The drift audit benchmark: `driftless audit` (the real binary, every drifting row written as
# CSV) vs DuckDB running the simplest SQL that yields the same drifting rows (duckdb_audit.py,
# rows written as CSV) vs a bare CSV parse, on the same generated files, sorted and shuffled;
# wall time and peak RSS of each as a separate process (GNU time), medians of RUNS runs, and the
# ratios. After every run the two row SETS are compared (check_rows.py), not only their counts.
# "parse" splits every field (the floor); "typed" also checks identifiers and converts
# quantities. The audit runs with --no-history (storing the report is not part of the
# comparison: DuckDB stores nothing); `audit-bench audit` is the library alone.
#
#   bench/audit/run.sh [ROWS] [RUNS]      # defaults: 10000000 rows, 3 runs
#
# Files are generated once per ROWS under $AUDIT_BENCH_DIR (default /tmp/driftless-audit-bench)
# and read warm (from the page cache) by every contender: one untimed parse warms them first.
set -euo pipefail
ROWS=${1:-10000000}
RUNS=${2:-3}
DATA=${AUDIT_BENCH_DIR:-/tmp/driftless-audit-bench}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

cd "$ROOT"
cargo build --release -q -p driftless-audit-bench -p driftless
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/audit-bench"
DL="${CARGO_TARGET_DIR:-$ROOT/target}/release/driftless"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
python3 -c "import duckdb" 2>/dev/null || pip install --quiet duckdb
TIME=/usr/bin/time
[ -x "$TIME" ] || { echo "needs GNU time at /usr/bin/time" >&2; exit 2; }

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GB; duckdb $(python3 -c 'import duckdb; print(duckdb.__version__)')"
echo "rows per file: $ROWS; runs: $RUNS (medians)"
RESULTS=$(mktemp)
for variant in sorted shuffled; do
  dir="$DATA/$ROWS-$variant"
  if [ ! -f "$dir/shop.csv" ]; then
    flag=""; [ "$variant" = shuffled ] && flag="--shuffled"
    "$BIN" gen --rows "$ROWS" --out "$dir" $flag
  fi
  echo "$variant: $(du -sh "$dir" | cut -f1) in 4 CSV files"
  "$BIN" parse "$dir" 2>/dev/null  # warm the page cache
  for run in $(seq "$RUNS"); do
    for tool in audit duckdb parse typed; do
      case $tool in
        audit) cmd=("$DL" audit --config "$dir/driftless.toml" --baseline "$dir/baseline.csv"
                    --snapshot "wms=$dir/wms.csv" --snapshot "erp=$dir/erp.csv"
                    --snapshot "shop=$dir/shop.csv" --at "$(cat "$dir/at.txt")"
                    --format csv --output "$OUT/audit.csv" --no-history) ;;
        duckdb) cmd=(python3 "$HERE/duckdb_audit.py" "$dir" "$OUT/duckdb.csv") ;;
        parse) cmd=("$BIN" parse "$dir") ;;
        typed) cmd=("$BIN" parse "$dir" --typed) ;;
      esac
      # `driftless audit` exits 1 when it finds drift: the expected outcome here.
      out=$("$TIME" -f "TIME %e %M" "${cmd[@]}" 2>&1 >/dev/null || true)
      echo "$out" | grep -v '^TIME' | sed "s/^/  [$variant run $run] /" >&2
      echo "$variant $tool $(echo "$out" | awk '/^TIME/{print $2, $3}') $run" >>"$RESULTS"
    done
    python3 "$HERE/check_rows.py" "$OUT/audit.csv" "$OUT/duckdb.csv" 2>&1 | sed "s/^/  [$variant run $run] /" >&2
  done
done

python3 - "$RESULTS" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
res = {}
per_run = {}
for v, tool, wall, rss, run in rows:
    res.setdefault((v, tool), []).append((float(wall), int(rss)))
    per_run.setdefault((v, run), {})[tool] = float(wall)
print()
print(f"{'variant':<10}{'contender':<10}{'wall s (median)':>17}{'peak RSS MB':>13}")
for v in ("sorted", "shuffled"):
    med = {}
    for tool in ("audit", "duckdb", "parse", "typed"):
        xs = res.get((v, tool), [])
        if not xs:
            continue
        wall = statistics.median(x[0] for x in xs)
        rss = max(x[1] for x in xs) / 1024
        med[tool] = (wall, rss)
        print(f"{v:<10}{tool:<10}{wall:>17.2f}{rss:>13.0f}")
    if "audit" in med and "duckdb" in med and "parse" in med:
        a, d, p = med["audit"][0], med["duckdb"][0], med["parse"][0]
        print(f"{v:<10}ratios: audit/duckdb {a / d:.2f}x (goal <= 1.0), audit/parse {a / p:.2f}x (goal <= 1.5), audit peak RSS {med['audit'][1]:.0f} MB (goal <= 1024)")
        if "typed" in med:
            print(f"{v:<10}        audit/typed parse {a / med['typed'][0]:.2f}x")
        # The same ratio taken run by run (each audit beside the DuckDB run right after it), so
        # that the load of the shared machine drifting over the whole run cancels out.
        pairs = [r["audit"] / r["duckdb"] for (vv, _), r in sorted(per_run.items())
                 if vv == v and "audit" in r and "duckdb" in r]
        print(f"{v:<10}        audit/duckdb run by run: {' '.join(f'{x:.2f}' for x in pairs)}, median {statistics.median(pairs):.2f}x")
PY
rm -f "$RESULTS"
