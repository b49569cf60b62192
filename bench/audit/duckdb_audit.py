"""The peer: DuckDB running the simplest SQL that yields the same drifting rows as the audit.

Read the four CSV files, join them on (sku, location), compute the storefront's expected value
(the ERP's ATP summed over the channel's locations, never below 0), apply the thresholds
(`|delta| > 2` and `|delta| > 1%` of the expected value) and pick the first failing hand-off
(physical->wms before wms->erp for a location; erp->shop once per sku). Inner joins: the
benchmark's generator writes every key to every file, so nothing an outer join would keep is
missing (`check_rows.py` proves the row sets equal on every run). No causes: only the rows.

The rows go to OUT as CSV `sku,location,handoff,delta` (what `check_rows.py` compares), the
way `driftless audit --format csv --output` writes its report.

usage: python3 duckdb_audit.py DIR OUT
"""

import sys
import time

import duckdb

d, out = sys.argv[1], sys.argv[2]
t = time.time()
con = duckdb.connect()
q = f"""
COPY (
  WITH loc AS (
    SELECT sku, location, b.quantity AS bq, w.on_hand AS won, e.on_hand AS eon,
           e.committed AS ec
    FROM '{d}/baseline.csv' b JOIN '{d}/wms.csv' w USING (sku, location)
                              JOIN '{d}/erp.csv' e USING (sku, location)),
  drift AS (
    SELECT sku, location,
           CASE WHEN abs(won - bq) > 2 AND abs(won - bq) * 100 > abs(bq)
                THEN 'physical->wms' ELSE 'wms->erp' END AS handoff,
           CASE WHEN abs(won - bq) > 2 AND abs(won - bq) * 100 > abs(bq)
                THEN won - bq ELSE eon - won END AS delta
    FROM loc
    WHERE (abs(won - bq) > 2 AND abs(won - bq) * 100 > abs(bq))
       OR (abs(eon - won) > 2 AND abs(eon - won) * 100 > abs(won))
    UNION ALL
    SELECT sku, '', 'erp->shop', s.quantity - x.expected
    FROM (SELECT sku, greatest(sum(eon - ec), 0) AS expected FROM loc
          WHERE location IN ('DC1', 'DC2') GROUP BY sku) x
    JOIN '{d}/shop.csv' s USING (sku)
    WHERE abs(s.quantity - x.expected) > 2 AND abs(s.quantity - x.expected) * 100 > x.expected)
  SELECT * FROM drift
) TO '{out}' (HEADER, DELIMITER ',')
"""
con.execute(q)
print(f"duckdb: rows in {out} in {time.time() - t:.2f}s", file=sys.stderr)
