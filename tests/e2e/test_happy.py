"""e2e 1 — the happy path through a real broker, the real server and the
OpenCV runner: fp32 activates; int8 activates against it (report with the
paired table); the over-quantized int2 is refused by the gate and int8 stays;
a desired state naming 1.0.0 again activates it without any download (a
counting proxy sits between the agent and the server); SIGTERM leaves the
retained online "0" and exit status 0."""

import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agentharness import AgentSuite, Proxy, check, log, trail, wait_for  # noqa: E402

S = AgentSuite("e2e_happy")



def wait_state(version, after, timeout=30):
    """The newest state names `version` as current with no op in flight, and
    comes after message `after` (the event that said so)."""
    def ok(w):
        s = w.last_state()
        return s if (s and s["msg"] >= after and s["op"] is None and s["models"]
                     and s["models"][0]["version"] == version) else None
    return S.w.wait(ok, timeout, "a state with digits %s current and no op" % version)


@S.case
def setup():
    S.setup_server()
    S.push_fixtures()
    S.dev = S.device_id("happy")
    cred = S.enroll(S.dev)
    S.proxy = Proxy(S, S.srv.port)
    S.w = S.watch(S.dev)
    S.ag = S.agent(S.dev, server_url=S.proxy.url, credential_file=cred).start()
    S.w.wait(lambda w: any(m["payload"] == "1" for m in w.snapshot("online")), 20, "online 1")
    s = S.w.wait(lambda w: w.last_state(), 20, "the first state")
    check(s["models"] == [] and s["desired_seq"] == 0 and s["msg"] == 0 and s["op"] is None,
          "a fresh agent's state: %s" % s)
    check(s["hw_class"] == "rpi5" and s["runtimes"] == ["onnx"] and s["agent_version"] == "0.4.0",
          "state identity: %s" % s)


@S.case
def fp32_activates():
    S.publish(S.dev, S.desired(S.dev, 1, ["fp32"], rollout=7))
    e = S.w.wait_event("activated", 60)
    check(trail(S.w.events()) == "desired_accepted activated", "events: %s" % trail(S.w.events()))
    p = S.packages["fp32"]
    check(e["version"] == "1.0.0" and e["package"] == p["id"] and e["desired_seq"] == 1
          and e["rollout"] == 7 and e["origin"] == "desired" and "from_version" not in e,
          "activated event: %s" % e)
    s = wait_state("1.0.0", e["msg"])
    check(s["models"][0]["package"] == p["id"] and s["models"][0]["previous"] is None
          and s["desired_seq"] == 1, "state: %s" % s)
    reps = S.w.wait(lambda w: w.reports(), 10, "a report")
    r = reps[-1]
    check(r["validity"]["valid"] is True and r["gate"]["pass"] is True, "report: %s" % r)
    check(r["candidate"]["version"] == "1.0.0" and r["candidate"]["package"] == p["id"]
          and "incumbent" not in r and r["eval"]["n"] == 360
          and r["desired_seq"] == 1 and r["rollout"] == 7 and r["run"]["warmup"] == 1,
          "report: %s" % r)
    # the runner's own name and version (docs/runner-protocol.md, first line)
    check(r["runtime"]["name"] == "opencv-dnn" and r["runtime"]["version"][:1].isdigit(),
          "report runtime: %s" % r["runtime"])
    check(r["candidate"]["accuracy"] >= 0.95, "fp32 accuracy %s" % r["candidate"]["accuracy"])
    # msg numbers: accepted 1, report 2, activated 3; the state carries the last
    check(sorted([x["msg"] for x in S.w.events()] + [r["msg"]]) == [1, 2, 3], "msg numbers")
    check(s["msg"] == 3, "state msg %s, want 3" % s["msg"])
    check(S.retained(S.dev, "online") == "1", "retained online is not 1")
    st = S.ag.wait_idle()
    check(S.ag.current(st) == ("1.0.0", p["id"], True), "status --json: %s" % st)
    check(len(S.proxy.blob_gets()) >= 1, "no blob GET went through the proxy")


