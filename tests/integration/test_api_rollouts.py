"""Rollouts API: POST /rollouts (defaults and a full plan, every refusal with
its status, error code and the field named, 409 on a live rollout of the same
model with overlapping classes), GET /rollouts (filters, keyset paging),
GET /rollouts/{id} (per-class counts from devices, rollout_devices and events,
labels selecting targets, stage decisions), GET /rollouts/{id}/devices,
pause / resume / abort / promote from every status with their audit rows, and
labels at enrollment. The controller is off (controller_interval_ms = 0) and
there is no MQTT, so nothing moves a rollout but these requests."""

import json
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mfharness import Suite, check, expect, quote  # noqa: E402

S = Suite("api_rollouts")

STATUSES = ["running", "paused", "watching", "completed", "failed", "aborted"]
LIVE = {"running", "paused", "watching"}
DEFAULT_GATES = {"max_failure_rate": 0.1, "max_failures": 5, "max_crashes": 2, "min_accuracy": 0,
                 "max_accuracy_drop": 0.015, "alpha": 0.05, "max_p50_ratio": 1.5, "max_p99_ratio": 2.0}


def sql(q):
    return S.psql(S.srv.db_url, q)


def create(body, token=None, status=201, error=None, what=""):
    r = S.srv.req("POST", "/rollouts", body=body, token=token or S.op)
    return expect(r, status, error, what=what or "POST /rollouts %s" % json.dumps(body)[:200])


def get(rid, status=200):
    return expect(S.srv.get("/rollouts/%s" % rid, S.viewer), status, what="GET /rollouts/%s" % rid).json


def post(rid, op, body=None, token=None):
    return S.srv.req("POST", "/rollouts/%s/%s" % (rid, op), body=body, token=token or S.op)


def abort_live():
    """Aborts every live rollout (through the API), so a test starts with none."""
    for rid in sql("SELECT id FROM rollouts WHERE status IN ('running','paused','watching')").split():
        expect(post(rid, "abort"), 200, what="abort %s" % rid)


def audit(rid, action):
    """The audit rows of a rollout with this action: list of detail dicts."""
    out = sql("SELECT coalesce(detail::text, 'null') FROM audit_log WHERE action = '%s'"
              " AND object = 'rollout/%d' ORDER BY id" % (action, int(rid)))
    return [json.loads(line) for line in out.splitlines() if line]


@S.case
def setup():
    S.srv = S.server(controller_interval_ms=0, mqtt_broker="").start()
    S.admin = S.srv.token("admin", "root")
    S.op = S.srv.token("operator", "ci")
    S.viewer = S.srv.token("viewer", "dash")
    S.enroll = S.srv.token("enroll", "fleet")
    d = S.tmpdir("p")
    for name, version, hw in (("digits", "1.0.0", "rpi4,x86-cpu"), ("digits", "1.1.0", "rpi4,x86-cpu"),
                              ("digits", "1.2.0", "rpi4"), ("faces", "2.0.0", "rpi4,jetson-orin")):
        pkg = S.pack(os.path.join(d, "%s-%s.mfpkg" % (name, version)), name=name, version=version,
                     hardware=hw)
        expect(S.srv.push(pkg, S.op), 201, what="push %s %s" % (name, version))


