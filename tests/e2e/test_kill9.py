"""e2e 8 — kill -9 in a timing loop, with the real server, broker and runner.
fp32 is current; the retained desired state names int8. The daemon is
started and SIGKILLed after a random delay (0-2 s), eight times; after each
kill state.json must parse and `status --json` must show a complete current
(fp32 or int8). Then it runs to the end: int8 current, no op in flight.

To spread the kills over the whole install rather than its first 0.2 s, the
download goes through a proxy that sends the blob in about 2.5 s (it is
resumed after each kill; the agent's own download_rate does not slow a
100 KB blob on loopback, libcurl reads it in one burst) and
the runner is the real OpenCV runner behind a wrapper that sleeps 0.3 s
before each run. MF_E2E_SEED=N replays a given sequence of delays."""

import os
import random
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agentharness import AgentSuite, Proxy, check, log, trail, wait_for  # noqa: E402

S = AgentSuite("e2e_kill9")
KILLS = 8


@S.case
def setup():
    S.setup_server()
    S.push_fixtures(("fp32", "int8"))
    S.dev = S.device_id("kill")
    S.w = S.watch(S.dev)
    S.ag = S.agent(S.dev, credential_file=S.enroll(S.dev)).start()
    S.publish(S.dev, S.desired(S.dev, 1, ["fp32"]))
    S.w.wait_event("activated", 60)
    check(S.ag.stop() == 0, "agent exit status")
    wrapper = os.path.join(S.tmpdir("runner"), "slow-opencv.sh")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\nsleep 0.3\nexec '%s' \"$@\"\n" % S.opencv)
    os.chmod(wrapper, 0o755)
    S.ag.config["runners"] = "onnx=%s" % wrapper
    S.ag.config["server_url"] = Proxy(S, S.srv.port, rate=S.packages["int8"]["size"] * 2 // 5).url
    S.ag.write_config()
    S.publish(S.dev, S.desired(S.dev, 2, ["int8"]))  # retained: seen at every start


def invariants(k, delay):
    with open(os.path.join(S.ag.config["state_dir"], "state.json")) as f:
        state = json_load(f, k)
    st = S.ag.status()
    cur = S.ag.current(st)
    check(cur is not None and cur[2] is True, "kill %d (%.2fs): current not complete: %s" % (k, delay, st))
    want = {"1.0.0": S.packages["fp32"]["id"], "1.1.0": S.packages["int8"]["id"]}
    check(want.get(cur[0]) == cur[1], "kill %d: current is %s" % (k, cur))
    phase = "%s/%s" % (st["op"]["kind"], st["op"]["phase"]) if st["op"] else "idle"
    check(state.get("desired_seq") in (1, 2), "kill %d: state.json desired_seq %s" % (k, state.get("desired_seq")))
    return cur[0], phase


def json_load(f, k):
    import json
    try:
        return json.load(f)
    except ValueError as e:
        raise AssertionError("kill %d: state.json does not parse: %s" % (k, e))


@S.case
def kill_restart_loop():
    seed = int(os.environ.get("MF_E2E_SEED", "0") or 0) or int(time.time())
    rng = random.Random(seed)
    log("MF_E2E_SEED=%d" % seed)
    hits = []
    for k in range(1, KILLS + 1):
        delay = rng.uniform(0.0, 2.0)
        S.ag.start()
        time.sleep(delay)
        check(S.ag.alive(), "kill %d: the agent exited by itself\n%s" % (k, S.ag.tail()))
        S.ag.kill()
        version, phase = invariants(k, delay)
        hits.append("%.2fs:%s:%s" % (delay, phase, version))
    log("kills (delay:op at the kill:current): %s" % " ".join(hits))
    for line in S.ag.log_text().splitlines():
        if "download" in line or "recover" in line or "==== start" in line or "benchmark" in line:
            log("agent: " + line[:160])
    check(any(":idle:" not in h for h in hits), "no kill landed during the install: %s" % hits)
    S.hits = hits


@S.case
def then_it_finishes():
    S.ag.start()
    ok = wait_for(lambda: (lambda st: st["op"] is None and st["desired_done"] and
                           S.ag.current(st)[0] == "1.1.0")(S.ag.status()), 60, 0.1)
    check(ok, "int8 not reached after the kills: %s\n%s" % (S.ag.status(), S.ag.tail()))
    st = S.ag.status()
    check(S.ag.current(st) == ("1.1.0", S.packages["int8"]["id"], True) and st["desired_seq"] == 2,
          "status: %s" % st)
    prev = st["models"][0]["previous"]
    check(prev and prev["version"] == "1.0.0" and prev["complete"], "previous: %s" % prev)
    S.w.wait(lambda w: (lambda s: s and s["op"] is None and s["models"][0]["version"] == "1.1.0")(w.last_state()),
             20, "a state with int8 current")
    ok = wait_for(lambda: S.ag.status()["spool"]["pending"] == 0, 10, 0.1)
    check(ok, "spool not emptied: %s" % S.ag.status()["spool"])
    check(S.ag.stop() == 0, "agent exit status")
    # what the device told the server, in msg order, once each
    t = trail(S.w.events())
    log("events: %s" % t)
    kinds = set(x.split(":")[0] for x in t.split())
    check(kinds <= {"desired_accepted", "activated", "recovered"}, "unexpected events: %s" % t)
    ev = {e["msg"]: e for e in S.w.events()}
    check(any((e["kind"] == "activated" and e.get("version") == "1.1.0") or
              (e["kind"] == "recovered" and e.get("reason") == "activation_finished") for e in ev.values()),
          "int8's activation was never reported: %s" % t)
    check(sum(e["kind"] == "desired_accepted" and e.get("desired_seq") == 2 for e in ev.values()) == 1,
          "desired seq 2 accepted more or less than once: %s" % t)
    nums = sorted(set([e["msg"] for e in S.w.events()] + [r["msg"] for r in S.w.reports()]))
    check(nums == list(range(1, len(nums) + 1)), "msg numbers with gaps: %s" % nums)
    # nothing half-done left on disk
    sd = S.ag.config["state_dir"]
    leftovers = [n for n in os.listdir(os.path.join(sd, "models", "digits"))
                 if n.startswith(".staging") or ".tmp" in n]
    check(not leftovers, "left in models/digits: %s" % leftovers)
    check(os.listdir(os.path.join(sd, "downloads")) == [], "downloads/: %s" % os.listdir(os.path.join(sd, "downloads")))
    S.w.no_errors()
    S.clear_retained(S.dev)


S.run()
