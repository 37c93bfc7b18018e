"""Devices and fleet: GET /devices filters and keyset pagination, the fleet
summary, over rows inserted with psql; SQL-injection-shaped names in paths,
queries and bodies leave every table as it was."""

import collections
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mfharness import Suite, check, expect, quote  # noqa: E402

S = Suite("api_devices")
N = 40
HW = ["rpi4", "jetson-orin", "x86-cpu"]


def dataset():
    """The rows inserted below, as Python sees them."""
    devs = []
    for i in range(N):
        models = []
        if i % 4 == 0:
            models.append(("digits", "1.0.0"))
        elif i % 4 == 1:
            models.append(("digits", "1.1.0"))
        if i % 5 == 0:
            models.append(("faces", "2.0.0"))
        devs.append({"id": "dev-%03d" % i, "hw": HW[i % 3], "online": i % 2 == 0, "models": models})
    return devs


DEVS = dataset()


@S.case
def setup_and_insert_fleet():
    S.srv = S.server().start()
    S.viewer = S.srv.token("viewer", "dash")
    S.admin = S.srv.token("admin", "root")
    S.psql(S.srv.db_url, """
        INSERT INTO devices (id, hw_class, credential_hash, agent_version, runtimes, online, last_seen)
        SELECT format('dev-%%s', lpad(i::text, 3, '0')), (ARRAY['rpi4','jetson-orin','x86-cpu'])[i %% 3 + 1],
               decode(md5('a' || i) || md5('b' || i), 'hex'), '0.1.0', '{onnx}', i %% 2 = 0, now()
        FROM generate_series(0, %d) AS i;
        INSERT INTO device_models (device_id, model, version)
        SELECT format('dev-%%s', lpad(i::text, 3, '0')), 'digits', CASE WHEN i %% 4 = 0 THEN '1.0.0' ELSE '1.1.0' END
        FROM generate_series(0, %d) AS i WHERE i %% 4 IN (0, 1);
        INSERT INTO device_models (device_id, model, version)
        SELECT format('dev-%%s', lpad(i::text, 3, '0')), 'faces', '2.0.0'
        FROM generate_series(0, %d) AS i WHERE i %% 5 = 0;
    """ % (N - 1, N - 1, N - 1))
    check(S.psql(S.srv.db_url, "SELECT count(*) FROM devices") == str(N), "insert failed")
    S.counts = table_counts()


def table_counts():
    return S.psql(S.srv.db_url, "SELECT (SELECT count(*) FROM devices), (SELECT count(*) FROM device_models), "
                                "(SELECT count(*) FROM api_tokens), (SELECT count(*) FROM packages), "
                                "(SELECT count(*) FROM models)")


def list_all(query, limit=7):
    """Follow `next` through every page; returns the device objects."""
    out, after, pages = [], None, 0
    while True:
        q = query + ("&" if query else "") + "limit=%d" % limit
        if after is not None:
            q += "&after=" + quote(after)
        j = expect(S.srv.get("/devices?" + q, S.viewer), 200, what="GET /devices?" + q).json
        pages += 1
        check(len(j["devices"]) <= limit, "page over the limit")
        out += j["devices"]
        after = j["next"]
        if after is None:
            break
        check(j["devices"] and after == j["devices"][-1]["id"], "next %r is not the last id of the page" % after)
        check(pages <= N + 1, "pagination does not end")
    return out


def expect_ids(query, pred):
    want = [d["id"] for d in DEVS if pred(d)]
    got = list_all(query)
    ids = [d["id"] for d in got]
    check(ids == want, "GET /devices?%s: got %d ids %s..., want %d %s..." % (query, len(ids), ids[:5], len(want), want[:5]))
    return got


