"""Telemetry ingest (server/ingest.c) against a real mosquitto and PostgreSQL:
a server with mqtt_broker set stores what enrolled devices publish (state,
event, report, online), once per (device, msg), and refuses (logs, stores
nothing) what fails the checks: a payload whose device is not the topic's,
malformed JSON, oversize, an unknown device, a bad online payload. A state
older than the stored one is ignored; everything survives a restart.

Messages are published with mosquitto_pub. The broker is shared with the
other suites, so device ids carry this process's id and retained messages
are cleared at the end."""

import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mfharness import Suite, check, expect, run, wait_until  # noqa: E402

S = Suite("ingest")
TAG = "ing%d" % os.getpid()
A, B, C = TAG + "-a", TAG + "-b", TAG + "-c"  # C is never enrolled
PKG1, PKG2, EVAL = "1" * 64, "2" * 64, "e" * 64
TIME = "2026-11-18T11:06:40Z"


def sql(text):
    return S.psql(S.srv.db_url, text)


def topic(dev, kind):
    return "mf/v1/d/%s/%s" % (dev, kind)


def pub(dev, kind, payload, retain=False):
    S.mqtt_pub(topic(dev, kind), payload, retain=retain, client_id="%s-pub" % TAG)


wait_for = wait_until


def state(dev, msg, models, agent="0.4.0"):
    return {"device": dev, "msg": msg, "time": TIME, "hw_class": "rpi4", "agent_version": agent,
            "desired_seq": 0, "runtimes": ["onnx"],
            "models": [{"name": n, "version": v, "package": p, "previous": None}
                       for n, v, p in models],
            "op": None, "disk_free": 5000000000, "mem_available": 1000000000, "spool_dropped": 0}


def event(dev, msg, kind="activated", version="1.0.0"):
    return {"device": dev, "msg": msg, "time": TIME, "kind": kind, "origin": "desired",
            "model": "digits", "version": version, "package": PKG1}


def report(dev, msg, valid=True):
    lat = {"count": 100, "mean_us": 1520, "stddev_us": 211, "p50_us": 1500, "p90_us": 1700,
           "p99_us": 2100, "max_us": 4000}
    return {"device": dev, "msg": msg, "time": TIME, "model": "digits", "hw_class": "rpi4",
            "agent_version": "0.4.0", "runtime": {"name": "opencv-dnn", "version": "4.6.0"},
            "run": {"warmup": 5, "threads": 4},
            "eval": {"hash": EVAL, "n": 100, "metric": "top1"}, "model_bytes": 111616,
            "candidate": {"version": "1.0.0", "package": PKG1, "accuracy": 0.98, "correct": 98,
                          "load_us": 120000, "first_us": 9000, "latency": lat,
                          "peak_rss_bytes": 94371840},
            "gate": {"pass": True, "failures": []},
            "validity": {"valid": valid, "warnings": []}}


def events_of(dev, msg=None):
    cond = "" if msg is None else " AND msg = %d" % msg
    return int(sql("SELECT count(*) FROM events WHERE device_id = '%s'%s" % (dev, cond)))


def marker(msg):
    """An event for A that must be stored: once it is, everything published
    before it (one publisher, one subscriber, one queue) has been handled."""
    pub(A, "event", event(A, msg, kind="recovered"))
    wait_for("marker event %d" % msg, lambda: events_of(A, msg) == 1)


def models_of(dev):
    return sql("SELECT coalesce(string_agg(model || '=' || version, ',' ORDER BY model), '')"
               " FROM device_models WHERE device_id = '%s'" % dev)


def fleet_versions():
    groups = expect(S.srv.get("/fleet/summary", S.viewer), 200).json["groups"]
    out = {}
    for g in groups:
        if g["model"] and g["hw_class"] == "rpi4":
            key = "%s=%s" % (g["model"], g["version"])
            out[key] = out.get(key, 0) + g["devices"]
    return out


