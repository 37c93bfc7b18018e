"""Auth: every 401/403 case, the token API, enrollment and what a device
credential may do."""

import os
import re
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mfharness import Suite, check, expect  # noqa: E402

S = Suite("api_auth")


def unauthorized(r, what):
    expect(r, 401, "unauthorized", what=what)
    check((r.header("WWW-Authenticate") or "").startswith("Bearer"),
          "%s: 401 without WWW-Authenticate: Bearer (got %r)" % (what, r.header("WWW-Authenticate")))


@S.case
def setup():
    S.start_with_roles(max_upload="1M")


@S.case
def no_header_is_401_everywhere():
    for m, p in [("GET", "/models"), ("GET", "/packages"), ("POST", "/packages"), ("GET", "/devices"),
                 ("GET", "/fleet/summary"), ("GET", "/tokens"), ("POST", "/tokens"), ("GET", "/keys"),
                 ("POST", "/devices/enroll"), ("GET", "/packages/%s/blob" % ("0" * 64))]:
        unauthorized(S.srv.req(m, p, body=b"" if m == "POST" else None), "%s %s without a token" % (m, p))
    expect(S.srv.get("/healthz"), 200, what="healthz needs no token")


@S.case
def malformed_and_unknown_headers_are_401():
    fake = "mft_" + "A" * 43
    for h in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "bearer" + S.viewer, "Bearer mft_short",
              "Bearer " + S.viewer + "x", "Bearer " + fake, "Bearer mfd_" + "B" * 43,
              "Bearer " + S.viewer[:-1] + ("A" if S.viewer[-1] != "A" else "B"), "Token " + S.viewer,
              "Bearer " + S.viewer + " extra", "Bearer " + "x" * 5000]:
        unauthorized(S.srv.get("/models", headers={"Authorization": h}), "Authorization %r" % h[:40])


@S.case
def roles_on_push_and_tokens():
    expect(S.srv.push(S.pkg, S.viewer), 403, "forbidden", what="viewer POST /packages")
    expect(S.srv.req("POST", "/tokens", {"name": "x", "role": "viewer"}, S.op), 403, "forbidden",
           what="operator POST /tokens")
    expect(S.srv.get("/tokens", S.op), 403, "forbidden", what="operator GET /tokens")
    expect(S.srv.req("POST", "/tokens", {"name": "x", "role": "viewer"}, S.viewer), 403, "forbidden",
           what="viewer POST /tokens")
    expect(S.srv.get("/models", S.viewer), 200, what="viewer GET /models")
    r = expect(S.srv.push(S.pkg, S.op), 201, what="operator push")
    S.pid = r.json["id"]
    check(S.psql(S.srv.db_url, "SELECT count(*) FROM packages") == "1", "viewer push stored something")


@S.case
def admin_creates_lists_and_revokes_tokens():
    r = expect(S.srv.req("POST", "/tokens", {"name": "ci2", "role": "operator"}, S.admin), 201,
               what="admin POST /tokens")
    j = r.json
    check(re.fullmatch(r"mft_[A-Za-z0-9_-]{43}", j.get("token", "")), "token %r" % j.get("token"))
    check(j.get("name") == "ci2" and j.get("role") == "operator" and isinstance(j.get("id"), int),
          "token object %r" % j)
    tok, tid = j["token"], j["id"]
    expect(S.srv.get("/models", tok), 200, what="new operator token works")
    lst = expect(S.srv.get("/tokens", S.admin), 200).json["tokens"]
    mine = [t for t in lst if t["id"] == tid]
    check(len(mine) == 1 and mine[0]["revoked"] is False and mine[0]["role"] == "operator",
          "GET /tokens entry %r" % mine)
    check(all("token" not in t and "secret_hash" not in t for t in lst), "GET /tokens leaks secrets")
    check(tok not in S.psql(S.srv.db_url, "SELECT * FROM api_tokens"), "token stored in clear")
    expect(S.srv.req("DELETE", "/tokens/%d" % tid, token=S.admin), 204, what="DELETE /tokens/{id}")
    unauthorized(S.srv.get("/models", tok), "revoked token")
    lst = expect(S.srv.get("/tokens", S.admin), 200).json["tokens"]
    check([t["revoked"] for t in lst if t["id"] == tid] == [True], "revoked flag not set")
    expect(S.srv.req("DELETE", "/tokens/999999", token=S.admin), 404, "not_found", what="DELETE unknown token")
    expect(S.srv.req("DELETE", "/tokens/abc", token=S.admin), (400, 404), what="DELETE /tokens/abc")
    # Bad bodies.
    expect(S.srv.req("POST", "/tokens", {"name": "x", "role": "root"}, S.admin), 400, "invalid_json",
           what="unknown role")
    expect(S.srv.req("POST", "/tokens", {"role": "viewer"}, S.admin), 400, "invalid_json", what="no name")
    r = expect(S.srv.req("POST", "/tokens", {"name": "x", "role": "viewer", "bogus": 1}, S.admin), 400,
               "invalid_json", what="unknown field")
    check("bogus" in r.json["message"], "unknown-field message does not name it: %r" % r.json["message"])


