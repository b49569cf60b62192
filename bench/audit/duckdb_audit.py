"""The peer: DuckDB doing the audit's full outer join and threshold query on the same files.

Same work as `audit-bench audit` where it matters for speed: read the four CSV files, full outer
join baseline / wms / erp on (sku, location), sum the ERP's ATP per sku over the channel's
locations, full outer join that with the storefront on sku, compute each hand-off's delta and keep
what exceeds `threshold_units` and `threshold_pct`. (It does not attribute a row to the first
failing hand-off nor look for causes: that only makes the peer's job lighter.)

usage: python3 duckdb_audit.py DIR
"""

import sys
import time

import duckdb

d = sys.argv[1]
t = time.time()
con = duckdb.connect()
q = f"""
WITH b AS (SELECT * FROM read_csv('{d}/baseline.csv', header=true,
             columns={{'sku':'VARCHAR','location':'VARCHAR','quantity':'BIGINT'}})),
w AS (SELECT * FROM read_csv('{d}/wms.csv', header=true,
             columns={{'sku':'VARCHAR','location':'VARCHAR','on_hand':'BIGINT','committed':'BIGINT'}})),
e AS (SELECT * FROM read_csv('{d}/erp.csv', header=true,
             columns={{'sku':'VARCHAR','location':'VARCHAR','on_hand':'BIGINT','committed':'BIGINT'}})),
s AS (SELECT * FROM read_csv('{d}/shop.csv', header=true,
             columns={{'sku':'VARCHAR','quantity':'BIGINT'}})),
bw AS (
  SELECT coalesce(b.sku, w.sku) AS sku, coalesce(b.location, w.location) AS location,
         b.quantity AS bq, w.on_hand AS won, w.committed AS wc
  FROM b FULL OUTER JOIN w ON b.sku = w.sku AND b.location = w.location),
loc AS (
  SELECT coalesce(bw.sku, e.sku) AS sku, coalesce(bw.location, e.location) AS location,
         bw.bq, bw.won, e.on_hand AS eon, e.committed AS ec
  FROM bw FULL OUTER JOIN e ON bw.sku = e.sku AND bw.location = e.location),
atp AS (
  SELECT sku, sum(coalesce(eon, 0) - coalesce(ec, 0)) AS atp
  FROM loc WHERE location IN ('DC1', 'DC2') GROUP BY sku),
chan AS (
  SELECT coalesce(atp.sku, s.sku) AS sku, greatest(coalesce(atp.atp, 0), 0) AS expected,
         coalesce(s.quantity, 0) AS shown
  FROM atp FULL OUTER JOIN s ON atp.sku = s.sku),
drift AS (
  SELECT sku, location, 'physical->wms' AS handoff, coalesce(won, 0) - bq AS delta, bq AS expected
    FROM loc WHERE bq IS NOT NULL
  UNION ALL
  SELECT sku, location, 'wms->erp', coalesce(eon, 0) - coalesce(won, 0), coalesce(won, 0) FROM loc
  UNION ALL
  SELECT sku, '', 'erp->shop', shown - expected, expected FROM chan)
SELECT handoff, count(*) AS drifting, sum(abs(delta)) AS abs_units
FROM drift
WHERE abs(delta) > 2 AND abs(delta) * 100 > 1.0 * abs(expected)
GROUP BY handoff ORDER BY handoff
"""
rows = con.execute(q).fetchall()
print(
    "duckdb: " + " ".join(f"{h}={n}" for h, n, _ in rows) + f" in {time.time() - t:.2f}s",
    file=sys.stderr,
)