@S.case
def create_with_defaults():
    abort_live()
    r = create({"model": "digits", "version": "1.1.0"})
    j = r.json
    check(r.header("Content-Type", "").startswith("application/json"), "content type")
    check(j["model"] == "digits" and j["version"] == "1.1.0", "model/version: %r" % j)
    check(j["status"] == "running" and j["stage"] == 0, "status/stage: %r" % j)
    check(j["created_by"] == "ci", "created_by is the token name: %r" % j["created_by"])
    check(j["finished_at"] is None and j["watch_started"] is None and j["rollback_pending"] is False,
          "fresh rollout fields: %r" % j)
    check(j["classes"] == [{"hw_class": "rpi4", "status": "active"}, {"hw_class": "x86-cpu", "status": "active"}],
          "classes default to every class with a package: %r" % j["classes"])
    p = j["plan"]
    check(p["classes"] == ["rpi4", "x86-cpu"], "plan classes %r" % p["classes"])
    check([s["percent"] for s in p["stages"]] == [1, 10, 50, 100], "default stages %r" % p["stages"])
    for s in p["stages"]:
        check(s["min_devices"] == 20 and s["min_reporting"] == 5 and s["soak_s"] == 300
              and s["timeout_s"] == 3600, "default stage fields %r" % s)
    check(p["gates"] == DEFAULT_GATES, "default gates %r" % p["gates"])
    check(p["on_fail"] == "rollback" and p["scope"] == "per_class" and p["watch_s"] == 0
          and p["labels"] == {}, "plan defaults %r" % p)
    check("id" not in p, "the stored plan has no id")
    check([(s["stage"], s["percent"], s["status"]) for s in j["stages"]]
          == [(0, 1, "running"), (1, 10, "pending"), (2, 50, "pending"), (3, 100, "pending")],
          "stage rows %r" % j["stages"])
    check(j["stages"][0]["started_at"] and j["stages"][1]["started_at"] is None, "started_at")
    check(all(s["classes"] == [] and s["reason"] is None for s in j["stages"]), "no decisions yet")
    check([c["hw_class"] for c in j["counts"]] == ["rpi4", "x86-cpu"], "counts per class %r" % j["counts"])
    check(get(j["id"]) == j, "the 201 body is the GET object")
    rows = sql("SELECT stage, fraction, status, started_at IS NOT NULL FROM rollout_stages"
               " WHERE rollout_id = %d ORDER BY stage" % j["id"])
    check(rows.splitlines() == ["0|0.01|running|t", "1|0.1|pending|f", "2|0.5|pending|f", "3|1|pending|f"],
          "rollout_stages rows: %r" % rows)
    row = sql("SELECT classes, class_status, plan->'gates'->>'alpha' FROM rollouts WHERE id = %d" % j["id"])
    check(row == "{rpi4,x86-cpu}|{active,active}|0.05", "rollouts row: %r" % row)
    a = audit(j["id"], "rollout.start")
    check(len(a) == 1 and a[0]["version"] == "1.1.0" and a[0]["classes"] == ["rpi4", "x86-cpu"],
          "audit rollout.start: %r" % a)
    check(sql("SELECT actor FROM audit_log WHERE action = 'rollout.start' AND object = 'rollout/%d'"
              % j["id"]) == "ci", "audit actor")
    S.default_id = j["id"]


@S.case
def create_with_full_plan():
    abort_live()
    plan = {"model": "digits", "version": "1.1.0", "classes": ["x86-cpu"], "labels": {"site": "berlin"},
            "stages": [{"percent": 5, "min_devices": 2, "min_reporting": 2, "soak_s": 60, "timeout_s": 600},
                       {"percent": 100, "min_devices": 3, "min_reporting": 3, "soak_s": 120, "timeout_s": 900}],
            "gates": {"max_failure_rate": 0.2, "max_failures": 3, "max_crashes": 1, "min_accuracy": 0.9,
                      "max_accuracy_drop": 0.02, "alpha": 0.1, "max_p50_ratio": 1.2, "max_p99_ratio": 0},
            "on_fail": "pause", "scope": "whole", "watch_s": 120}
    j = create(plan).json
    p = dict(j["plan"])
    check(p == {k: v for k, v in plan.items()}, "the plan comes back as given:\n%r\n%r" % (p, plan))
    check(j["classes"] == [{"hw_class": "x86-cpu", "status": "active"}], "classes %r" % j["classes"])
    check([(s["stage"], s["percent"], s["status"]) for s in j["stages"]] == [(0, 5, "running"), (1, 100, "pending")],
          "stages %r" % j["stages"])
    check(sql("SELECT fraction FROM rollout_stages WHERE rollout_id = %d AND stage = 0" % j["id"]) == "0.05",
          "fraction = percent / 100")
    abort_live()


