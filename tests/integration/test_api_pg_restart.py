"""PostgreSQL restart mid-traffic: while clients keep requesting, stop the
database; every request gets a clean 503 database_unavailable (never a reset,
a 500 or a crash), /healthz says 503; start it again and within seconds
everything is 200 again, the same server process still running.

Registered RUN_SERIAL: it stops the PostgreSQL every other test uses."""

import os
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mfharness import Suite, check, expect, files_under  # noqa: E402

S = Suite("api_pg_restart")
RECOVERY = 10  # seconds allowed from pg-start to the first 200


class Traffic:
    """Threads that keep requesting and record (time, status | error, body error, Retry-After)."""

    def __init__(self, srv, paths, token):
        self.srv, self.paths, self.token = srv, paths, token
        self.log = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.loop, args=(p,), daemon=True) for p in paths]

    def loop(self, path):
        while not self.stopping.is_set():
            t = time.monotonic()
            try:
                r = self.srv.get(path, self.token, timeout=15)
                err = None
                if r.status != 200:
                    try:
                        err = r.json.get("error")
                    except AssertionError:
                        err = "non-JSON body %r" % r.body[:80]
                rec = (t, path, r.status, err, r.header("Retry-After"))
            except Exception as e:  # noqa: BLE001 - a reset or refused connection is the failure we look for
                rec = (t, path, None, "%s: %s" % (type(e).__name__, e), None)
            with self.lock:
                self.log.append(rec)
            time.sleep(0.01)

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(20)

    def since(self, t0, t1=None):
        with self.lock:
            return [r for r in self.log if r[0] >= t0 and (t1 is None or r[0] < t1)]


def summary(recs):
    out = {}
    for r in recs:
        key = r[2] if r[2] is not None else r[3]
        out[key] = out.get(key, 0) + 1
    return out


@S.case
def setup():
    S.srv = S.server(http_threads=4).start()
    S.viewer = S.srv.token("viewer", "dash")
    S.op = S.srv.token("operator", "ci")
    r = expect(S.srv.push(S.pack(os.path.join(S.tmpdir("p"), "a.mfpkg")), S.op), 201)
    S.pid = r.json["id"]


def outage(stop_cmd, start_cmd, down_for):
    paths = ["/models", "/packages/%s" % S.pid, "/packages/%s/blob" % S.pid]
    tr = Traffic(S.srv, paths, S.viewer)
    tr.start()
    pg_down = False
    try:
        time.sleep(0.5)
        t_stop = time.monotonic()
        check(all(r[2] == 200 for r in tr.since(0)), "before the outage: %s" % summary(tr.since(0)))
        pg_down = stop_cmd == "pg-stop"
        S.services(stop_cmd)
        t_down = time.monotonic()
        if down_for:
            time.sleep(0.3)
            h = S.srv.get("/healthz")
            check(h.status == 503, "healthz while PostgreSQL is down: %s" % h.brief())
            j = h.json
            check(j.get("database") == "unavailable" and j.get("status") == "unavailable", "healthz body %r" % j)
            r = expect(S.srv.get("/models", S.viewer), 503, "database_unavailable", what="GET /models, db down")
            check(r.header("Retry-After") == "1", "503 without Retry-After: 1 (%r)" % r.header("Retry-After"))
            # Auth needs the database: a valid token must get 503, not 401.
            expect(S.srv.get("/models", S.viewer), 503, what="auth with the database down")
            # A push while the database is down: 503, nothing left behind.
            before = files_under(S.srv.data_dir), files_under(S.srv.tmp)
            pkg = S.pack(os.path.join(S.tmpdir("p"), "down-%d.mfpkg" % int(t_down)), version="9.%d.0" % int(t_down))
            expect(S.srv.push(pkg, S.op), 503, "database_unavailable", what="push with the database down")
            after = files_under(S.srv.data_dir), files_under(S.srv.tmp)
            check(before == after, "push during the outage left files: %r -> %r" % (before, after))
            time.sleep(max(0.0, down_for - (time.monotonic() - t_down)))
        t_start = time.monotonic()
        if start_cmd:
            S.services(start_cmd)
            pg_down = False
        t_up = time.monotonic()
        # Recovery: the first 200 from each path within RECOVERY seconds.
        deadline = t_up + RECOVERY
        while time.monotonic() < deadline:
            recent = tr.since(time.monotonic() - 0.3)
            if recent and all(r[2] == 200 for r in recent) and len({r[1] for r in recent}) == len(paths):
                break
            time.sleep(0.1)
        t_ok = time.monotonic()
        time.sleep(1.0)
        t_end = time.monotonic()
    finally:
        tr.stop()
        if pg_down:  # never leave the other tests without a database
            S.services("pg-start")
    allrecs = tr.since(0)
    bad = [r for r in allrecs if r[2] not in (200, 503) or (r[2] == 503 and r[3] != "database_unavailable")]
    check(not bad, "requests that were neither 200 nor 503 database_unavailable (%d of %d): %s"
          % (len(bad), len(allrecs), sorted({(r[1], r[2], r[3]) for r in bad})[:6]))
    no_retry = [r for r in allrecs if r[2] == 503 and r[4] != "1"]
    check(not no_retry, "%d 503s without Retry-After: 1" % len(no_retry))
    during = tr.since(t_stop, t_start)
    if down_for:
        check(any(r[2] == 503 for r in during), "no 503 seen during the outage: %s" % summary(during))
    check(t_ok < deadline, "not recovered %ds after PostgreSQL came back: last %s"
          % (RECOVERY, summary(tr.since(t_ok - 1))))
    tail = tr.since(t_ok, t_end)
    check(tail and all(r[2] == 200 for r in tail), "after recovery: %s" % summary(tail))
    check(S.srv.alive(), "server process died")
    print("  (outage %.1fs: %s; recovered %.2fs after start)"
          % (t_start - t_stop, summary(during), t_ok - t_up))


@S.case
def pg_stop_then_start_mid_traffic():
    outage("pg-stop", "pg-start", down_for=2.5)
    expect(S.srv.get("/healthz"), 200)
    r = expect(S.srv.push(S.pack(os.path.join(S.tmpdir("p"), "b.mfpkg"), version="2.0.0"), S.op), 201,
               what="push after recovery")
    expect(S.srv.get("/packages/%s/blob" % r.json["id"], S.viewer), 200)


@S.case
def quick_pg_restart_mid_traffic():
    # pg-restart: the server's pooled connections all die at once.
    outage("pg-restart", None, down_for=0)
    expect(S.srv.get("/healthz"), 200)
    expect(S.srv.push(S.pack(os.path.join(S.tmpdir("p"), "c.mfpkg"), version="2.1.0"), S.op), 201,
           what="push after restart")


@S.case
def server_still_exits_cleanly():
    S.srv.stop()


S.run()
