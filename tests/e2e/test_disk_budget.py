"""e2e 6 — a disk budget smaller than the package: the agent refuses it
before downloading ("download_failed" reason disk_budget) and no request for
the blob ever reaches the server (a proxy in between logs every request)."""

import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agentharness import FAKE_RUNNERS, AgentSuite, Proxy, check, trail  # noqa: E402

S = AgentSuite("e2e_disk_budget", need_opencv=False)


@S.case
def over_budget_refused_before_download():
    S.setup_server()
    S.push_fixtures(("fp32",))
    p = S.packages["fp32"]
    budget = p["size"] // 2
    proxy = Proxy(S, S.srv.port)
    dev = S.device_id("disk")
    w = S.watch(dev)
    ag = S.agent(dev, server_url=proxy.url, credential_file=S.enroll(dev), disk_budget=budget,
                 runners="onnx=%s/good.sh" % FAKE_RUNNERS).start()
    S.publish(dev, S.desired(dev, 1, ["fp32"]))
    e = w.wait_event("download_failed", 30)
    check(trail(w.events()) == "desired_accepted download_failed:disk_budget",
          "events: %s" % trail(w.events()))
    check(e["package"] == p["id"] and str(budget) in e.get("detail", ""),
          "event (the detail should name the budget %d): %s" % (budget, e))
    time.sleep(0.5)  # anything late would show up here
    check(proxy.requests == [], "requests reached the server: %s" % proxy.requests)
    st = ag.wait_idle()
    check(st["models"] == [], "status: %s" % st)
    check(w.wait_idle_state(e["msg"])["models"] == [], "state: %s" % w.last_state())
    downloads = os.path.join(ag.config["state_dir"], "downloads")
    check(os.listdir(downloads) == [], "downloads/: %s" % os.listdir(downloads))
    check(ag.log_count(r"download (done|failed)") == 0, "the downloader ran\n%s" % ag.tail())
    check(ag.stop() == 0, "agent exit status")
    w.no_errors()
    S.clear_retained(dev)


S.run()
