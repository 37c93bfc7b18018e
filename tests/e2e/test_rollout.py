"""e2e rollout — staged rollouts on a real fleet: one modelfleet-server with
its rollout controller (controller_interval_ms 300) on the fixture
PostgreSQL and mosquitto, and six `modelfleet-agent run` processes in two
hardware classes (3 rpi5, 3 jetson) with the OpenCV runner and the fixture
models. The cases share the fleet and run in order:

  1 fp32 1.0.0, a first install (no incumbent), reaches every device;
  2 int8 1.1.0 passes both stages and completes at 100%, with the paired
    tables of three devices per class as the evidence;
  3 the over-quantized int2 1.2.0, packed with LAX manifest thresholds so the
    agents' own gate activates it, fails its first stage on the server's fleet
    gate (accuracy against int8), every device that took it is sent back to
    int8 automatically, and the devices of the later stage never see it;
  4 an agent stopped before a rollout (its bucket in the last stage) keeps
    that stage from passing while away and converges when it comes back;
  5 a server restart in the middle of a stage: the rollout goes on where it
    was (same stage clock, same assignments) and completes;
  6 per-class independence: one version whose jetson package is int2 (lax)
    and whose rpi5 package is int8: jetson fails and rolls back, rpi5
    completes.
Every wait has a timeout and fails with the rollout JSON, its devices, the
fleet's versions and the server log tail (agent log tails follow)."""

import functools
import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agentharness import AgentSuite, Failure, check, log, trail  # noqa: E402
from fleet import Fleet, bucket, first_stage  # noqa: E402

S = AgentSuite("e2e_rollout")
CLASSES = {"rpi5": 3, "jetson": 3}
N_EVAL = 360  # items of the fixture evaluation set

# Small, fast stages: about a third of each class (at least one device),
# then all three; no soak. The latency gates are loose: the fixture models
# infer in a few microseconds, so a ratio of two latencies is quantized
# noise on a shared CI box (measured per device: p50 ratios 0.3-3, p99 ratios
# 0.04-65 between int8 and fp32, whose real costs are alike). The p50 gate
# stays on at 10x, the p99 gate is off (0 = none).
STAGES = [{"percent": 34, "min_devices": 1, "min_reporting": 1, "soak_s": 0, "timeout_s": 120},
          {"percent": 100, "min_devices": 0, "min_reporting": 3, "soak_s": 0, "timeout_s": 120}]
GATES = {"max_accuracy_drop": 0.01, "max_p50_ratio": 10, "max_p99_ratio": 0}
ROLLOUT_TIMEOUT = 120


def plan(version, stages=STAGES, **kw):
    p = {"model": "digits", "version": version, "stages": stages, "gates": GATES,
         "on_fail": "rollback", "scope": "per_class", "watch_s": 0}
    p.update(kw)
    return p


def start(version, **kw):
    """POST /rollouts; checks the object's basics; returns (id, the first
    stage of each device {id: stage} from its bucket)."""
    r = F.start_rollout(plan(version, **kw))
    rid = r["id"]
    check(r["model"] == "digits" and r["version"] == version and r["status"] == "running"
          and r["stage"] == 0 and r["stages"] and len(r["stages"]) == len(kw.get("stages", STAGES)),
          "POST /rollouts answered %s" % r)
    check(sorted(c["hw_class"] for c in r["classes"]) == sorted(CLASSES)
          and all(c["status"] == "active" for c in r["classes"]), "classes: %s" % r["classes"])
    stages = r["plan"]["stages"]
    where = {}
    for cls in CLASSES:
        where.update(first_stage(stages, [d.id for d in F.of_class(cls)], rid))
    log("rollout %d of %s: stage per device %s" % (rid, version, where))
    return rid, where


