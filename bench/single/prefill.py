"""Fills a hub's ledger with batched events (1,000 a request, 4 clients), as the in-process
benchmark does before its single events: uniform over 100k skus x 20 locations, one in fifty a
count. Usage: prefill.py URL EVENTS"""
import http.client, json, random, sys, threading, time, urllib.parse

url, total = sys.argv[1], int(sys.argv[2])
u = urllib.parse.urlparse(url)
batches = list(range(0, total, 1000))
lock = threading.Lock()
failed = []

def body(start):
    rnd = random.Random(start)
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out = []
    for i in range(start, min(start + 1000, total)):
        e = {"id": f"prefill-{i}", "source": "wms", "sku": f"SKU-{rnd.randrange(100000):06d}",
             "location": f"L{rnd.randrange(20):02d}", "occurred_at": at}
        if rnd.randrange(50) == 0:
            e["set"] = {"on_hand": rnd.randrange(500)}
        else:
            e["adjust"] = {"on_hand": rnd.randrange(21) - 10}
        out.append(e)
    return json.dumps(out)

def client():
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    while True:
        with lock:
            if not batches:
                return
            start = batches.pop()
        conn.request("POST", "/v1/events", body(start), {"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            failed.append(r.status)
            return

t0 = time.time()
ts = [threading.Thread(target=client) for _ in range(4)]
for t in ts: t.start()
for t in ts: t.join()
if failed:
    sys.exit(f"prefill failed: status {failed[0]}")
print(f"prefill: {total} events in {time.time() - t0:.1f} s")