@S.case
def device_objects_carry_models():
    got = expect_ids("", lambda d: True)
    by = {d["id"]: d for d in got}
    for d in DEVS:
        o = by[d["id"]]
        check(o["hw_class"] == d["hw"] and o["online"] is d["online"], "device %s: %r" % (d["id"], o))
        check(sorted((m["name"], m["version"]) for m in o.get("models", [])) == sorted(d["models"]),
              "device %s models %r, want %r" % (d["id"], o.get("models"), d["models"]))
    one = expect(S.srv.get("/devices/dev-005", S.viewer), 200).json
    check(one["id"] == "dev-005" and one["runtimes"] == ["onnx"], "GET /devices/dev-005: %r" % one)
    expect(S.srv.get("/devices/dev-999", S.viewer), 404, "not_found")


@S.case
def filters():
    expect_ids("hw_class=rpi4", lambda d: d["hw"] == "rpi4")
    expect_ids("hw_class=nosuch", lambda d: False)
    expect_ids("online=true", lambda d: d["online"])
    expect_ids("online=false", lambda d: not d["online"])
    expect_ids("model=digits", lambda d: any(m == "digits" for m, _ in d["models"]))
    expect_ids("model=faces", lambda d: ("faces", "2.0.0") in d["models"])
    expect_ids("model=digits&version=1.1.0", lambda d: ("digits", "1.1.0") in d["models"])
    expect_ids("hw_class=jetson-orin&model=digits&version=1.0.0&online=false",
               lambda d: d["hw"] == "jetson-orin" and ("digits", "1.0.0") in d["models"] and not d["online"])
    expect_ids("hw_class=x86-cpu&online=true", lambda d: d["hw"] == "x86-cpu" and d["online"])
    expect(S.srv.get("/devices?version=1.0.0", S.viewer), 400, "bad_request", what="version without model")
    expect(S.srv.get("/devices?online=maybe", S.viewer), 400, "bad_request", what="online=maybe")
    expect(S.srv.get("/devices?limit=0", S.viewer), 400, "bad_request", what="limit=0")
    expect(S.srv.get("/devices?colour=red", S.viewer), 400, "bad_request", what="unknown parameter")


@S.case
def pagination_limits_and_after():
    for limit in (1, 7, 40, 1000):
        ids = [d["id"] for d in list_all("", limit)]
        check(ids == [d["id"] for d in DEVS], "limit=%d: pages do not add up to the fleet" % limit)
    j = expect(S.srv.get("/devices?limit=40", S.viewer), 200).json
    check(j["next"] is None or expect(S.srv.get("/devices?after=%s" % j["next"], S.viewer), 200).json["devices"] == [],
          "a full page followed by an empty one is fine; a non-empty one is not")
    j = expect(S.srv.get("/devices?after=dev-035", S.viewer), 200).json
    check([d["id"] for d in j["devices"]] == ["dev-%03d" % i for i in range(36, 40)],
          "after=dev-035: %r" % [d["id"] for d in j["devices"]])
    j = expect(S.srv.get("/devices?limit=5", S.viewer), 200).json
    check(len(j["devices"]) == 5 and j["next"] == "dev-004", "first page of 5: next %r" % j["next"])


@S.case
def fleet_summary_counts():
    j = expect(S.srv.get("/fleet/summary", S.viewer), 200).json
    check(j["devices"] == N, "summary devices %r, want %d" % (j["devices"], N))
    check(j["online"] == sum(d["online"] for d in DEVS), "summary online %r" % j["online"])
    want = collections.Counter()
    for d in DEVS:
        for m, v in d["models"] or [(None, None)]:
            want[(d["hw"], m, v, d["online"])] += 1
    got = collections.Counter()
    for g in j["groups"]:
        key = (g["hw_class"], g["model"], g["version"], g["online"])
        check(key not in got, "group %r appears twice" % (key,))
        got[key] = g["devices"]
    check(got == want, "groups differ:\n  missing/extra %r" % (sorted(set(got.items()) ^ set(want.items()), key=str)))


INJECT = ["x' OR '1'='1", "a;DROP TABLE devices;--", "'; DELETE FROM api_tokens; --", "dev-001' --",
          "\" OR \"\"=\"", "%", "_", "dev-00%", "\\", "1 UNION SELECT * FROM api_tokens",
          "dev-001\x00' OR 1=1", "digits\x00x"]  # a NUL must not truncate a name into another one