@S.case
def expired_token_is_401():
    tok = S.srv.token("enroll", "short", expires_in=1)
    time.sleep(1.6)
    unauthorized(S.srv.req("POST", "/devices/enroll", {"hw_class": "rpi4"}, tok), "expired enroll token")
    n = S.psql(S.srv.db_url, "SELECT count(*) FROM devices")
    check(n == "0", "expired token enrolled a device")


@S.case
def enroll_token_only_enrolls():
    S.enroll = S.srv.token("enroll", "factory", max_uses=3)
    for m, p in [("GET", "/models"), ("GET", "/devices"), ("GET", "/keys"), ("GET", "/packages/%s" % S.pid)]:
        expect(S.srv.req(m, p, token=S.enroll), 403, "forbidden", what="enroll token %s %s" % (m, p))
    expect(S.srv.push(S.pkg, S.enroll), 403, "forbidden", what="enroll token push")
    for tok, who in [(S.viewer, "viewer"), (S.op, "operator")]:
        expect(S.srv.req("POST", "/devices/enroll", {"hw_class": "rpi4"}, tok), 403, "forbidden",
               what="%s enrolling" % who)


@S.case
def enroll_creates_devices_and_honours_max_uses():
    r = expect(S.srv.req("POST", "/devices/enroll", {"device_id": "pi-0001", "hw_class": "rpi4",
                                                       "runtimes": ["onnx"], "agent_version": "0.1.0"},
                         S.enroll), 201, what="enroll pi-0001")
    j = r.json
    check(j.get("device_id") == "pi-0001" and j.get("hw_class") == "rpi4", "enroll body %r" % j)
    check(re.fullmatch(r"mfd_[A-Za-z0-9_-]{43}", j.get("credential", "")), "credential %r" % j.get("credential"))
    S.dev1 = j["credential"]
    check(S.dev1 not in S.psql(S.srv.db_url, "SELECT * FROM devices"), "credential stored in clear")
    # Duplicate id: 409, and it does not count as a use... either way it must not create anything.
    r = expect(S.srv.req("POST", "/devices/enroll", {"device_id": "pi-0001", "hw_class": "rpi4"}, S.enroll),
               409, "conflict", what="duplicate device id")
    # Bad ids: 400.
    for bad in ["../etc/passwd", "has space", "x' OR '1'='1", "-leading-dash", "a" * 65, "", "é"]:
        expect(S.srv.req("POST", "/devices/enroll", {"device_id": bad, "hw_class": "rpi4"}, S.enroll),
               400, what="device_id %r" % bad)
    expect(S.srv.req("POST", "/devices/enroll", {"device_id": "ok-1"}, S.enroll), 400, "invalid_json",
           what="enroll without hw_class")
    check(S.psql(S.srv.db_url, "SELECT count(*) FROM devices") == "1", "bad enrollments created devices")
    # The server picks an id when none is given.
    r = expect(S.srv.req("POST", "/devices/enroll", {"hw_class": "jetson-orin"}, S.enroll), 201,
               what="enroll without device_id")
    check(re.fullmatch(r"d-[0-9a-f]{16}", r.json.get("device_id", "")), "generated id %r" % r.json.get("device_id"))
    S.dev2_id, S.dev2 = r.json["device_id"], r.json["credential"]
    # max_uses = 3: find how many uses the 409/400s consumed, then exhaust it.
    uses = int(S.psql(S.srv.db_url, "SELECT uses FROM api_tokens WHERE name = 'factory'"))
    check(uses == 2, "enroll token uses = %d after 2 successful enrollments (failed ones must not count)" % uses)
    expect(S.srv.req("POST", "/devices/enroll", {"device_id": "pi-0003", "hw_class": "rpi4"}, S.enroll), 201,
           what="third enrollment (max_uses 3)")
    r = S.srv.req("POST", "/devices/enroll", {"device_id": "pi-0004", "hw_class": "rpi4"}, S.enroll)
    expect(r, (401, 403), what="fourth enrollment over max_uses")
    check(S.psql(S.srv.db_url, "SELECT count(*) FROM devices WHERE id = 'pi-0004'") == "0",
          "enrollment over max_uses created the device")
    print("  (used-up enroll token answered %d %s)" % (r.status, r.json.get("error")))