def check_rollout_devices(rid, where, version, outcome, expect_ids=None, running=None):
    """GET /rollouts/{id}/devices: the devices assigned, each with the bucket
    and the stage the docs' formula gives, the outcome and version expected."""
    got = {x["id"]: x for x in F.rollout_devices(rid)}
    ids = set(expect_ids if expect_ids is not None else where)
    check(set(got) == ids, "rollout %d devices %s, expected %s" % (rid, sorted(got), sorted(ids)))
    for dev, x in got.items():
        check(abs(x["bucket"] - bucket(dev, rid)) < 1e-9,
              "%s bucket %s, docs formula %s" % (dev, x["bucket"], bucket(dev, rid)))
        check(x["stage"] == where[dev], "%s assigned at stage %s, its bucket says %s: %s"
              % (dev, x["stage"], where[dev], x))
        check(x["hw_class"] == F.device(dev).hw_class, "%s hw_class %s" % (dev, x["hw_class"]))
        check(x["outcome"] == outcome, "%s outcome %s, expected %s: %s" % (dev, x["outcome"], outcome, x))
        check(x["running"] == (running or version), "%s running %s: %s" % (dev, x["running"], x))
    return got


def check_passed(r, rid):
    """Every stage passed; the last stage's evidence per class: 3 reporting,
    verdict pass; returns the last stage's evidence by class."""
    check([s["status"] for s in r["stages"]] == ["passed"] * len(r["stages"]),
          "stage statuses of rollout %d: %s" % (rid, [s["status"] for s in r["stages"]]))
    last = {c["hw_class"]: c for c in r["stages"][-1]["classes"]}
    check(sorted(last) == sorted(CLASSES), "last stage evidence classes: %s" % sorted(last))
    for cls, e in last.items():
        check(e["verdict"] == "pass" and e["reporting"] >= CLASSES[cls] and e["stage"] == len(STAGES) - 1,
              "%s last stage evidence: %s" % (cls, e))
    counts = {c["hw_class"]: c for c in r["counts"]}
    for cls, n in CLASSES.items():
        c = counts[cls]
        check(c["targeted"] == n and c["active"] == n and c["refused"] == 0 and c["failed"] == 0
              and c["rolled_back"] == 0, "%s counts: %s" % (cls, c))
    return last


def case(fn):
    """S.case, and a failure also shows the evidence of the last rollout (its
    JSON and devices, the fleet's versions, the server log tail) unless the
    failing wait already did; the agents' log tails follow (AgentSuite)."""
    @functools.wraps(fn)
    def wrapped():
        try:
            fn()
        except Failure as e:
            if "---- server log" in str(e) or F is None:
                raise
            raise Failure("%s\n%s" % (e, F.evidence(F.last_rid)))
        except Exception:
            if F is not None:
                print(F.evidence(F.last_rid), flush=True)
            raise
    return S.case(wrapped)


F = None

# ---------------------------------------------------------------------------

@case
def setup():
    global F
    F = Fleet(S, CLASSES, controller_interval_ms=300).start()
    api = F.api_devices()
    check(len(api) == 6, "GET /devices: %d of the fleet's 6 devices" % len(api))
    for d in F.devices:
        x = api[d.id]
        check(x["hw_class"] == d.hw_class and x["online"] is True and not x.get("models"),
              "GET /devices %s: %s" % (d.id, x))
    # fp32 and int8 with the strict thresholds of a real package (the agent
    # refuses what drops more than a point); int2 with LAX ones (min accuracy
    # 0, any drop) so that only the server's fleet gate can stop it
    F.pack_push("fp32", "1.0.0", "digits-fp32.onnx")
    F.pack_push("int8", "1.1.0", "digits-int8.onnx")
    F.pack_push("int2", "1.2.0", "digits-int2.onnx", min_accuracy=0, max_accuracy_drop=1)
    r = F.api("GET", "/rollouts", token=F.viewer)
    check(r["rollouts"] == [], "a fresh server has rollouts: %s" % r)


