"""SQLite page size against the cost of writing state into large B-trees (the flat-ingest goal).

A model of a ledger that writes every row as it comes, in Python's sqlite3 with the hub's
pragmas (WAL, synchronous FULL, 16 MiB cache, 2 GiB mapped, checkpoints every 10 groups): per
event an `events` row (unique on source, id), a per-cell key in a WITHOUT ROWID table and an
upsert of the cell's level; 100 durable groups of 2,000 events over 2M slots (100k skus x 20
locations), after a fill of N events. Run it with 0 and with 10,000,000, at each page size:

    python3 bench/pagesize/page_size.py 4096 0
    python3 bench/pagesize/page_size.py 4096 10000000
    python3 bench/pagesize/page_size.py 1024 0
    python3 bench/pagesize/page_size.py 1024 10000000

The databases are kept in /tmp/pagesize (about 2.7 GB each at 10M; remove them after). Figures
and what they say: docs/performance.md, "Smaller pages, tried on a model".
"""
import sqlite3, random, time, os, sys

if len(sys.argv) != 3:
    sys.exit("usage: page_size.py PAGE_SIZE FILL_EVENTS")
ps, n_pre = int(sys.argv[1]), int(sys.argv[2])
os.makedirs("/tmp/pagesize", exist_ok=True)
path = f"/tmp/pagesize/db{ps}_{n_pre}.sqlite"
fresh = not os.path.exists(path)
c = sqlite3.connect(path, isolation_level=None)
if fresh:
    c.execute(f"PRAGMA page_size={ps}")
for pragma in ("journal_mode=WAL", "synchronous=FULL", "cache_size=-16384",
               "mmap_size=2147418112", "wal_autocheckpoint=0"):
    c.execute(f"PRAGMA {pragma}")
if fresh:
    c.execute("CREATE TABLE ev (lsn INTEGER PRIMARY KEY, source TEXT, id TEXT, sku TEXT, loc TEXT, payload TEXT)")
    c.execute("CREATE UNIQUE INDEX ev_id ON ev(source, id)")
    c.execute("CREATE TABLE keys (sku TEXT, loc TEXT, at INTEGER, id TEXT, lsn INTEGER, PRIMARY KEY(sku,loc,at,id)) WITHOUT ROWID")
    c.execute("CREATE TABLE cells (sku TEXT, loc TEXT, state INTEGER, value INTEGER, PRIMARY KEY(sku,loc,state)) WITHOUT ROWID")
    c.execute("PRAGMA synchronous=OFF")
    # The fill: fast (not durable), checkpointed after each chunk so the WAL stays short.
    B = 100000
    for s in range(0, n_pre, B):
        c.execute("BEGIN")
        rows=[]
        for i in range(s, min(n_pre, s+B)):
            h = (i*7919) % 2000000
            rows.append((i, "wms", f"{random.getrandbits(64):016x}", f"SKU-{h//20:06d}", f"L{h%20:02d}", "x"*120))
        c.executemany("INSERT INTO ev VALUES (?,?,?,?,?,?)", rows)
        c.executemany("INSERT OR IGNORE INTO keys VALUES (?,?,?,?,?)", [(r[3], r[4], r[0], r[2], r[0]) for r in rows])
        c.executemany("INSERT OR REPLACE INTO cells VALUES (?,?,0,?)", [(r[3], r[4], r[0]) for r in rows])
        c.execute("COMMIT")
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.execute("PRAGMA synchronous=FULL")
# measured: 100 groups of 2000 random events, every row written as it comes
lsn = c.execute("SELECT COALESCE(MAX(lsn),0) FROM ev").fetchone()[0] + 1
t=time.time()
for g in range(100):
    rows=[]
    for i in range(2000):
        h = random.randrange(2000000)
        rows.append((lsn, "wms", f"{random.getrandbits(64):016x}", f"SKU-{h//20:06d}", f"L{h%20:02d}", "x"*120)); lsn+=1
    c.execute("BEGIN")
    c.executemany("INSERT INTO ev VALUES (?,?,?,?,?,?)", rows)
    c.executemany("INSERT INTO keys VALUES (?,?,?,?,?)", [(r[3], r[4], r[0], r[2], r[0]) for r in rows])
    c.executemany("INSERT INTO cells VALUES (?,?,0,?) ON CONFLICT DO UPDATE SET value=excluded.value", [(r[3], r[4], r[0]) for r in rows])
    c.execute("COMMIT")
    if g % 10 == 9: c.execute("PRAGMA wal_checkpoint(PASSIVE)")
dt=time.time()-t
print(f"page_size={ps} pre={n_pre}: {200000/dt:.0f} events/s, db {os.path.getsize(path)/1e6:.0f} MB")
