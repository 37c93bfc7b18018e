"""e2e 7 — broken runners (tests/unit/fake_runners) on a package pushed to
the real server whose model file is the text "360" (what the fake runners
read as the sample count): one that crashes, one that hangs past
runner_timeout (2 s), one that writes garbage. Each gives a
"benchmark_failed" event with its reason and nothing is activated. The three
agents run side by side."""

import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agentharness import FAKE_RUNNERS, AgentSuite, check, log, trail  # noqa: E402

S = AgentSuite("e2e_runners", need_opencv=False)

CASES = [("crash.sh", "runner_failed"), ("hang.sh", "runner_timeout"), ("garbage.sh", "runner_output")]


@S.case
def broken_runners_refused():
    S.setup_server()
    model = os.path.join(S.tmpdir("pkgs"), "fake-n360.onnx")
    with open(model, "w") as f:
        f.write("360\n")
    p = S.push_package("fake", S.pack_model("fake", "1.5.0", model))
    runs = []
    for script, reason in CASES:
        dev = S.device_id(script.split(".")[0])
        w = S.watch(dev)
        ag = S.agent(dev, credential_file=S.enroll(dev), runner_timeout=2,
                     runners="onnx=%s/%s" % (FAKE_RUNNERS, script)).start()
        runs.append((script, reason, dev, w, ag))
    for script, reason, dev, w, ag in runs:
        S.publish(dev, S.desired(dev, 1, ["fake"]))
    for script, reason, dev, w, ag in runs:
        e = w.wait_event("benchmark_failed", 30)
        got = trail(w.events())
        log("%s: %s (%s)" % (script, got, e.get("detail", "")[:120]))
        check(got == "desired_accepted benchmark_failed:" + reason,
              "%s: want benchmark_failed:%s, got %s" % (script, reason, got))
        check(e["version"] == "1.5.0" and e["package"] == p["id"] and e.get("detail"),
              "%s: event %s" % (script, e))
        for r in w.reports():  # a report, if any, must not count
            check(r["validity"]["valid"] is False and r["gate"]["pass"] is False,
                  "%s: a failed run reported as valid: %s" % (script, r))
        st = ag.wait_idle()
        check(st["models"] == [], "%s: status: %s" % (script, st))
        mdir = os.path.join(ag.config["state_dir"], "models", "digits")
        left = os.listdir(mdir) if os.path.isdir(mdir) else []
        check(left == [], "%s: slots left behind: %s" % (script, left))
        check(w.wait_idle_state(e["msg"])["models"] == [], "%s: state: %s" % (script, w.last_state()))
    for script, reason, dev, w, ag in runs:
        check(ag.stop() == 0, "%s: agent exit status" % script)
        w.no_errors()
        S.clear_retained(dev)
    # the hanging runner's child (sleep 100) was killed with its process group
    for script, reason, dev, w, ag in runs:
        pidf = os.path.join(ag.config["state_dir"], "scratch", "sleep.pid")
        if os.path.exists(pidf):
            with open(pidf) as f:
                pid = int(f.read().strip() or 0)
            check(not pid or not os.path.exists("/proc/%d" % pid) or
                  open("/proc/%d/stat" % pid).read().split()[2] == "Z",
                  "%s: the runner's child %d still runs" % (script, pid))


S.run()
