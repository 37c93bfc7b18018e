"""e2e 9 — the daemon's retries, with retry_min_s = 1: (a) the server is down
when a desired state arrives: the download fails ("download_failed"
unavailable), the worker exits 75, the daemon tries again with backoff and,
once the server is back, the model activates — with no new desired state;
(b) the worker is SIGKILLed in the middle of a benchmark (a runner wrapper
kills its parent once): the daemon survives, starts another worker, which
reports the cut install ("recovered" install_abandoned) and finishes it."""

import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agentharness import AgentSuite, check, log, trail, wait_for  # noqa: E402

S = AgentSuite("e2e_retry")


@S.case
def setup():
    S.setup_server()
    S.push_fixtures(("fp32",))


@S.case
def server_down_then_back():
    dev = S.device_id("retry")
    w = S.watch(dev)
    ag = S.agent(dev, credential_file=S.enroll(dev), retry_min_s=1, retry_max_s=2,
                 download_retries=0).start()
    S.srv.stop()
    S.publish(dev, S.desired(dev, 1, ["fp32"]))
    e = w.wait_event("download_failed", 30)
    check(e.get("reason") == "unavailable", "download_failed reason: %s" % e)
    check(wait_for(lambda: "exited with status 75" in ag.log_text(), 10, 0.1),
          "no pending worker exit in the log:\n%s" % ag.tail())
    # two more failed attempts while the server stays down
    check(wait_for(lambda: len([x for x in w.events() if x["kind"] == "download_failed"]) >= 3,
                   20, 0.1), "not retried: %s" % trail(w.events()))
    S.srv.start()
    e = w.wait_event("activated", 60)
    check(e["version"] == "1.0.0", "activated: %s" % e)
    got = trail(w.events())
    log("events: " + got)
    check(got.startswith("desired_accepted download_failed:unavailable") and
          got.endswith("activated") and got.count("desired_accepted") == 1,
          "events: %s" % got)
    st = ag.wait_idle()
    check(ag.current(st)[0] == "1.0.0" and ag.current(st)[2], "status: %s" % st)
    check(ag.stop() == 0, "exit status")
    w.no_errors()
    S.clear_retained(dev)


@S.case
def worker_killed_mid_benchmark():
    dev = S.device_id("wkill")
    flag = os.path.join(S.tmpdir("wkill"), "killed-once")
    wrapper = os.path.join(S.tmpdir("wkill"), "runner.sh")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\n"
                "# the first run kills the worker that started it (SIGKILL), once\n"
                "if [ ! -e %s ]; then touch %s; kill -9 $PPID; sleep 5; exit 1; fi\n"
                "exec %s \"$@\"\n" % (flag, flag, S.opencv))
    os.chmod(wrapper, 0o755)
    w = S.watch(dev)
    ag = S.agent(dev, credential_file=S.enroll(dev), retry_min_s=1, retry_max_s=2,
                 runners="onnx=" + wrapper).start()
    pid = ag.proc.pid
    S.publish(dev, S.desired(dev, 1, ["fp32"]))
    e = w.wait_event("activated", 60)
    check(os.path.exists(flag), "the wrapper never ran")
    check("was killed by signal 9" in ag.log_text(), "no killed worker in the log:\n%s" % ag.tail())
    got = trail(w.events())
    log("events: " + got)
    check(got == "desired_accepted recovered:install_abandoned activated", "events: %s" % got)
    check(ag.alive() and ag.proc.pid == pid, "the daemon did not survive its worker")
    st = ag.wait_idle()
    check(ag.current(st)[0] == "1.0.0" and ag.current(st)[2], "status: %s" % st)
    check(ag.stop() == 0, "exit status")
    w.no_errors()
    S.clear_retained(dev)


S.run()
