"""Server restart keeps everything: SIGTERM (exit 0), start again on the same
database and data dir, and models, packages, blobs, tokens, devices and the
signing key are all still there."""

import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mfharness import Suite, blake2b_hex, check, expect, run  # noqa: E402

S = Suite("api_restart")


@S.case
def populate():
    S.srv = S.server().start()
    S.admin = S.srv.token("admin", "root")
    S.op = expect(S.srv.req("POST", "/tokens", {"name": "ci", "role": "operator"}, S.admin), 201).json["token"]
    S.viewer = S.srv.token("viewer", "dash")
    doomed = expect(S.srv.req("POST", "/tokens", {"name": "doomed", "role": "viewer"}, S.admin), 201).json
    expect(S.srv.req("DELETE", "/tokens/%d" % doomed["id"], token=S.admin), 204)
    S.doomed = doomed["token"]
    d = S.tmpdir("p")
    S.ids = []
    for v in ("1.0.0", "1.1.0", "2.0.0"):
        r = expect(S.srv.push(S.pack(os.path.join(d, v + ".mfpkg"), version=v), S.op), 201)
        S.ids.append(r.json["id"])
    S.blobs = {i: expect(S.srv.get("/packages/%s/blob" % i, S.viewer), 200).body for i in S.ids}
    enroll = S.srv.token("enroll", "factory", max_uses=5)
    r = expect(S.srv.req("POST", "/devices/enroll", {"device_id": "pi-1", "hw_class": "rpi4"}, enroll), 201)
    S.dev = r.json["credential"]
    S.enroll = enroll
    S.models = expect(S.srv.get("/models", S.viewer), 200).json
    S.model = expect(S.srv.get("/models/digits", S.viewer), 200).json
    S.keys = expect(S.srv.get("/keys", S.viewer), 200).json
    S.pkgs = expect(S.srv.get("/packages", S.viewer), 200).json
    S.tokens = expect(S.srv.get("/tokens", S.admin), 200).json


def strip_volatile(tokens):
    # last_used_at and uses change with every request.
    return [{k: v for k, v in t.items() if k not in ("last_used_at", "uses")} for t in tokens["tokens"]]


def strip_keys(keys):
    # last_used moves whenever the server starts or signs.
    return [{k: v for k, v in key.items() if k != "last_used"} for key in keys["keys"]]


def check_everything():
    check(expect(S.srv.get("/models", S.viewer), 200).json == S.models, "GET /models changed")
    check(expect(S.srv.get("/models/digits", S.viewer), 200).json == S.model, "GET /models/digits changed")
    keys = strip_keys(expect(S.srv.get("/keys", S.viewer), 200).json)
    check(keys == strip_keys(S.keys), "GET /keys changed:\n  before %s\n  after  %s" % (strip_keys(S.keys), keys))
    check(expect(S.srv.get("/packages", S.viewer), 200).json == S.pkgs, "GET /packages changed")
    check(strip_volatile(expect(S.srv.get("/tokens", S.admin), 200).json) == strip_volatile(S.tokens),
          "GET /tokens changed")
    for i in S.ids:
        r = expect(S.srv.get("/packages/%s/blob" % i, S.dev), 200, what="device downloads %s" % i[:12])
        check(r.body == S.blobs[i] and blake2b_hex(r.body) == i, "blob %s changed" % i[:12])
        r = expect(S.srv.get("/packages/%s/blob" % i, S.viewer, headers={"Range": "bytes=1000-"}), 206)
        check(r.body == S.blobs[i][1000:], "range of %s after restart" % i[:12])
    expect(S.srv.get("/devices/pi-1", S.dev), 200, what="device reads itself")
    expect(S.srv.get("/models", S.op), 200, what="operator token")
    r = expect(S.srv.get("/models", S.doomed), 401, "unauthorized", what="revoked token stays revoked")


@S.case
def restart_keeps_everything():
    S.srv.stop()  # asserts exit 0 within 10 s
    S.srv.start()
    check_everything()
    # Re-push is still idempotent, and a new push still works after restart.
    with open(os.path.join(S.tmpdir("p"), "1.0.0.mfpkg"), "rb") as f:
        r = expect(S.srv.push(f.read(), S.op), 200, what="re-push after restart")
    check(r.json["id"] == S.ids[0], "re-push id changed after restart")
    r = expect(S.srv.push(S.pack(os.path.join(S.tmpdir("p"), "3.0.0.mfpkg"), version="3.0.0"), S.op), 201)
    f = os.path.join(S.tmpdir("p"), "dl.mfpkg")
    with open(f, "wb") as out:
        out.write(expect(S.srv.get("/packages/%s/blob" % r.json["id"], S.viewer), 200).body)
    run([S.cli_bin, "verify", "--pubkey", S.srv.pubkey, f])


@S.case
def restart_under_idle_keepalive_connection():
    # An idle keep-alive connection must not keep SIGTERM from finishing.
    import socket
    s = socket.create_connection(("127.0.0.1", S.srv.port), timeout=5)
    s.sendall(("GET /api/v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n" % S.viewer).encode())
    s.recv(65536)
    try:
        S.srv.stop()
    finally:
        s.close()
    S.srv.start()
    expect(S.srv.get("/models", S.viewer), 200)


@S.case
def enroll_token_uses_survive_restart():
    expect(S.srv.req("POST", "/devices/enroll", {"device_id": "pi-2", "hw_class": "rpi4"}, S.enroll), 201)
    S.srv.restart()
    uses = S.psql(S.srv.db_url, "SELECT uses FROM api_tokens WHERE name = 'factory'")
    check(uses == "2", "enroll token uses %s after restart, expected 2" % uses)
    ids = [d["id"] for d in expect(S.srv.get("/devices", S.viewer), 200).json["devices"]]
    check(ids == ["pi-1", "pi-2"], "devices after restart: %r" % ids)


@S.case
def sigterm_lets_an_upload_in_flight_finish():
    # SIGTERM arrives while a package is half uploaded: the server stops taking
    # new connections but finishes this request (shutdown_timeout), then exits 0.
    import socket
    import threading
    import time
    data = open(S.pack(os.path.join(S.tmpdir("p"), "4.0.0.mfpkg"), version="4.0.0"), "rb").read()
    s = socket.create_connection(("127.0.0.1", S.srv.port), timeout=15)
    s.sendall(("POST /api/v1/packages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
               "Content-Type: application/octet-stream\r\nContent-Length: %d\r\n"
               "Connection: close\r\n\r\n" % (S.op, len(data))).encode())
    half = len(data) // 2
    s.sendall(data[:half])
    time.sleep(0.3)  # the server has the first half
    stopper = threading.Thread(target=S.srv.stop)  # asserts exit 0
    stopper.start()
    time.sleep(0.5)  # SIGTERM delivered and handled; the upload is still open
    check(S.srv.proc is not None and S.srv.proc.poll() is None, "server exited with an upload in flight")
    s.sendall(data[half:])
    resp = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        resp += chunk
    s.close()
    stopper.join(15)
    check(resp.startswith(b"HTTP/1.1 201"), "upload cut by SIGTERM: %r" % resp[:200])
    S.srv.start()
    expect(S.srv.get("/models/digits/versions/4.0.0", S.viewer), 200, what="package pushed during shutdown")


S.run()