@S.case
def create_refusals():
    abort_live()
    before = sql("SELECT count(*) FROM rollouts")
    base = {"model": "digits", "version": "1.1.0"}

    def refuse(extra, status, error, where, token=None, raw=None):
        body = raw if raw is not None else dict(base, **extra)
        r = create(body, token=token, status=status, error=error, what="refused %r" % (body,))
        if where:
            check(where in r.json["message"], "message must name %r: %s" % (where, r.brief()))
        return r

    refuse({"colour": "red"}, 400, "invalid_json", "colour")
    refuse({"stages": [{"percent": 50}, {"percent": 10}, {"percent": 100}]}, 400, "invalid_json", "stages[1].percent")
    refuse({"stages": [{"percent": 10}, {"percent": 50}]}, 400, "invalid_json", "stages[1].percent")
    refuse({"stages": [{"percent": 10, "soak": 1}, {"percent": 100}]}, 400, "invalid_json", "stages[0].soak")
    refuse({"stages": [{"min_devices": 1}]}, 400, "invalid_json", "stages[0].percent")
    refuse({"stages": []}, 400, "invalid_json", "stages")
    refuse({"gates": {"alpha": 0}}, 400, "invalid_json", "gates.alpha")
    refuse({"gates": {"beta": 0.1}}, 400, "invalid_json", "gates.beta")
    refuse({"gates": {"max_failures": -1}}, 400, "invalid_json", "gates.max_failures")
    refuse({"on_fail": "explode"}, 400, "invalid_json", "on_fail")
    refuse({"scope": "galaxy"}, 400, "invalid_json", "scope")
    refuse({"watch_s": -5}, 400, "invalid_json", "watch_s")
    refuse({"classes": "rpi4"}, 400, "invalid_json", "classes")
    refuse({"classes": [7]}, 400, "invalid_json", "classes[0]")
    r = refuse({"classes": ["rpi4", "jetson-orin"]}, 400, "invalid_json", "classes[1]")
    check("no package of digits 1.1.0 for hardware class jetson-orin" in r.json["message"],
          "the class without a package is named: %s" % r.brief())
    refuse({"classes": ["rpi4", "rpi4"]}, 400, "invalid_json", "classes")
    r = refuse({"classes": ["x" * 300 + "\u00e9"]}, 400, "invalid_json", "classes[0]")
    check("x" * 65 not in r.json["message"], "a bad class name is not echoed: %s" % r.brief())
    refuse({"labels": {"site": 5}}, 400, "invalid_json", "labels.site")
    refuse({"labels": {"bad key": "x"}}, 400, "invalid_json", "labels")
    refuse({"labels": {"site": "a\u0000b"}}, 400, "invalid_json", "\\u0000")
    refuse({"labels": ["site"]}, 400, "invalid_json", "labels")
    refuse({}, 400, "invalid_json", "model", raw={"version": "1.1.0"})
    refuse({}, 400, "invalid_json", "version", raw={"model": "digits"})
    refuse({"version": "1.x"}, 400, "invalid_json", "version")
    refuse({"model": "../etc"}, 400, "invalid_json", "model")
    r = refuse({"model": "nosuch"}, 404, "not_found", "nosuch")
    r = refuse({"version": "9.9.9"}, 404, "not_found", "9.9.9")
    refuse({}, 403, "forbidden", None, token=S.viewer)
    refuse({}, 403, "forbidden", None, token=S.enroll)
    refuse({}, 400, "invalid_json", None, raw='{"model": "digits", ')
    refuse({}, 400, "invalid_json", None, raw='[]')
    refuse({}, 400, "invalid_json", None, raw='')
    expect(S.srv.req("POST", "/rollouts", body=base), 401, "unauthorized", what="no token")
    check(sql("SELECT count(*) FROM rollouts") == before, "a refused request stores no rollout")
    check(sql("SELECT count(*) FROM rollout_stages s WHERE NOT EXISTS (SELECT 1 FROM rollouts r"
              " WHERE r.id = s.rollout_id)") == "0", "no stray stage rows")


@S.case
def conflicts():
    abort_live()
    a = create({"model": "digits", "version": "1.1.0", "classes": ["rpi4"]}).json
    b = create({"model": "digits", "version": "1.1.0", "classes": ["x86-cpu"]}, what="disjoint classes").json
    check(a["id"] != b["id"], "two rollouts")
    r = create({"model": "digits", "version": "1.1.0"}, status=409, error="conflict", what="overlap")
    check(r.json["existing"] == a["id"], "existing names the first live one: %s" % r.brief())
    check("rpi4" in r.json["message"], "the message names the class: %s" % r.brief())
    r = create({"model": "digits", "version": "1.2.0", "classes": ["rpi4"]}, status=409, error="conflict",
               what="another version of the same model")
    check(r.json["existing"] == a["id"], "existing: %s" % r.brief())
    r = create({"model": "digits", "version": "1.0.0", "classes": ["x86-cpu"]}, status=409, error="conflict")
    check(r.json["existing"] == b["id"], "existing is b: %s" % r.brief())
    f = create({"model": "faces", "version": "2.0.0", "classes": ["rpi4"]}, what="another model").json
    # paused and watching are live too
    expect(post(a["id"], "pause"), 200)
    r = create({"model": "digits", "version": "1.2.0"}, status=409, error="conflict", what="paused is live")
    check(r.json["existing"] == a["id"], "existing (paused): %s" % r.brief())
    sql("UPDATE rollouts SET status = 'watching', watch_started = now() WHERE id = %d" % a["id"])
    create({"model": "digits", "version": "1.2.0"}, status=409, error="conflict", what="watching is live")
    for st in ("completed", "failed", "aborted"):
        sql("UPDATE rollouts SET status = '%s' WHERE id = %d" % (st, a["id"]))
        c = create({"model": "digits", "version": "1.2.0"}, what="after %s" % st).json
        check(c["classes"] == [{"hw_class": "rpi4", "status": "active"}], "1.2.0 is rpi4 only")
        expect(post(c["id"], "abort"), 200)
    for x in (b, f):
        expect(post(x["id"], "abort"), 200)