@S.case
def int8_activates_against_fp32():
    before = S.w.max_msg()
    S.publish(S.dev, S.desired(S.dev, 2, ["int8"]))
    e = S.w.wait_event("activated", 60, after=before)
    check(trail(S.w.events(), before) == "desired_accepted activated",
          "events: %s" % trail(S.w.events(), before))
    check(e["version"] == "1.1.0" and e["from_version"] == "1.0.0", "activated: %s" % e)
    s = wait_state("1.1.0", e["msg"])
    prev = s["models"][0]["previous"]
    check(prev == {"version": "1.0.0", "package": S.packages["fp32"]["id"]}, "previous: %s" % prev)
    r = [x for x in S.w.reports() if x["msg"] > before][-1]
    check("incumbent" in r and r["incumbent"]["version"] == "1.0.0", "report without incumbent: %s" % r)
    pr = r["paired"]
    total = pr["both"] + pr["only_candidate"] + pr["only_incumbent"] + pr["neither"]
    check(total == 360 == r["eval"]["n"], "paired table sums to %d: %s" % (total, pr))
    check(r["gate"]["pass"] is True and r["validity"]["valid"] is True, "gate: %s" % r["gate"])
    log("int8 vs fp32: paired %s, drop %s, p99 ratio %s"
        % (pr, r["gate"]["drop"], r["latency_ratio"].get("p99")))


@S.case
def int2_refused_int8_stays():
    before = S.w.max_msg()
    S.publish(S.dev, S.desired(S.dev, 3, ["int2"]))
    e = S.w.wait_event("refused", 60, after=before)
    check(trail(S.w.events(), before) == "desired_accepted refused:min_accuracy",
          "events: %s" % trail(S.w.events(), before))
    checks = [f["check"] for f in e["failures"]]
    check(checks == ["min_accuracy", "max_accuracy_drop"], "failures: %s" % e["failures"])
    for f in e["failures"]:
        check(f["measured"] < f["limit"] if f["check"] == "min_accuracy" else f["measured"] > f["limit"],
              "failure figures: %s" % f)
        check(f["excess"] > 0 and f["reason"], "failure: %s" % f)
    check(e["version"] == "1.2.0" and e["package"] == S.packages["int2"]["id"], "refused: %s" % e)
    r = S.w.wait(lambda w: [x for x in w.reports() if x["msg"] > before], 10, "the int2 report")[-1]
    check(r["gate"]["pass"] is False and len(r["gate"]["failures"]) == 2, "report gate: %s" % r["gate"])
    s = wait_state("1.1.0", e["msg"])
    check(s["desired_seq"] == 3, "state: %s" % s)
    st = S.ag.status()
    check(S.ag.current(st) == ("1.1.0", S.packages["int8"]["id"], True), "status: %s" % st)


@S.case
def back_to_fp32_without_download():
    gets = len(S.proxy.blob_gets())
    done = S.ag.log_count(r"download done")
    check(done == 3, "expected 3 'download done' log lines so far, got %d" % done)
    before = S.w.max_msg()
    S.publish(S.dev, S.desired(S.dev, 4, ["fp32"]))
    e = S.w.wait_event("activated", 30, after=before)
    check(trail(S.w.events(), before) == "desired_accepted activated",
          "events: %s" % trail(S.w.events(), before))
    check(e["version"] == "1.0.0" and e["from_version"] == "1.1.0", "activated: %s" % e)
    s = wait_state("1.0.0", e["msg"])
    check(s["models"][0]["previous"]["version"] == "1.1.0", "state: %s" % s)
    check(len(S.proxy.blob_gets()) == gets, "the server got %d new blob GET(s) for a rollback"
          % (len(S.proxy.blob_gets()) - gets))
    check(S.ag.log_count(r"download done") == done, "a rollback logged a download")
    check(not [x for x in S.w.reports() if x["msg"] > before], "a rollback ran a benchmark")


@S.case
def sigterm_goes_offline():
    # every event and report acknowledged by the broker (QoS 1) leaves the spool
    pending = wait_for(lambda: S.ag.status()["spool"]["pending"] == 0, 10, 0.1)
    check(pending, "the spool still holds messages the watcher received: %s" % S.ag.status()["spool"])
    rc = S.ag.stop()
    check(rc == 0, "agent exited %d after SIGTERM" % rc)
    check(S.retained(S.dev, "online") == "0", "retained online after SIGTERM is not 0")
    S.w.no_errors()
    check(S.ag.status()["spool"]["pending"] == 0, "messages left in the spool")
    S.clear_retained(S.dev)


S.run()