@S.case
def setup():
    S.start_with_roles(mqtt_client_id="mf-ingest-test-%d" % os.getpid())
    enroll = S.srv.token("enroll", "ingest")
    for dev in (A, B):
        expect(S.srv.req("POST", "/devices/enroll", {"device_id": dev, "hw_class": "rpi4"}, enroll),
               201, what="enroll %s" % dev)
    wait_for("the ingest to subscribe", lambda: "ingest: connected" in S.srv.log_text())
    check(sql("SELECT count(*) FROM schema_migrations WHERE name = '0003_ingest'") == "1",
          "migration 0003_ingest applied")


@S.case
def state_stored():
    pub(A, "state", state(A, 4, [("digits", "1.0.0", PKG1), ("keyword", "0.9.0", PKG2)]),
        retain=True)
    wait_for("A's state", lambda: models_of(A) == "digits=1.0.0,keyword=0.9.0")
    row = sql("SELECT agent_version, array_to_string(runtimes, ','), last_msg, state->>'device',"
              " state_at IS NOT NULL, last_seen IS NOT NULL FROM devices WHERE id = '%s'" % A)
    check(row == "0.4.0|onnx|4|%s|t|t" % A, "device row after state: %r" % row)
    dev = expect(S.srv.get("/devices/" + A, S.viewer), 200).json
    check(dev["agent_version"] == "0.4.0", "GET device agent_version: %r" % dev)
    check([m["version"] for m in dev["models"]] == ["1.0.0", "0.9.0"], "GET device models: %r" % dev)
    fv = fleet_versions()
    check(fv.get("digits=1.0.0") == 1 and fv.get("keyword=0.9.0") == 1, "fleet summary: %r" % fv)


@S.case
def event_and_report_stored_once():
    pub(A, "event", event(A, 5))
    pub(A, "event", event(A, 5))  # a redelivery
    pub(A, "report", report(A, 6))
    pub(A, "report", report(A, 6))
    marker(7)
    check(events_of(A, 5) == 1, "event msg 5 stored %d times" % events_of(A, 5))
    row = sql("SELECT kind, model, version, body->>'origin' FROM events"
              " WHERE device_id = '%s' AND msg = 5" % A)
    check(row == "activated|digits|1.0.0|desired", "event row: %r" % row)
    row = sql("SELECT count(*), min(model), min(version), min(package), min(hw_class),"
              " bool_and(valid), min(body->'candidate'->>'accuracy')"
              " FROM reports WHERE device_id = '%s' AND msg = 6" % A)
    check(row == "1|digits|1.0.0|%s|rpi4|t|0.98" % PKG1, "report row: %r" % row)


@S.case
def refused_messages_store_nothing():
    before = sql("SELECT (SELECT count(*) FROM events) || '/' || (SELECT count(*) FROM reports)")
    pub(B, "report", report(A, 20))              # A's report on B's topic
    pub(B, "event", event(A, 21))                # and an event
    pub(B, "event", '{"device":"%s","msg":22,' % B)  # malformed JSON
    big = event(B, 23)
    big["detail"] = "x" * (65 * 1024)
    pub(B, "event", big)                         # > 64 KiB
    pub(B, "event", dict(event(B, 24), colour="red"))  # unknown field
    pub(C, "event", event(C, 25))                # not enrolled
    pub(C, "state", state(C, 1, []))
    pub(B, "online", "2")
    pub(B, "online", "11")
    pub(B, "online", "true")
    marker(26)
    after = sql("SELECT (SELECT count(*) FROM events) || '/' || (SELECT count(*) FROM reports)")
    b_ev, b_rep = before.split("/")
    check(after == "%d/%s" % (int(b_ev) + 1, b_rep),
          "only the marker may be stored: before %s, after %s" % (before, after))
    check(sql("SELECT online FROM devices WHERE id = '%s'" % B) == "f", "B must stay offline")
    check(sql("SELECT count(*) FROM devices WHERE id = '%s'" % C) == "0", "C must not appear")
    log = S.srv.log_text()
    for needle in ("refused topic=%s" % topic(B, "report"), "refused topic=%s" % topic(B, "online"),
                   "event from device=%s ignored: not enrolled" % C):
        check(needle in log, "server log lacks %r" % needle)
    n = sum(1 for line in log.splitlines() if "refused topic=%s" % topic(B, "event") in line)
    check(n == 4, "4 refused events on B's topic must be logged, got %d" % n)