@S.case
def device_credential_rights():
    dev = S.dev1
    r = expect(S.srv.get("/packages/%s/blob" % S.pid, dev), 200, what="device downloads a blob")
    check(len(r.body) > 0, "empty blob")
    expect(S.srv.get("/packages/%s" % S.pid, dev), 200, what="device reads package metadata")
    expect(S.srv.get("/keys", dev), 200, what="device reads /keys")
    j = expect(S.srv.get("/devices/pi-0001", dev), 200, what="device reads itself").json
    check(j.get("id") == "pi-0001" and j.get("hw_class") == "rpi4", "device object %r" % j)
    expect(S.srv.get("/devices", dev), 403, "forbidden", what="device lists devices")
    expect(S.srv.get("/devices/%s" % S.dev2_id, dev), 403, "forbidden", what="device reads another device")
    expect(S.srv.get("/devices/nosuch", dev), (403, 404), what="device reads an unknown device")
    expect(S.srv.get("/fleet/summary", dev), 403, "forbidden", what="device reads fleet summary")
    expect(S.srv.push(S.pkg, dev), 403, "forbidden", what="device pushes")
    expect(S.srv.req("POST", "/tokens", {"name": "x", "role": "admin"}, dev), 403, "forbidden",
           what="device creates a token")
    # Decommission: admin only, then the credential stops working.
    expect(S.srv.req("DELETE", "/devices/%s" % S.dev2_id, token=S.op), 403, "forbidden", what="operator DELETE device")
    expect(S.srv.req("DELETE", "/devices/%s" % S.dev2_id, token=S.admin), 204, what="admin DELETE device")
    unauthorized(S.srv.get("/keys", S.dev2), "decommissioned device credential")
    expect(S.srv.get("/devices/%s" % S.dev2_id, S.viewer), 404, "not_found", what="decommissioned device")


@S.case
def method_not_allowed_and_unknown_routes():
    r = expect(S.srv.req("PUT", "/models", token=S.viewer, body=b"{}"), 405, "method_not_allowed",
               what="PUT /models")
    check(r.header("Allow"), "405 without Allow header")
    r = expect(S.srv.req("DELETE", "/packages", token=S.admin), 405, "method_not_allowed",
               what="DELETE /packages")
    allow = [m.strip() for m in (r.header("Allow") or "").split(",")]
    check(sorted(allow) == ["GET", "HEAD", "POST"], "Allow of /packages: %r" % r.header("Allow"))
    expect(S.srv.get("/nosuch", S.viewer), 404, "not_found", what="unknown route")
    expect(S.srv.get("/api/v2/models", S.viewer), 404, what="unknown API version")
    expect(S.srv.get("/models?bogus=1", S.viewer), 400, "bad_request", what="unknown query parameter")
    expect(S.srv.get("/packages?limit=0", S.viewer), 400, "bad_request", what="limit=0")
    expect(S.srv.get("/packages?limit=1001", S.viewer), 400, "bad_request", what="limit=1001")
    expect(S.srv.get("/packages?limit=abc", S.viewer), 400, "bad_request", what="limit=abc")


@S.case
def hostile_bytes_in_paths_and_names():
    # Invalid UTF-8 in a path, or cut in half by a message's length limit, must
    # give a JSON error, not a crash; a newline must not forge a log line.
    expect(S.srv.get("/%ff%fe", S.viewer), 404, "not_found", what="invalid UTF-8 path")
    expect(S.srv.get("/packages?" + "a" * 63 + "%C3%A9=1", S.viewer), 400, "bad_request",
           what="query key cut inside a UTF-8 character")
    expect(S.srv.get("/x%0a2026-01-01T00:00:00Z%20info%20token%20created%20name=evil", S.viewer), 404)
    check("\n2026-01-01T00:00:00Z info token created" not in S.srv.log_text(), "a URL forged a log line")
    check(S.srv.alive(), "the server died")
    # A runtime named NULL is a name, not SQL NULL.
    enroll = S.srv.token("enroll", "nulls", max_uses=1)
    expect(S.srv.req("POST", "/devices/enroll", {"device_id": "rt-null", "hw_class": "rpi4",
                                                   "runtimes": ["onnx", "NULL"]}, enroll), 201)
    d = expect(S.srv.get("/devices/rt-null", S.viewer), 200).json
    check(d["runtimes"] == ["onnx", "NULL"], "runtimes %r" % d["runtimes"])


@S.case
def tokens_not_logged():
    text = S.srv.log_text()
    for t in (S.admin, S.op, S.viewer, S.enroll, S.dev1, S.dev2):
        check(t not in text, "a secret appears in the server log")


S.run()
