"""The README's chaos drill against a running platform (scripts/drill.sh).

Stages, each timed from the fault and held to a documented limit:
  fault      chaos on: every request answers 503, with steady traffic
  pending    the alerting service sees HighErrorRate pending
  page       its incident is open and the page went out
  ack        `alerting ack` stops the escalation
  mitigated  `runbook run high-error-rate --incident N --apply --yes` exited 4
             (mitigated and verified) and the chaos switch is off
  resolved   the incident resolved itself (the alert cleared for its clear_for)
Exit 0 when every stage happened within its limit, 1 when one did not (the
stages after it are reported as not reached), 2 when the platform is not
there to drill. Only the Python standard library and the two CLIs are used.
"""

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

BOOKING = os.environ.get("BOOKING_URL", "http://127.0.0.1:8080").rstrip("/")
ALERTING = os.environ.get("ALERTING_URL", "http://127.0.0.1:9095").rstrip("/")
ADMIN_KEY = os.environ.get("ADMIN_KEY", "dev-admin-key")
API_KEY = os.environ.get("ALERTING_API_KEY")
RULE = "high-error-rate"
RPS = 5

# (stage, limit in seconds, counted from the stage before): the shipped rule
# pends at its first evaluation (5 s interval), pages at its `for` (2m), and
# resolves a short window (1m) plus `clear_for` (2m) after the fix.
LIMITS = {
    "pending": 20,
    "page": 150,
    "ack": 15,
    "mitigated": 60,
    "resolved": 270,
}