@S.case
def online_reflected():
    pub(A, "online", "1", retain=True)
    wait_for("A online", lambda: expect(S.srv.get("/devices/" + A, S.viewer), 200).json["online"])
    s = expect(S.srv.get("/fleet/summary", S.viewer), 200).json
    check(s["online"] >= 1, "fleet summary online: %r" % s)
    pub(A, "online", "0", retain=True)
    wait_for("A offline",
             lambda: expect(S.srv.get("/devices/" + A, S.viewer), 200).json["online"] is False)
    pub(A, "online", "1", retain=True)
    wait_for("A online again",
             lambda: expect(S.srv.get("/devices/" + A, S.viewer), 200).json["online"])


@S.case
def state_updates_models_and_fleet():
    pub(A, "state", state(A, 8, [("digits", "2.0.0", PKG1)], agent="0.5.0"), retain=True)
    wait_for("A on digits 2.0.0", lambda: models_of(A) == "digits=2.0.0")
    fv = fleet_versions()
    check(fv.get("digits=2.0.0") == 1 and "digits=1.0.0" not in fv and "keyword=0.9.0" not in fv,
          "fleet summary after the upgrade: %r" % fv)
    pub(B, "state", state(B, 0, [("digits", "2.0.0", PKG1)]), retain=True)
    wait_for("B on digits 2.0.0", lambda: models_of(B) == "digits=2.0.0")
    fv = fleet_versions()
    check(fv.get("digits=2.0.0") == 2, "fleet summary with B: %r" % fv)


@S.case
def older_state_ignored():
    pub(A, "state", state(A, 3, [("digits", "9.9.9", PKG1)], agent="0.1.0"))
    marker(27)
    wait_for("the stale state logged", lambda: "older than the stored one" in S.srv.log_text())
    check(models_of(A) == "digits=2.0.0", "a stale state changed models: %r" % models_of(A))
    row = sql("SELECT agent_version, last_msg FROM devices WHERE id = '%s'" % A)
    check(row == "0.5.0|8", "a stale state changed the device: %r" % row)
    # the same msg again (an op in progress) is newer-or-equal: applied
    pub(A, "state", state(A, 8, [("digits", "2.0.0", PKG1)], agent="0.5.1"), retain=True)
    wait_for("equal-msg state applied",
             lambda: sql("SELECT agent_version FROM devices WHERE id = '%s'" % A) == "0.5.1")


@S.case
def restart_keeps_everything():
    snap = lambda: sql(  # noqa: E731
        "SELECT (SELECT count(*) FROM events) || '/' || (SELECT count(*) FROM reports) || '/' ||"
        " (SELECT string_agg(id || ':' || online || ':' || last_msg, ',' ORDER BY id)"
        "  FROM devices) || '/' || (SELECT string_agg(device_id || model || version, ','"
        "  ORDER BY device_id, model) FROM device_models)")
    before = snap()
    S.srv.restart()
    wait_for("the ingest to subscribe again",
             lambda: S.srv.log_text().count("ingest: connected") >= 2)
    pub(A, "event", event(A, 5))  # redelivered after the restart
    marker(28)
    after = snap()
    b = before.split("/")
    b[0] = str(int(b[0]) + 1)  # the marker
    check(after == "/".join(b), "after restart: %s, expected %s" % (after, "/".join(b)))
    check(events_of(A, 5) == 1, "event 5 stored again after the restart")
    fv = fleet_versions()
    check(fv.get("digits=2.0.0") == 2, "fleet summary after restart: %r" % fv)
    check("ingest: stopped received=" in S.srv.log_text(), "the stop logs its totals")


@S.case
def kept_while_away():
    """With mqtt_client_id (a persistent session), what a device publishes
    while the server is down is delivered when it is back."""
    S.srv.stop()
    pub(A, "event", event(A, 41))
    pub(A, "report", report(A, 42))
    S.srv.start()
    wait_for("event 41 and report 42 from while the server was down",
             lambda: events_of(A, 41) == 1 and
             sql("SELECT count(*) FROM reports WHERE device_id = '%s' AND msg = 42" % A) == "1",
             timeout=20)


@S.case
def clear_retained():
    S.clear_retained_topics()


if __name__ == "__main__":
    S.run()