@S.case
def list_filters_and_paging():
    abort_live()
    ids = []
    for model, version in (("faces", "2.0.0"), ("digits", "1.0.0"), ("faces", "2.0.0"), ("digits", "1.2.0"),
                           ("faces", "2.0.0")):
        ids.append(create({"model": model, "version": version}).json["id"])
        if len(ids) < 5:
            expect(post(ids[-1], "abort"), 200)
    live = ids[-1]  # the last (faces) stays running
    sql("UPDATE rollouts SET status = 'completed' WHERE id = %d" % ids[0])

    def list_all(query, limit):
        out, after, pages = [], None, 0
        while True:
            q = query + ("&" if query else "") + "limit=%d" % limit
            if after is not None:
                q += "&after=%d" % after
            j = expect(S.srv.get("/rollouts?" + q, S.viewer), 200, what="GET /rollouts?" + q).json
            pages += 1
            check(len(j["rollouts"]) <= limit, "page over the limit")
            out += j["rollouts"]
            after = j["next"]
            if after is None:
                break
            check(after == j["rollouts"][-1]["id"], "next is the last id of the page")
            check(pages < 100, "paging does not end")
        return out

    total = int(sql("SELECT count(*) FROM rollouts"))
    every = list_all("", 2)
    check(len(every) == total, "paging returns every rollout once: %d of %d" % (len(every), total))
    check([r["id"] for r in every] == sorted((r["id"] for r in every), reverse=True), "newest first")
    s = every[0]
    check(set(s) == {"id", "model", "version", "status", "stage", "stages", "reason", "created_by",
                     "created_at", "updated_at", "finished_at", "classes"}, "summary fields %r" % sorted(s))
    check(isinstance(s["stages"], int), "stages is a count in the summary")
    check(list_all("", 1000) == every, "one page equals many pages")
    faces = list_all("model=faces", 1)
    want = [int(x) for x in sql("SELECT id FROM rollouts WHERE model = 'faces' ORDER BY id DESC").split()]
    check([r["id"] for r in faces] == want and set(ids[0::2]) <= set(want), "model filter %r" % faces)
    lv = list_all("status=live", 3)
    check([r["id"] for r in lv] == [live], "status=live: %r" % [r["id"] for r in lv])
    check([r["id"] for r in list_all("status=running&model=faces", 5)] == [live], "status+model")
    check([r["id"] for r in list_all("status=completed", 5)] == [ids[0]], "status=completed")
    ab = list_all("status=aborted", 2)
    check(ab and all(r["status"] == "aborted" for r in ab), "status=aborted")
    check(list_all("model=nosuch", 5) == [], "unknown model: empty list")
    j = expect(S.srv.get("/rollouts?after=%d&limit=1" % live, S.viewer), 200).json
    check(j["rollouts"][0]["id"] < live, "after = ids below it")
    for q in ("status=done", "limit=0", "limit=1001", "after=abc", "after=-1", "model=a%20b", "colour=red"):
        expect(S.srv.get("/rollouts?" + q, S.viewer), 400, "bad_request", what="GET /rollouts?" + q)
    expect(S.srv.get("/rollouts", S.enroll), 403, "forbidden")
    expect(post(live, "abort"), 200)


DEVICES = [  # id, hw_class, labels, online
    ("r1", "rpi4", {"site": "berlin"}, True),
    ("r2", "rpi4", {"site": "berlin", "line": "2"}, False),
    ("r3", "rpi4", {"site": "berlin"}, False),
    ("r4", "rpi4", {"site": "paris"}, True),
    ("r5", "rpi4", {"site": "berlin"}, True),
    ("x1", "x86-cpu", {"site": "berlin"}, True),
    ("x2", "x86-cpu", {"site": "berlin"}, False),
    ("x3", "x86-cpu", {}, True),
    ("j1", "jetson-orin", {"site": "berlin"}, True),
]


