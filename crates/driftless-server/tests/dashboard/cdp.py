"""Drives headless Chromium over the DevTools protocol for tests/dashboard.rs.

Usage: cdp.py PLAN.json. The plan names the hub, the token, where screenshots go and the steps;
the result (per step: console errors, failed requests, values read from the page) is printed as
JSON. Every console error, uncaught exception, failed load and response >= 400 is recorded.
"""
import json, os, shutil, subprocess, sys, tempfile, time, base64
import websocket  # websocket-client

plan = json.load(open(sys.argv[1]))
profile = tempfile.mkdtemp(prefix="driftless-chromium-")
browser = subprocess.Popen([
    plan["chromium"], "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-extensions", "--user-data-dir=" + profile,
    "--remote-debugging-port=0", "--window-size=1280,1000", "about:blank",
], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    port_file = os.path.join(profile, "DevToolsActivePort")
    deadline = time.time() + 30
    while not (os.path.exists(port_file) and len(open(port_file).read().split("\n")) >= 2):
        if time.time() > deadline:
            raise SystemExit("chromium did not start")
        time.sleep(0.1)
    port, path = open(port_file).read().split("\n")[:2]
    ws = websocket.create_connection("ws://127.0.0.1:%s%s" % (port, path), timeout=30)
    next_id = [0]
    events = []

    def cmd(method, params=None, session=None):
        next_id[0] += 1
        msg = {"id": next_id[0], "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        ws.send(json.dumps(msg))
        while True:
            m = json.loads(ws.recv())
            if m.get("id") == next_id[0]:
                if "error" in m:
                    raise RuntimeError("%s: %s" % (method, m["error"]))
                return m.get("result", {})
            events.append(m)

    def drain(seconds):
        ws.settimeout(0.05)
        end = time.time() + seconds
        while time.time() < end:
            try:
                events.append(json.loads(ws.recv()))
            except websocket.WebSocketTimeoutException:
                pass
        ws.settimeout(30)

    target = cmd("Target.createTarget", {"url": "about:blank"})["targetId"]
    sid = cmd("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ["Runtime", "Log", "Network", "Page"]:
        cmd(domain + ".enable", session=sid)
    cmd("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 1000, "deviceScaleFactor": 1, "mobile": False}, session=sid)

    def js(expr):
        r = cmd("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True}, session=sid)
        if "exceptionDetails" in r:
            raise RuntimeError("evaluate %r: %s" % (expr, r["exceptionDetails"]))
        return r["result"].get("value")

    def problems():
        out = []
        for e in events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append("exception: " + json.dumps(p["exceptionDetails"].get("exception", {}).get("description") or p["exceptionDetails"].get("text")))
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console.%s: %s" % (p["type"], " ".join(str(a.get("value", a.get("description"))) for a in p.get("args", []))))
            elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append("log: %s (%s)" % (p["entry"]["text"], p["entry"].get("url", "")))
            elif m == "Network.loadingFailed" and not p.get("canceled"):
                out.append("failed load: %s %s" % (p.get("errorText"), p.get("requestId")))
            elif m == "Network.responseReceived" and p["response"]["status"] >= 400:
                out.append("HTTP %d %s" % (p["response"]["status"], p["response"]["url"]))
        return out

    results = {}
    first = True
    for step in plan["steps"]:
        events.clear()
        if "route" in step:
            if first:
                url = plan["base"] + "/#token=" + plan["token"] + "&" + step["route"]
                first = False
            else:
                url = plan["base"] + "/#" + step["route"]
            js("delete document.body.dataset.ready")
            cmd("Page.navigate", {"url": url}, session=sid)
            deadline = time.time() + 20
            while True:
                ready = js("document.body && document.body.dataset.ready !== undefined && document.body.dataset.ready === (location.hash || '#/')")
                if ready:
                    break
                if time.time() > deadline:
                    raise SystemExit("page %s never became ready: %s" % (step["route"], problems()))
                time.sleep(0.1)
        if "click" in step:
            js("document.querySelector(%s).click()" % json.dumps(step["click"]))
        drain(step.get("settle", 0.5))
        out = {"problems": problems(), "hash": js("location.hash")}
        for name, expr in step.get("read", {}).items():
            out[name] = js(expr)
        if "screenshot" in step:
            height = js("Math.max(document.documentElement.scrollHeight, 600)")
            cmd("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": min(height, 4000), "deviceScaleFactor": 1, "mobile": False}, session=sid)
            png = cmd("Page.captureScreenshot", {"format": "png"}, session=sid)["data"]
            cmd("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 1000, "deviceScaleFactor": 1, "mobile": False}, session=sid)
            with open(os.path.join(plan["artifacts"], step["screenshot"] + ".png"), "wb") as f:
                f.write(base64.b64decode(png))
        results[step["name"]] = out
    ws.close()
    print(json.dumps(results))
finally:
    browser.terminate()
    try:
        browser.wait(10)
    except subprocess.TimeoutExpired:
        browser.kill()
    shutil.rmtree(profile, ignore_errors=True)