@case
def fp32_first_install():
    rid, where = start("1.0.0")
    r = F.wait_status(rid, "completed", ROLLOUT_TIMEOUT)
    F.log_rollout(rid)
    F.wait_versions("1.0.0", F.devices, 60, rid)
    check(r["finished_at"] and r["reason"], "completed without finished_at/reason: %s" % r)
    last = check_passed(r, rid)
    for cls, e in last.items():  # a first install: nothing to compare with
        check(e["with_incumbent"] == 0, "%s: with_incumbent on a first install: %s" % (cls, e))
    got = check_rollout_devices(rid, where, "1.0.0", "active")
    for dev, x in got.items():
        check(x["from_version"] is None,
              "%s from_version %s on a first install" % (dev, x["from_version"]))
    api = F.api_devices()
    for d in F.devices:
        check([(m["name"], m["version"], m["package"]) for m in api[d.id]["models"]]
              == [("digits", "1.0.0", S.packages["fp32"]["id"])],
              "GET /devices %s: %s" % (d.id, api[d.id]))
        acts = [e for e in d.watch.events() if e["kind"] == "activated" and e.get("rollout") == rid]
        # (deduplicated by msg number: QoS 1 may deliver a message twice)
        check(len({e["msg"] for e in acts}) == 1 and acts[0]["version"] == "1.0.0",
              "%s activations: %s" % (d.id, acts))


@case
def int8_passes_every_stage():
    rid, where = start("1.1.0")
    r = F.wait_status(rid, "completed", ROLLOUT_TIMEOUT)
    F.log_rollout(rid)
    F.wait_versions("1.1.0", F.devices, 60, rid)
    last = check_passed(r, rid)
    for cls, e in last.items():
        cells = e["both"] + e["only_candidate"] + e["only_incumbent"] + e["neither"]
        check(e["with_incumbent"] >= CLASSES[cls] and cells == e["n"] == N_EVAL * e["with_incumbent"],
              "%s: paired table %d cells, n %s, with_incumbent %s: %s"
              % (cls, cells, e["n"], e["with_incumbent"], e))
        check(e["correct"] == e["both"] + e["only_candidate"] and e["accuracy"] >= 0.95
              and e["drop"] <= 0.01 and e["drop_upper"] <= 0.01, "%s accuracy evidence: %s" % (cls, e))
        check(e["p50_ratio"] is not None and 0 < e["p50_ratio"] <= GATES["max_p50_ratio"],
              "%s latency: %s" % (cls, e))
        log("%s: n %d paired %d/%d/%d/%d accuracy %.4f drop %.4f (upper %.4f) p50x %.2f p99x %.2f"
            % (cls, e["n"], e["both"], e["only_candidate"], e["only_incumbent"], e["neither"],
               e["accuracy"], e["drop"], e["drop_upper"], e["p50_ratio"], e["p99_ratio"] or 0))
    first = {c["hw_class"]: c for c in r["stages"][0]["classes"]}
    for cls, e in first.items():
        check(e["verdict"] == "pass" and e["reporting"] >= 1, "%s stage 0 evidence: %s" % (cls, e))
    got = check_rollout_devices(rid, where, "1.1.0", "active")
    for dev, x in got.items():
        check(x["from_version"] == "1.0.0", "%s from_version %s" % (dev, x["from_version"]))
    for d in F.devices:
        st = d.agent.status()
        prev = st["models"][0]["previous"]
        check(prev and prev["version"] == "1.0.0", "%s previous: %s" % (d.id, prev))
        reps = [x for x in d.watch.reports() if x.get("rollout") == rid]
        check(len({x["msg"] for x in reps}) == 1 and reps[0]["incumbent"]["version"] == "1.0.0",
              "%s reports of rollout %d: %s" % (d.id, rid, reps))