@S.case
def enrollment_labels():
    for dev, hw, labels, _ in DEVICES:
        body = {"device_id": "c-" + dev, "hw_class": hw}
        if labels:
            body["labels"] = labels
        j = expect(S.srv.req("POST", "/devices/enroll", body=body, token=S.enroll), 201, what="enroll %s" % dev).json
        check(j["labels"] == labels, "enroll answers the labels: %r" % j)
    d = expect(S.srv.get("/devices/c-r2", S.viewer), 200).json
    check(d["labels"] == {"site": "berlin", "line": "2"}, "GET /devices/{id} labels %r" % d.get("labels"))
    d = expect(S.srv.get("/devices/c-x3", S.viewer), 200).json
    check(d["labels"] == {}, "no labels: {} (%r)" % d.get("labels"))
    lst = expect(S.srv.get("/devices?hw_class=rpi4&limit=1000", S.viewer), 200).json["devices"]
    check(all("labels" in x for x in lst) and any(x["labels"] == {"site": "paris"} for x in lst),
          "GET /devices shows labels")
    check(sql("SELECT labels->>'site' FROM devices WHERE id = 'c-r4'") == "paris", "stored in devices.labels")
    n = sql("SELECT count(*) FROM devices")
    many = {"k%d" % i: "v" for i in range(17)}
    for labels, where in ((["site"], "labels"), ("site=berlin", "labels"), (many, "labels"),
                          ({"bad key": "x"}, "labels"), ({"": "x"}, "labels"), ({"k" * 65: "x"}, "labels"),
                          ({"site": 5}, "labels.site"), ({"site": None}, "labels.site"),
                          ({"site": "x" * 129}, "labels.site")):
        r = expect(S.srv.req("POST", "/devices/enroll", body={"device_id": "c-bad", "hw_class": "rpi4",
                                                               "labels": labels}, token=S.enroll),
                   400, "invalid_json", what="labels %r" % (labels,))
        check(r.json["message"].startswith(where + ":"), "message names %s: %s" % (where, r.brief()))
    r = expect(S.srv.req("POST", "/devices/enroll", body={"device_id": "c-bad", "hw_class": "rpi4",
                                                           "labels": {"site": "a\u0000b"}}, token=S.enroll),
               400, "invalid_json", what="NUL in a label")
    ok16 = {"k%d" % i: "v" * 128 for i in range(16)}
    expect(S.srv.req("POST", "/devices/enroll", body={"device_id": "c-ok16", "hw_class": "arm",
                                                       "labels": ok16}, token=S.enroll), 201, what="16 labels")
    check(int(sql("SELECT count(*) FROM devices")) == int(n) + 1, "refused enrollments store nothing")