def binary(name):
    """The CLI from DRILL_BIN_DIR, else the checkout's release build
    (CARGO_TARGET_DIR honoured), else PATH."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(root, "target")
    for folder in (os.environ.get("DRILL_BIN_DIR"), os.path.join(target, "release")):
        if folder and os.access(os.path.join(folder, name), os.X_OK):
            return os.path.join(folder, name)
    return name


def call(method, url, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read()
            return r.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            return e.code, json.loads(text)
        except ValueError:
            return e.code, None
    except (urllib.error.URLError, OSError):
        # Not there (refused, reset, timed out): no status to report.
        return None, None


def alerting(path):
    headers = {"authorization": f"Bearer {API_KEY}"} if API_KEY else {}
    return call("GET", f"{ALERTING}{path}", headers=headers)


def chaos(on):
    headers = {"x-admin-key": ADMIN_KEY}
    if on:
        return call("PUT", f"{BOOKING}/v1/admin/chaos", {"error_ratio": 1.0}, headers)
    return call("DELETE", f"{BOOKING}/v1/admin/chaos", headers=headers)


def traffic(stop):
    while not stop.is_set():
        try:
            urllib.request.urlopen(f"{BOOKING}/v1/concerts", timeout=5).read()
        except (urllib.error.URLError, OSError):
            pass
        stop.wait(1 / RPS)


def rule_alert():
    status, body = alerting("/v1/alerts")
    if status != 200:
        return None
    return next((a for a in body["alerts"] if a["key"]["rule_id"] == RULE and a["phase"] != "inactive"), None)


def open_incident(since_ms):
    status, body = alerting("/v1/incidents?state=all")
    if status != 200:
        return None
    mine = [i for i in body["incidents"] if i["rule_id"] == RULE and i["started_at"] >= since_ms - 60_000]
    return max(mine, key=lambda i: i["id"]) if mine else None


def paged(incident_id):
    status, body = alerting(f"/v1/incidents/{incident_id}")
    return status == 200 and any(e["kind"] == "paged" for e in body["timeline"])


class Drill:
    def __init__(self):
        self.fault = None
        self.last = None
        self.results = []
        self.failed = False

    def stage(self, name, limit, check, poll=1.0):
        """Waits for `check()` to return something truthy, within `limit` s
        of the stage before."""
        if self.failed:
            self.results.append((name, None, "not reached"))
            return None
        deadline = (self.last if self.last is not None else time.monotonic()) + limit
        while True:
            got = check()
            if got:
                self.done(name, f"within {limit} s")
                return got
            if time.monotonic() > deadline:
                self.failed = True
                at = time.monotonic() - self.fault
                print(f"  {name:<10} FAILED: not within {limit} s (gave up at +{at:.0f} s)", flush=True)
                self.results.append((name, None, f"not within {limit} s"))
                return None
            time.sleep(poll)

    def skip(self, name):
        """A stage after a failed one: reported, never reached."""
        self.failed = True
        self.results.append((name, None, "not reached"))

    def done(self, name, note=""):
        now = time.monotonic()
        if self.fault is None:
            self.fault = now
        at = now - self.fault
        step = now - (self.last if self.last is not None else now)
        self.last = now
        print(f"  {name:<10} +{at:5.0f} s  (+{step:.0f} s)  {note}", flush=True)
        self.results.append((name, at, note))


def run_cli(args):
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    return out.returncode, out.stdout + out.stderr


def main():
    status, _ = call("GET", f"{BOOKING}/healthz")
    if status != 200:
        print(f"drill: booking does not answer at {BOOKING}/healthz (start it: scripts/run.sh)", file=sys.stderr)
        return 2
    status, _ = alerting("/healthz")
    if status != 200:
        print(f"drill: the alerting service does not answer at {ALERTING}/healthz", file=sys.stderr)
        return 2
    if rule_alert():
        print(f"drill: {RULE} is already pending or firing; resolve that first", file=sys.stderr)
        return 2
    status, state = call("GET", f"{BOOKING}/v1/admin/chaos", headers={"x-admin-key": ADMIN_KEY})
    if status != 200:
        print(f"drill: cannot read booking's chaos switch (HTTP {status}; ADMIN_KEY?)", file=sys.stderr)
        return 2
    if state.get("enabled"):
        print("drill: the chaos switch is already on; turn it off first", file=sys.stderr)
        return 2

    stop = threading.Event()
    threading.Thread(target=traffic, args=(stop,), daemon=True).start()
    drill = Drill()
    print(f"drill: {RPS} requests a second to {BOOKING}; stages timed from the fault", flush=True)
    try:
        started_ms = int(time.time() * 1000)
        status, _ = chaos(True)
        if status != 200:
            print(f"drill: turning chaos on failed (HTTP {status})", file=sys.stderr)
            return 2
        drill.done("fault", "chaos on: every request fails with 503")
        drill.stage("pending", LIMITS["pending"], rule_alert)
        incident = drill.stage(
            "page", LIMITS["page"], lambda: (i := open_incident(started_ms)) and paged(i["id"]) and i
        )
        if incident:
            code, out = run_cli([binary("alerting"), "ack", str(incident["id"]), "--by", "drill"])
            took = time.monotonic() - drill.last
            if code == 0 and took <= LIMITS["ack"]:
                drill.done("ack", f"incident #{incident['id']}: {out.strip()}")
            else:
                drill.failed = True
                why = f"exit {code}" if code else f"took {took:.0f} s, over {LIMITS['ack']} s"
                print(f"  ack        FAILED ({why}): {out.strip()}", flush=True)
                drill.results.append(("ack", None, why))
        else:
            drill.skip("ack")
        if not drill.failed:
            runbook = [binary("runbook"), "run", RULE, "--incident", str(incident["id"]), "--apply", "--yes"]
            code, out = run_cli(runbook)
            print("\n".join("      | " + line for line in out.strip().splitlines()), flush=True)

            def chaos_off():
                status, state = call("GET", f"{BOOKING}/v1/admin/chaos", headers={"x-admin-key": ADMIN_KEY})
                return status == 200 and not state.get("enabled")

            if code == 4:
                drill.stage("mitigated", LIMITS["mitigated"], lambda: chaos_off() and "runbook exit 4 (mitigated, verified), chaos off")
            else:
                # Anything but "mitigated and verified" is a finding, even when
                # the switch went off: a step failed, or verification did not run.
                drill.failed = True
                print(f"  mitigated  FAILED: the runbook exited {code}, not 4 (mitigated and verified)", flush=True)
                drill.results.append(("mitigated", None, f"runbook exit {code}"))
        else:
            drill.skip("mitigated")

        def resolved():
            _, body = alerting(f"/v1/incidents/{incident['id']}")
            return body and body["incident"]["state"] == "resolved"

        drill.stage("resolved", LIMITS["resolved"], resolved, poll=2.0)
    finally:
        stop.set()
        chaos(False)
    missed = [name for name, at, _ in drill.results if at is None]
    if missed:
        print(f"drill FAILED: {', '.join(missed)} did not happen in time (limits: README, Alerting)")
        return 1
    print("drill passed: every stage within its limit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