@case
def int2_fails_first_stage_and_rolls_back():
    rid, where = start("1.2.0")
    first = [d for d in F.devices if where[d.id] == 0]
    later = [d for d in F.devices if where[d.id] > 0]
    r = F.wait_status(rid, "failed", ROLLOUT_TIMEOUT)
    F.log_rollout(rid)
    check("accuracy" in (r["reason"] or ""), "failure reason does not name accuracy: %r" % r["reason"])
    check(r["stage"] == 0 and r["stages"][0]["status"] == "failed"
          and r["stages"][1]["status"] in ("pending", "aborted"),
          "stages of the failed rollout: %s" % [(s["stage"], s["status"]) for s in r["stages"]])
    for e in r["stages"][0]["classes"]:
        check(e["verdict"] == "fail" and "accuracy" in e["reason"] and e["drop"] > 0.01,
              "%s stage 0 evidence: %s" % (e["hw_class"], e))
        log("%s: %s" % (e["hw_class"], e["reason"]))
    check(sorted(c["status"] for c in r["classes"]) == ["failed", "failed"], "classes: %s" % r["classes"])
    # every device that took int2 is back on int8, automatically
    F.wait_versions("1.1.0", F.devices, 60, rid)
    F.wait(lambda: all(x["outcome"] == "rolled_back" for x in F.rollout_devices(rid)), 30,
           "every device of rollout %d rolled back" % rid, rid)
    got = check_rollout_devices(rid, where, "1.2.0", "rolled_back", expect_ids=[d.id for d in first],
                                running="1.1.0")
    for dev, x in got.items():
        check(x["from_version"] == "1.1.0" and x["rolled_back_at"], "%s: %s" % (dev, x))
    for d in first:
        ev = d.watch.events()
        took = [e for e in ev if e["kind"] == "activated" and e.get("version") == "1.2.0"]
        check(took and took[0].get("rollout") == rid,
              "%s never activated int2 (its own gate must let it through): %s" % (d.id, trail(ev)))
        back = [e for e in ev if e["kind"] in ("activated", "rolled_back") and e.get("version") == "1.1.0"
                and e.get("from_version") == "1.2.0" and e["msg"] > took[0]["msg"]]
        check(back, "%s: no switch back from 1.2.0 to 1.1.0: %s" % (d.id, trail(ev)))
        log("%s took int2 and went back: %s (%s)" % (d.id, back[0]["kind"], back[0].get("detail")))
    for d in later:
        check("1.2.0" not in d.versions_seen(),
              "%s of a later stage saw int2: %s" % (d.id, trail(d.watch.events())))
        prev = d.agent.status()["models"][0]["previous"]
        check(prev is None or prev["version"] != "1.2.0", "%s has int2 as previous" % d.id)
    r = F.rollout(rid)
    counts = {c["hw_class"]: c for c in r["counts"]}
    for cls in CLASSES:
        n = len([d for d in first if d.hw_class == cls])
        check(counts[cls]["rolled_back"] == n,
              "%s counts: %s (expected %d rolled back)" % (cls, counts[cls], n))
    api = F.api_devices()
    check(all(F.api_version(api[d.id]) == "1.1.0" for d in F.devices),
          "GET /devices versions: %s" % F.versions())