@S.case
def counts_and_devices():
    abort_live()
    online = [d for d, _, _, on in DEVICES if on]
    sql("UPDATE devices SET online = (id = ANY('{%s}'))" % ",".join("c-" + d for d in online))
    j = create({"model": "digits", "version": "1.1.0", "labels": {"site": "berlin"}}).json
    rid = j["id"]
    c = {x["hw_class"]: x for x in j["counts"]}
    zero = {"assigned": 0, "active": 0, "refused": 0, "failed": 0, "rolled_back": 0}
    check(c["rpi4"] == dict(zero, hw_class="rpi4", targeted=4, online=2), "rpi4 before: %r" % c["rpi4"])
    check(c["x86-cpu"] == dict(zero, hw_class="x86-cpu", targeted=2, online=1), "x86 before: %r" % c["x86-cpu"])
    # Another rollout (aborted) with events that must not count here.
    other = create({"model": "faces", "version": "2.0.0"}).json["id"]
    expect(post(other, "abort"), 200)
    sql("""
      INSERT INTO rollout_devices (rollout_id, device_id, stage, bucket, from_version, hw_class)
      VALUES (%(r)d, 'c-r1', 0, 0.001, '1.0.0', 'rpi4'), (%(r)d, 'c-r2', 0, 0.002, '1.0.0', 'rpi4'),
             (%(r)d, 'c-r3', 1, 0.05, '1.0.0', 'rpi4'), (%(r)d, 'c-r4', 1, 0.07, NULL, 'rpi4'),
             (%(r)d, 'c-x1', 0, 0.003, '1.0.0', 'x86-cpu'), (%(r)d, 'c-x2', 0, 0.004, '1.0.0', 'x86-cpu');
      UPDATE rollout_devices SET rolled_back_at = now(), rollback_version = '1.0.0'
        WHERE rollout_id = %(r)d AND device_id = 'c-x2';
      INSERT INTO rollout_devices (rollout_id, device_id, stage, bucket) VALUES (%(o)d, 'c-r5', 0, 0.1);
      INSERT INTO events (device_id, rollout_id, kind, model, version, body) VALUES
        ('c-r1', %(r)d, 'download_failed', 'digits', '1.1.0', '{}'),
        ('c-r1', %(r)d, 'activated', 'digits', '1.1.0', '{}'),
        ('c-r2', %(r)d, 'desired_accepted', 'digits', '1.1.0', '{}'),
        ('c-r2', %(r)d, 'refused', 'digits', '1.1.0', '{}'),
        ('c-r3', %(r)d, 'install_failed', 'digits', '1.1.0', '{}'),
        ('c-r3', %(r)d, 'activated', 'digits', '1.0.0', '{}'),
        ('c-r3', %(r)d, 'hook_failed', 'digits', '1.1.0', '{}'),
        ('c-r4', %(o)d, 'activated', 'digits', '1.1.0', '{}'),
        ('c-x2', %(r)d, 'activated', 'digits', '1.1.0', '{}'),
        ('c-r5', %(o)d, 'refused', 'faces', '2.0.0', '{}');
      INSERT INTO device_models (device_id, model, version) VALUES ('c-x1', 'digits', '1.1.0'),
        ('c-r2', 'digits', '1.0.0'), ('c-x2', 'digits', '1.1.0'), ('c-j1', 'digits', '1.1.0');
      UPDATE rollout_stages SET decision = '{"reason": "stage 0 goes on", "classes": [{"hw_class": "rpi4",
        "verdict": "inconclusive"}]}' WHERE rollout_id = %(r)d AND stage = 0;
    """ % {"r": rid, "o": other})
    j = get(rid)
    c = {x["hw_class"]: x for x in j["counts"]}
    # r1 active (latest event), r2 refused, r3 failed (the 1.0.0 event and hook_failed do not count),
    # r4 assigned (not targeted: paris; its event is of another rollout), r5 not assigned here.
    check(c["rpi4"] == {"hw_class": "rpi4", "targeted": 4, "assigned": 4, "active": 1, "refused": 1,
                        "failed": 1, "rolled_back": 0, "online": 2}, "rpi4 counts %r" % c["rpi4"])
    # x1 active (runs 1.1.0), x2 rolled back (its activation does not count), x3 not targeted.
    check(c["x86-cpu"] == {"hw_class": "x86-cpu", "targeted": 2, "assigned": 2, "active": 1, "refused": 0,
                           "failed": 0, "rolled_back": 1, "online": 1}, "x86 counts %r" % c["x86-cpu"])
    st = j["stages"][0]
    check(st["reason"] == "stage 0 goes on" and st["classes"] == [{"hw_class": "rpi4", "verdict": "inconclusive"}],
          "stage decision %r" % st)
    check(j["stages"][1]["classes"] == [], "a pending stage has no evidence")

    def devs(query=""):
        r = expect(S.srv.get("/rollouts/%d/devices%s" % (rid, query), S.viewer), 200, what="devices" + query)
        return r.json

    d = devs()
    check([x["id"] for x in d["devices"]] == ["c-r1", "c-r2", "c-r3", "c-r4", "c-x1", "c-x2"] and d["next"] is None,
          "devices by id %r" % d)
    by = {x["id"]: x for x in d["devices"]}
    check({k: x["outcome"] for k, x in by.items()} == {"c-r1": "active", "c-r2": "refused", "c-r3": "failed",
                                                         "c-r4": "assigned", "c-x1": "active", "c-x2": "rolled_back"},
          "outcomes %r" % {k: x["outcome"] for k, x in by.items()})
    x1 = by["c-x1"]
    check(set(x1) == {"id", "hw_class", "online", "bucket", "stage", "outcome", "from_version", "running",
                      "assigned_at", "rolled_back_at"}, "device fields %r" % sorted(x1))
    check(x1["hw_class"] == "x86-cpu" and x1["online"] is True and x1["bucket"] == 0.003 and x1["stage"] == 0
          and x1["from_version"] == "1.0.0" and x1["running"] == "1.1.0" and x1["rolled_back_at"] is None,
          "x1 %r" % x1)
    check(by["c-r2"]["running"] == "1.0.0" and by["c-r4"]["running"] is None and by["c-r4"]["from_version"] is None,
          "running / from_version")
    check(by["c-x2"]["rolled_back_at"] is not None, "rolled_back_at")
    check([x["id"] for x in devs("?hw_class=rpi4")["devices"]] == ["c-r1", "c-r2", "c-r3", "c-r4"], "hw_class")
    check([x["id"] for x in devs("?outcome=active")["devices"]] == ["c-r1", "c-x1"], "outcome=active")
    check([x["id"] for x in devs("?outcome=failed&hw_class=rpi4")["devices"]] == ["c-r3"], "outcome+hw_class")
    check(devs("?outcome=none")["devices"] == [], "outcome=none: none assigned")
    check(devs("?hw_class=jetson-orin")["devices"] == [], "other class: empty")
    p1 = devs("?limit=4")
    check([x["id"] for x in p1["devices"]] == ["c-r1", "c-r2", "c-r3", "c-r4"] and p1["next"] == "c-r4", "page 1")
    p2 = devs("?limit=4&after=c-r4")
    check([x["id"] for x in p2["devices"]] == ["c-x1", "c-x2"] and p2["next"] is None, "page 2 %r" % p2)
    p3 = devs("?limit=1&outcome=active")
    check([x["id"] for x in p3["devices"]] == ["c-r1"] and p3["next"] == "c-r1", "filtered page %r" % p3)
    p4 = devs("?limit=1&outcome=active&after=c-r1")
    check([x["id"] for x in p4["devices"]] == ["c-x1"] and p4["next"] is None, "filtered page 2 %r" % p4)
    for q in ("?outcome=happy", "?limit=0", "?hw_class=a%20b", "?after=%27x", "?colour=1"):
        expect(S.srv.get("/rollouts/%d/devices%s" % (rid, q), S.viewer), 400, "bad_request", what="devices" + q)
    expect(S.srv.get("/rollouts/999999/devices", S.viewer), 404, "not_found")
    expect(S.srv.get("/rollouts/abc/devices", S.viewer), 400, "bad_request")
    od = expect(S.srv.get("/rollouts/%d/devices" % other, S.viewer), 200).json
    check([x["id"] for x in od["devices"]] == ["c-r5"] and od["devices"][0]["outcome"] == "refused"
          and od["devices"][0]["running"] is None, "the other rollout's devices %r" % od)
    # GET one: errors
    expect(S.srv.get("/rollouts/999999", S.viewer), 404, "not_found")
    for bad in ("abc", "0", "-1", "1.5", "12345678901234567890", "%27%20OR%201=1"):
        expect(S.srv.get("/rollouts/" + bad, S.viewer), 400, "bad_request", what="GET /rollouts/" + bad)
    expect(S.srv.get("/rollouts/%d" % rid, S.enroll), 403, "forbidden")
    expect(post(rid, "abort"), 200)


