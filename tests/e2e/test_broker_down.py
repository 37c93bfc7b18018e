"""e2e 4 — the broker goes away. On a private mosquitto (so stopping it
disturbs no other test): the broker is stopped while the agent installs;
the install finishes offline (watched through `status --json`); the broker
comes back on the same port and the agent delivers the spooled report and
events in order, nothing missing, and its retained state shows the new
version. Then an agent whose broker is down from the start comes up, keeps
retrying, idles without burning CPU, and connects once a broker appears."""

import json
import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agentharness import AgentSuite, Proxy, check, cpu_seconds, log, trail, wait_for  # noqa: E402

S = AgentSuite("e2e_broker_down")


@S.case
def setup():
    S.setup_server()
    S.push_fixtures(("fp32", "int8"))
    S.b = S.broker("broker").start()
    S.dev = S.device_id("offline")
    # a persistent session: what the agent sends while the watcher is not
    # yet back after the restart is kept for it by the broker
    S.w = S.watch(S.dev, port=S.b.port, session="watch-" + S.dev)
    # downloads go through a proxy that takes ~2 s per package, so the broker
    # can be stopped in the middle of one (download_rate does not slow a
    # 100 KB blob on loopback: libcurl reads it in one burst)
    S.proxy = Proxy(S, S.srv.port, rate=50000)
    S.ag = S.agent(S.dev, broker="127.0.0.1:%d" % S.b.port, credential_file=S.enroll(S.dev),
                   server_url=S.proxy.url).start()
    S.publish(S.dev, S.desired(S.dev, 1, ["fp32"]), port=S.b.port)
    S.w.wait_event("activated", 60)


@S.case
def broker_stopped_during_install():
    before = S.w.max_msg()
    S.publish(S.dev, S.desired(S.dev, 2, ["int8"]), port=S.b.port)
    S.w.wait_event("desired_accepted", 20, after=before)
    box = {}
    ok = wait_for(lambda: box.update(st=S.ag.status()) or (box["st"]["op"] or {}).get("phase") == "download",
                  5, 0.02)
    check(ok, "the install is not downloading when the broker stops: %s" % box["st"]["op"])
    S.b.stop()
    t0 = time.monotonic()
    ok = wait_for(lambda: (lambda s: s["op"] is None and S.ag.current(s)[0] == "1.1.0")(S.ag.status()),
                  30, 0.1)
    check(ok, "int8 did not become current offline: %s\n%s" % (S.ag.status(), S.ag.tail()))
    log("install finished %.1fs after the broker stopped" % (time.monotonic() - t0))
    st = S.ag.status()
    check(S.ag.current(st)[2] is True and st["spool"]["pending"] >= 2,
          "offline: want int8 complete and the report + activated spooled: %s" % st)
    S.spooled = st["spool"]["pending"]
    check(S.w.max_msg() == before + 1, "messages got through a stopped broker: %s" % trail(S.w.events(), before))
    check(S.ag.log_count(r"mqtt: (disconnected|cannot connect)") >= 1, "no disconnect logged\n%s" % S.ag.tail())


@S.case
def broker_back_spool_delivered_in_order():
    S.b.start()
    S.w.wait_event("activated", 30, after=2)
    S.w.wait(lambda w: (lambda s: s and s["models"][0]["version"] == "1.1.0" and s["op"] is None)(w.last_state()),
             20, "a state with int8 current")
    ok = wait_for(lambda: S.ag.status()["spool"]["pending"] == 0, 10, 0.1)
    check(ok, "the spool was not emptied after reconnect: %s" % S.ag.status()["spool"])
    # every message, once deduplicated by msg: 1..N consecutive, first seen in order
    seen = []
    for m in S.w.snapshot():
        if m["kind"] in ("event", "report"):
            seen.append((m["json"]["msg"], m["kind"], m["json"].get("kind")))
    firsts = []
    for s in seen:
        if s[0] not in [f[0] for f in firsts]:
            firsts.append(s)
    nums = [f[0] for f in firsts]
    log("delivered (msg, topic, kind): %s (%d duplicate(s))" % (firsts, len(seen) - len(firsts)))
    check(nums == list(range(1, len(nums) + 1)), "msg numbers not consecutive and increasing: %s" % nums)
    want = [(1, "event", "desired_accepted"), (2, "report", None), (3, "event", "activated"),
            (4, "event", "desired_accepted"), (5, "report", None), (6, "event", "activated")]
    check(firsts == want, "delivered %s, want %s" % (firsts, want))
    r = [x for x in S.w.reports() if x["msg"] == 5][0]
    check(r["candidate"]["version"] == "1.1.0" and r["incumbent"]["version"] == "1.0.0", "report 5: %s" % r)
    ret = S.retained(S.dev, "state", port=S.b.port)
    check(ret is not None, "no retained state after reconnect")
    s = json.loads(ret)
    check(s["models"][0]["version"] == "1.1.0" and s["op"] is None and s["msg"] == 6
          and s["models"][0]["previous"]["version"] == "1.0.0", "retained state: %s" % s)
    check(S.retained(S.dev, "online", port=S.b.port) == "1", "retained online is not 1")
    S.w.no_errors()
    check(S.ag.stop() == 0, "agent exit status")
    check(S.retained(S.dev, "online", port=S.b.port) == "0", "retained online is not 0 after stop")


@S.case
def broker_down_from_the_start():
    b2 = S.broker("broker2")  # its port; started only at the end
    dev = S.device_id("nobroker")
    ag = S.agent(dev, broker="127.0.0.1:%d" % b2.port, credential_file=S.enroll(dev),
                 log_level="debug").start()
    ag.wait_log(r"agent 0\.4\.0 started", 10)
    ag.wait_log(r"mqtt: cannot connect to 127\.0\.0\.1:%d: .*next try in \d+ ms" % b2.port, 10)
    time.sleep(1.0)  # past start-up, and the backoff at its 2 s cap soon
    check(ag.alive(), "the agent exited without a broker\n%s" % ag.tail())
    c0, t0 = cpu_seconds(ag.proc.pid), time.monotonic()
    time.sleep(3.0)
    cpu, wall = cpu_seconds(ag.proc.pid) - c0, time.monotonic() - t0
    tries = ag.log_count(r"mqtt: cannot connect")
    log("broker down: %.3f s CPU over %.1f s, %d connection attempts so far" % (cpu, wall, tries))
    check(cpu < 0.1, "busy without a broker: %.3f s CPU in %.1f s" % (cpu, wall))
    check(tries >= 3, "only %d connection attempt(s) logged in ~4 s\n%s" % (tries, ag.tail()))
    st = ag.status()
    check(st["models"] == [] and st["op"] is None, "status: %s" % st)
    # a broker appears on that port: the agent connects within its backoff cap
    b2.start()
    ag.wait_log(r"mqtt: connected to 127\.0\.0\.1:%d" % b2.port, 10)
    check(S.retained(dev, "online", port=b2.port) == "1", "no retained online 1 after the broker came up")
    # connected and idle: keepalive only
    time.sleep(0.5)
    c0, t0 = cpu_seconds(ag.proc.pid), time.monotonic()
    time.sleep(3.0)
    cpu = cpu_seconds(ag.proc.pid) - c0
    log("connected, idle: %.3f s CPU over %.1f s" % (cpu, time.monotonic() - t0))
    check(cpu < 0.1, "busy while idle: %.3f s CPU" % cpu)
    check(ag.stop() == 0, "agent exit status")


S.run()