@case
def offline_agent_converges():
    F.pack_push("fp32b", "1.3.0", "digits-fp32.onnx")
    want = F.next_rollout_id()
    # a device whose bucket puts it in the last stage of its class (the
    # highest bucket of the fleet: when no class has one there, about one run
    # in 700, it is in stage 0 and still holds back the last stage, which
    # needs every device's report)
    stage_of = {}
    for cls in CLASSES:
        stage_of.update(first_stage(STAGES, [d.id for d in F.of_class(cls)], want))
    pick = F.device(max(stage_of, key=lambda i: (stage_of[i], bucket(i, want), i)))
    log("stopping %s (bucket %.4f, stage %d of rollout %d)"
        % (pick.id, bucket(pick.id, want), stage_of[pick.id], want))
    check(pick.agent.stop() == 0, "agent exit status")
    F.wait(lambda: F.api_devices()[pick.id]["online"] is False, 20,
           "the server to see %s offline" % pick.id)
    rid, where = start("1.3.0")
    check(rid == want, "rollout id %s, expected %s (the stopped device was picked by the bucket "
          "of the id GET /rollouts predicted)" % (rid, want))
    others = [d for d in F.devices if d is not pick]
    F.wait_versions("1.3.0", others, ROLLOUT_TIMEOUT, rid)
    # the last stage is running, assigned to the device that is away, and
    # cannot pass without its report: missing data is never a pass
    mine = [d for d in F.of_class(pick.hw_class) if d is not pick]

    def waiting():
        r = F.rollout(rid)
        x = {y["id"]: y for y in F.rollout_devices(rid)}
        ev = {c["hw_class"]: c for c in r["stages"][-1]["classes"]}
        return (r if r["status"] == "running" and r["stage"] == len(STAGES) - 1
                and x.get(pick.id, {}).get("outcome") == "assigned"
                and ev.get(pick.hw_class, {}).get("verdict") == "inconclusive"
                and ev[pick.hw_class]["reporting"] == len(mine) else None)
    F.wait(waiting, 30, "the last stage waiting for %s" % pick.id, rid)
    time.sleep(2)  # a few controller steps more: still waiting
    r = F.rollout(rid)
    check(r["status"] == "running" and r["stage"] == len(STAGES) - 1,
          "rollout %d moved on without %s: %s %s" % (rid, pick.id, r["status"], r["stage"]))
    x = {y["id"]: y for y in F.rollout_devices(rid)}[pick.id]
    check(x["online"] is False and x["running"] == "1.1.0", "%s while away: %s" % (pick.id, x))
    # while it is live, it is the one live rollout of digits: another is 409
    live = F.api("GET", "/rollouts?model=digits&status=live", token=F.viewer)["rollouts"]
    check([y["id"] for y in live] == [rid], "live rollouts: %s" % live)
    j = F.start_rollout(plan("1.1.0"), expect=409)
    check(j["error"] == "conflict" and j.get("existing") == rid, "a second live rollout: %s" % j)
    pick.agent.start()
    r = F.wait_status(rid, "completed", ROLLOUT_TIMEOUT)
    F.log_rollout(rid)
    F.wait_versions("1.3.0", F.devices, 60, rid)
    check_passed(r, rid)
    check_rollout_devices(rid, where, "1.3.0", "active")
    ev = pick.watch.events()
    check([e for e in ev if e["kind"] == "activated" and e.get("version") == "1.3.0"
           and e.get("rollout") == rid], "%s: no activation of 1.3.0: %s" % (pick.id, trail(ev)))


@case
def server_restart_mid_stage():
    F.pack_push("int8b", "1.4.0", "digits-int8.onnx")
    # stage 0 soaks 8 s, so it is surely still running when the server stops
    stages = [dict(STAGES[0], soak_s=8), STAGES[1]]
    rid, where = start("1.4.0", stages=stages)
    before = F.wait(lambda: (lambda x: x if x else None)(F.rollout_devices(rid)), 20,
                    "a device assigned in stage 0", rid)
    r0 = F.rollout(rid)
    check(r0["status"] == "running" and r0["stage"] == 0, "before the restart: %s" % r0["status"])
    F.srv.stop()
    log("server stopped at stage 0 with %s assigned" % sorted(x["id"] for x in before))
    time.sleep(3)
    F.srv.start()
    r1 = F.rollout(rid)
    # where it was: the same stage clock (not restarted), nothing undone
    check(r1["status"] in ("running", "watching", "completed") and r1["stage"] >= r0["stage"]
          and r1["stages"][0]["started_at"] == r0["stages"][0]["started_at"],
          "after the restart: status %s stage %s started %s (was %s)"
          % (r1["status"], r1["stage"], r1["stages"][0]["started_at"], r0["stages"][0]["started_at"]))
    r = F.wait_status(rid, "completed", ROLLOUT_TIMEOUT)
    F.log_rollout(rid)
    F.wait_versions("1.4.0", F.devices, 60, rid)
    check_passed(r, rid)
    got = check_rollout_devices(rid, where, "1.4.0", "active")
    for x in before:  # not assigned again
        check(got[x["id"]]["assigned_at"] == x["assigned_at"],
              "%s assigned_at changed over the restart: %s -> %s"
              % (x["id"], x["assigned_at"], got[x["id"]]["assigned_at"]))
    for d in F.devices:
        seqs = {e["desired_seq"] for e in d.watch.events()
                if e["kind"] == "desired_accepted" and e.get("rollout") == rid}
        check(len(seqs) == 1, "%s accepted desired states %s for rollout %d (one expected)"
              % (d.id, sorted(seqs), rid))