def in_status(status):
    """A fresh rollout of digits 1.1.0 (4 stages) brought to `status` (stage 1
    for running and paused, so promote and the stage rows have a past)."""
    abort_live()
    rid = create({"model": "digits", "version": "1.1.0"}).json["id"]
    if status in ("running", "paused"):
        expect(post(rid, "promote"), 200)
        if status == "paused":
            expect(post(rid, "pause"), 200)
    elif status == "watching":
        for _ in range(4):
            expect(post(rid, "promote"), 200)
    elif status == "aborted":
        expect(post(rid, "abort"), 200)
    else:
        sql("UPDATE rollouts SET status = '%s', finished_at = now() WHERE id = %d" % (status, rid))
    check(get(rid)["status"] == status, "setup of %s" % status)
    return rid


ALLOWED = {"pause": {"running", "watching"},
           "resume": {"paused"},
           "abort": {"running", "paused", "watching"},
           "promote": {"running", "paused"}}


@S.case
def transitions_from_every_status():
    for op in ("pause", "resume", "abort", "promote"):
        for status in STATUSES:
            rid = in_status(status)
            before = get(rid)
            n_audit = len(audit(rid, "rollout." + op))
            r = post(rid, op)
            what = "%s from %s" % (op, status)
            if status not in ALLOWED[op]:
                expect(r, 409, "conflict", what=what)
                check(r.json["status"] == status, "%s: 409 names the status: %s" % (what, r.brief()))
                check(("rollout %d is %s" % (rid, status)) in r.json["message"], "%s: message %s" % (what, r.brief()))
                after = get(rid)
                check(after["status"] == before["status"] and after["stage"] == before["stage"]
                      and after["stages"] == before["stages"], "%s: nothing changed" % what)
                check(len(audit(rid, "rollout." + op)) == n_audit, "%s: no audit row" % what)
                continue
            j = expect(r, 200, what=what).json
            check(j == get(rid), "%s: the answer is the GET object" % what)
            a = audit(rid, "rollout." + op)
            check(len(a) == n_audit + 1 and a[-1]["from"] == status and a[-1]["to"] == j["status"]
                  and a[-1]["stage"] == j["stage"], "%s: audit %r" % (what, a))
            check(sql("SELECT actor FROM audit_log WHERE action = 'rollout.%s' AND object = 'rollout/%d'"
                      " ORDER BY id DESC LIMIT 1" % (op, rid)) == "ci", "%s: audit actor" % what)
            stages = [s["status"] for s in j["stages"]]
            if op == "pause":
                check(j["status"] == "paused" and j["reason"] == "paused by ci", "%s: %r" % (what, j))
                if status == "running":
                    check(stages == ["promoted", "paused", "pending", "pending"], "%s: stages %r" % (what, stages))
                else:  # watching: the last stage row is done, left alone
                    check(stages[3] == "promoted", "%s: stages %r" % (what, stages))
            elif op == "resume":
                check(j["status"] == "running" and j["stage"] == 1 and j["reason"] == "resumed by ci",
                      "%s: %r" % (what, j))
                check(stages == ["promoted", "running", "pending", "pending"], "%s: stages %r" % (what, stages))
                check(j["stage_started"] >= before["stage_started"], "stage_started renewed")
            elif op == "abort":
                check(j["status"] == "aborted" and j["finished_at"] and j["rollback_pending"] is False
                      and j["reason"] == "aborted by ci", "%s: %r" % (what, j))
                if status in ("running", "paused"):
                    check(stages == ["promoted", "aborted", "pending", "pending"], "%s: stages %r" % (what, stages))
                    check(j["stages"][1]["ended_at"], "aborted stage has ended_at")
            elif op == "promote":
                check(j["status"] == "running" and j["stage"] == 2 and j["reason"] == "promoted to stage 3/4 by ci",
                      "%s: %r" % (what, j))
                check(stages == ["promoted", "promoted", "running", "pending"], "%s: stages %r" % (what, stages))
                check(j["stages"][1]["ended_at"] and j["stages"][2]["started_at"], "%s: stage times" % what)
                check(j["stage_started"] == j["stages"][2]["started_at"], "stage_started of the new stage")
    abort_live()