@S.case
def injection_shaped_values_in_paths():
    for v in INJECT:
        for p in ["/devices/%s", "/models/%s", "/models/digits/versions/%s", "/models/%s/versions/1.0.0"]:
            expect(S.srv.get(p % quote(v), S.viewer), (400, 404), what="GET %r" % (p % v))
        expect(S.srv.get("/packages/%s" % quote(v), S.viewer), (400, 404), what="GET /packages/%r" % v)
        expect(S.srv.get("/packages/%s/blob" % quote(v), S.viewer), (400, 404), what="GET blob %r" % v)
        expect(S.srv.req("DELETE", "/tokens/%s" % quote(v), token=S.admin), (400, 404), what="DELETE /tokens/%r" % v)
        expect(S.srv.req("DELETE", "/devices/%s" % quote(v), token=S.admin), (400, 404),
               what="DELETE /devices/%r" % v)
    # Unencoded quote characters straight in the request line.
    r = S.srv.raw(("GET /api/v1/devices/x'OR'1'='1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                   "Connection: close\r\n\r\n" % S.viewer).encode())
    check(r.startswith(b"HTTP/1.1 404") or r.startswith(b"HTTP/1.1 400"), "raw quote path: %r" % r[:80])
    check(table_counts() == S.counts, "tables changed: %s vs %s" % (table_counts(), S.counts))


@S.case
def injection_shaped_values_in_queries():
    for v in INJECT:
        for q in ["hw_class=%s", "model=%s", "model=digits&version=%s", "model=%s&version=1.0.0"]:
            r = S.srv.get("/devices?" + q % quote(v), S.viewer)
            if r.status == 200:
                check(r.json["devices"] == [], "GET /devices?%r returned devices: %r" % (q % v, [d["id"] for d in r.json["devices"]][:3]))
            else:
                expect(r, 400, "bad_request", what="GET /devices?%r" % (q % v))
        for q in ["model=%s", "model=digits&version=%s"]:
            r = S.srv.get("/packages?" + q % quote(v), S.viewer)
            if r.status == 200:
                check(r.json["packages"] == [], "GET /packages?%r returned packages" % (q % v))
            else:
                expect(r, 400, "bad_request", what="GET /packages?%r" % (q % v))
        r = S.srv.get("/devices?limit=%s" % quote(v), S.viewer)
        expect(r, 400, "bad_request", what="limit=%r" % v)
    check(table_counts() == S.counts, "tables changed: %s vs %s" % (table_counts(), S.counts))


@S.case
def injection_shaped_values_in_bodies_are_stored_verbatim():
    name = "x'); DROP TABLE api_tokens;--"
    r = expect(S.srv.req("POST", "/tokens", {"name": name, "role": "viewer"}, S.admin), 201)
    tid = r.json["id"]
    names = [t["name"] for t in expect(S.srv.get("/tokens", S.admin), 200).json["tokens"] if t["id"] == tid]
    check(names == [name], "token name not stored verbatim: %r" % names)
    enroll = S.srv.token("enroll", "inj")
    for v in INJECT:
        expect(S.srv.req("POST", "/devices/enroll", {"device_id": v, "hw_class": "rpi4"}, enroll), 400,
               what="enroll device_id %r" % v)
    r = expect(S.srv.req("POST", "/devices/enroll", {"hw_class": "rpi4'; DROP TABLE devices;--"}, enroll),
               (201, 400), what="enroll hw_class with SQL")
    if r.status == 201:
        dev = expect(S.srv.get("/devices/%s" % r.json["device_id"], S.viewer), 200).json
        check(dev["hw_class"] == "rpi4'; DROP TABLE devices;--", "hw_class not verbatim: %r" % dev["hw_class"])
    for t in ("devices", "device_models", "api_tokens", "packages", "models"):
        check(S.psql(S.srv.db_url, "SELECT to_regclass('public.%s') IS NOT NULL" % t) == "t", "table %s is gone" % t)
    n = int(S.psql(S.srv.db_url, "SELECT count(*) FROM devices"))
    check(n in (N, N + 1), "devices count %d" % n)
    expect(S.srv.get("/healthz"), 200)


S.run()
