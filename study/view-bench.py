#!/usr/bin/env python3
"""Times a `fitalloc view` page in headless Chromium, in real time.

    python3 study/view-bench.py heap.html [MOVES [MORE]]

Opens the page (its #bench=MOVES mode: MOVES moves of the slider to moments
scattered over the run, each timed from the move to the end of the layout it
causes: seeking the four heaps, drawing them, the browser's layout), and
prints the page's size, the time from opening to the first drawing, and the
redraw times. Talks to Chromium over --remote-debugging-pipe (no network,
no extra package), because --dump-dom's virtual time stops the page's clock.
"""
import json
import os
import subprocess
import sys
import tempfile
import time


def main():
    page = os.path.abspath(sys.argv[1])
    moves = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    more = "&" + sys.argv[3] if len(sys.argv) > 3 else ""
    r_cmd, w_cmd = os.pipe()  # we write commands, chromium reads fd 3
    r_out, w_out = os.pipe()  # chromium writes fd 4, we read
    profile = tempfile.mkdtemp()
    args = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--user-data-dir=" + profile, "--remote-debugging-pipe",
            "--window-size=1800,1200", "about:blank"]

    def child_fds():
        os.dup2(r_cmd, 3)
        os.dup2(w_out, 4)

    proc = subprocess.Popen(args, preexec_fn=child_fds, pass_fds=(3, 4),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(r_cmd)
    os.close(w_out)
    out = os.fdopen(r_out, "rb")
    buf = b""
    ids = iter(range(1, 1 << 30))

    def send(method, params=None, session=None):
        nonlocal buf
        i = next(ids)
        msg = {"id": i, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(w_cmd, json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in buf:
                chunk = out.read1(1 << 16)
                if not chunk:
                    raise SystemExit("chromium closed the pipe")
                buf += chunk
            raw, buf = buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == i:
                if "error" in reply:
                    raise SystemExit(f"{method}: {reply['error']}")
                return reply["result"]

    try:
        target = send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]

        def js(expr):
            r = send("Runtime.evaluate", {"expression": expr, "returnByValue": True,
                                          "awaitPromise": True}, session)
            return r["result"].get("value")

        start = time.time()
        send("Page.navigate", {"url": "file://" + page + "#bench=" + str(moves) + more}, session)
        while not js("document.body && document.body.dataset.ready === '1' && "
                     "document.getElementById('bench').textContent !== ''"):
            if js("document.body && document.body.dataset.error"):
                raise SystemExit("the page failed: " + js("document.body.dataset.error"))
            if time.time() - start > 300:
                raise SystemExit("the page did not get ready in 300 s")
            time.sleep(0.05)
        res = json.loads(js("document.getElementById('bench').textContent"))
        res["page_bytes"] = os.path.getsize(page)
        res["page_mib"] = round(os.path.getsize(page) / 2**20, 1)
        res["opened_to_ready_s"] = round(time.time() - start, 2)
        print(json.dumps(res))
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main()
