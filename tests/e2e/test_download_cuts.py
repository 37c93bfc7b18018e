"""e2e 3 — downloads cut mid-body: a proxy between the agent and the real
server closes the connection after 10%, 35% and 70% of the blob; the agent
resumes each time with Range from exactly where it was, verifies and
activates, having fetched at most 1.1x the package size in all."""

import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agentharness import AgentSuite, Proxy, check, log, trail  # noqa: E402

S = AgentSuite("e2e_download_cuts")


@S.case
def cut_three_times_then_activate():
    S.setup_server()
    S.push_fixtures(("fp32",))
    p = S.packages["fp32"]
    size = p["size"]
    cuts = [size * 10 // 100, size * 35 // 100, size * 70 // 100]
    proxy = Proxy(S, S.srv.port, cuts=cuts)
    dev = S.device_id("cuts")
    w = S.watch(dev)
    ag = S.agent(dev, server_url=proxy.url, credential_file=S.enroll(dev)).start()
    S.publish(dev, S.desired(dev, 1, ["fp32"]))
    w.wait_event("activated", 60)
    check(trail(w.events()) == "desired_accepted activated", "events: %s" % trail(w.events()))
    st = ag.wait_idle()
    check(ag.current(st) == ("1.0.0", p["id"], True), "status: %s" % st)

    gets = proxy.blob_gets()
    ranges = [g["range"] for g in gets]
    log("blob GETs: %s" % [(g["status"], g["range"], g["body"], g["cut"]) for g in gets])
    check(len(gets) == 4, "want 4 blob GETs (3 cut, 1 whole), got %d: %s" % (len(gets), ranges))
    check(ranges[0] is None, "the first GET asked for a range: %s" % ranges[0])
    check(ranges[1:] == ["bytes=%d-" % c for c in cuts],
          "resumes must start where each cut left off %s, got %s" % (cuts, ranges[1:]))
    check([g["status"] for g in gets] == [200, 206, 206, 206], "statuses: %s" % gets)
    total = proxy.body_bytes()
    ratio = total / size
    log("forwarded %d body bytes for a %d-byte package: ratio %.3f" % (total, size, ratio))
    check(total <= 1.1 * size, "fetched %d bytes for %d (ratio %.3f > 1.1)" % (total, size, ratio))
    check(total >= size, "fetched fewer bytes (%d) than the package (%d)" % (total, size))
    check(ag.log_count(r"download done .*attempts=4 resumed=yes") == 1,
          "no 'download done ... attempts=4 resumed=yes' log line\n%s" % ag.tail())
    downloads = os.path.join(ag.config["state_dir"], "downloads")
    check(os.listdir(downloads) == [], "downloads/ not empty after install: %s" % os.listdir(downloads))
    check(ag.stop() == 0, "agent exit status")
    w.no_errors()
    S.clear_retained(dev)


S.run()