@case
def one_class_fails_the_other_completes():
    # one version, two packages: int8 for rpi5, the over-quantized int2
    # (lax thresholds) for jetson
    F.pack_push("mixed-rpi5", "1.5.0", "digits-int8.onnx", hardware=["rpi5"])
    F.pack_push("mixed-jetson", "1.5.0", "digits-int2.onnx", hardware=["jetson"],
                min_accuracy=0, max_accuracy_drop=1)
    rid, where = start("1.5.0")
    r = F.wait_status(rid, "completed", ROLLOUT_TIMEOUT)
    F.log_rollout(rid)
    cls = {c["hw_class"]: c["status"] for c in r["classes"]}
    check(cls == {"rpi5": "done", "jetson": "failed"}, "class statuses: %s" % cls)
    F.wait_versions("1.5.0", F.of_class("rpi5"), 60, rid)
    F.wait_versions("1.4.0", F.of_class("jetson"), 60, rid)
    api = F.api_devices()
    for d in F.of_class("rpi5"):
        check(api[d.id]["models"][0]["package"] == S.packages["mixed-rpi5"]["id"], "%s package" % d.id)
    first = {e["hw_class"]: e for e in r["stages"][0]["classes"]}
    check(first["jetson"]["verdict"] == "fail" and "accuracy" in first["jetson"]["reason"],
          "jetson stage 0: %s" % first["jetson"])
    check(first["rpi5"]["verdict"] == "pass", "rpi5 stage 0: %s" % first["rpi5"])
    last = {e["hw_class"]: e for e in r["stages"][-1]["classes"]}
    check("rpi5" in last and last["rpi5"]["verdict"] == "pass" and last["rpi5"]["reporting"] >= 3,
          "rpi5 last stage: %s" % last.get("rpi5"))
    devs = {x["id"]: x for x in F.rollout_devices(rid)}
    jet_first = sorted(d.id for d in F.of_class("jetson") if where[d.id] == 0)
    check(sorted(i for i, x in devs.items() if x["hw_class"] == "jetson") == jet_first,
          "jetson devices of the rollout: %s, expected the stage-0 ones %s" % (sorted(devs), jet_first))
    for i in jet_first:
        check(devs[i]["outcome"] == "rolled_back" and devs[i]["running"] == "1.4.0", "%s: %s" % (i, devs[i]))
    for d in F.of_class("rpi5"):
        check(devs[d.id]["outcome"] == "active", "%s: %s" % (d.id, devs[d.id]))
    for d in F.of_class("jetson"):
        if d.id not in jet_first:
            check(d.id not in devs and "1.5.0" not in d.versions_seen(),
                  "%s of a later jetson stage saw 1.5.0: %s" % (d.id, trail(d.watch.events())))


@case
def clean_shutdown():
    for d in F.devices:
        d.watch.no_errors()
    rcs = F.close()
    check(len(rcs) == len(F.devices) and set(rcs.values()) == {0}, "agent exit statuses: %s" % rcs)


S.run()