@S.case
def promote_through_to_watching_and_back():
    abort_live()
    rid = create({"model": "digits", "version": "1.1.0", "watch_s": 600}).json["id"]
    for k in (1, 2, 3):
        j = expect(post(rid, "promote"), 200).json
        check(j["status"] == "running" and j["stage"] == k, "promote %d: %r" % (k, j))
    j = expect(post(rid, "promote"), 200).json
    check(j["status"] == "watching" and j["stage"] == 3 and j["watch_started"], "last promote: watching %r" % j)
    check([s["status"] for s in j["stages"]] == ["promoted"] * 4, "every stage promoted %r" % j["stages"])
    check(j["reason"] == "promoted past the last stage by ci: watching", "reason %r" % j["reason"])
    r = expect(post(rid, "promote"), 409, "conflict", what="promote while watching")
    check(r.json["status"] == "watching", "409 status field")
    create({"model": "digits", "version": "1.2.0"}, status=409, error="conflict", what="watching is live")
    j = expect(post(rid, "pause"), 200).json
    check(j["status"] == "paused" and j["watch_started"], "paused while watching")
    j = expect(post(rid, "promote"), 200).json
    check(j["status"] == "watching" and j["stage"] == 3, "promote from paused at the last stage: watching %r" % j)
    expect(post(rid, "pause"), 200)
    j = expect(post(rid, "resume"), 200).json
    check(j["status"] == "watching", "resume of a paused watch goes back to watching: %r" % j)
    j = expect(post(rid, "abort", body={"rollback": True}), 200).json
    check(j["status"] == "aborted" and j["rollback_pending"] is True and "rolling back" in j["reason"],
          "abort with rollback %r" % j)
    a = audit(rid, "rollout.abort")
    check(len(a) == 1 and a[0]["rollback"] is True and a[0]["from"] == "watching", "audit %r" % a)
    check(len(audit(rid, "rollout.promote")) == 5 and len(audit(rid, "rollout.pause")) == 2
          and len(audit(rid, "rollout.resume")) == 1, "one audit row per transition")
    expect(post(rid, "abort"), 409, "conflict", what="abort twice")


@S.case
def transition_refusals():
    abort_live()
    rid = create({"model": "digits", "version": "1.1.0"}).json["id"]
    for body in ('{"rollback": "yes"}', '{"rollback": true, "x": 1}', '{"rollback": ', '[true]', '7'):
        r = expect(post(rid, "abort", body=body), 400, "invalid_json", what="abort body %s" % body)
        if "x" in body:
            check("x" in r.json["message"], "names the field: %s" % r.brief())
    j = expect(post(rid, "abort", body={"rollback": False}), 200).json
    check(j["status"] == "aborted" and j["rollback_pending"] is False, "abort rollback false")
    rid = create({"model": "digits", "version": "1.1.0"}).json["id"]
    for op in ("pause", "resume", "abort", "promote"):
        expect(post(rid, op, token=S.viewer), 403, "forbidden", what="viewer %s" % op)
        expect(post(999999, op), 404, "not_found", what="%s unknown" % op)
        expect(post("abc", op), 400, "bad_request", what="%s bad id" % op)
        expect(S.srv.req("GET", "/rollouts/%d/%s" % (rid, op), token=S.op), 405, "method_not_allowed")
    check(get(rid)["status"] == "running", "refusals changed nothing")
    check(sql("SELECT count(*) FROM audit_log WHERE object = 'rollout/%d' AND action <> 'rollout.start'" % rid)
          == "0", "no audit rows for refusals")
    expect(post(rid, "abort", body=""), 200)


S.run()
