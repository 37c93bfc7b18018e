"""Limits and hostile input: malformed and too-deep JSON, JSON and upload
bodies over their caps (Content-Length and chunked), hostile packages refused
with the verifier's reason and nothing stored, a client dropping the
connection mid-upload."""

import os
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mfharness import (Suite, check, expect, files_under, parse_raw, run,  # noqa: E402
                       wait_for)

S = Suite("api_limits")
CAP = 1 << 20  # max_upload = 1M

# Structural refusals: independent of any publisher key. name -> reason.
HOSTILE = {
    "truncated-inside-first-header": "not_package", "truncated-in-manifest": "truncated",
    "truncated-in-payload": "truncated", "truncated-at-entry-boundary": "missing",
    "truncated-zstd": "truncated", "manifest-not-first": "layout", "no-signature-entry": "layout",
    "duplicate-entry": "duplicate", "duplicate-manifest": "duplicate", "unlisted-entry": "unlisted",
    "listed-file-missing": "missing", "size-mismatch": "size_mismatch", "hash-mismatch": "hash_mismatch",
    "absolute-path": "unsafe_path", "dotdot-component": "unsafe_path", "dotdot-in-manifest": "unsafe_path",
    "symlink": "entry_type", "hardlink": "entry_type", "device-node": "entry_type", "fifo": "entry_type",
    "directory-entry": "entry_type", "invalid-json": "parse", "wrong-json-type": "schema",
    "negative-size": "schema", "higher-major-version": "version", "unknown-field-in-1.0": "schema",
    "empty-file": "not_package", "not-an-archive": "not_package", "zip-archive": "not_package",
    "zstd-twice": "not_package", "huge-pax-header": "not_package",
}
# Signature refusals: only when require_publisher_signature = true and the
# hostile generator's trusted key is the publisher key.
SIGNATURE = {"bad-signature": "bad_signature", "tampered-manifest": "bad_signature",
             "unknown-key": "unknown_key", "unsigned": "unsigned"}


def stored_state(srv):
    """Everything an upload could leave behind: files in data_dir and TMPDIR, rows."""
    return (files_under(srv.data_dir), files_under(srv.tmp),
            S.psql(srv.db_url, "SELECT (SELECT count(*) FROM packages), (SELECT count(*) FROM package_hardware), "
                               "(SELECT count(*) FROM models)"))


def expect_nothing_stored(srv, before, what, timeout=5, settle=0.0):
    """settle: seconds to wait first, so that a server that has not yet even
    looked at a dropped connection is not mistaken for one that cleaned up."""
    time.sleep(settle)
    after = wait_for(lambda: stored_state(srv) == before and before, timeout)
    if not after:
        now = stored_state(srv)
        raise AssertionError("%s left something behind:\n  before %r\n  after  %r" % (what, before, now))


@S.case
def setup():
    S.start_with_roles(max_upload="1M")
    S.base = stored_state(S.srv)


@S.case
def malformed_json_is_400_naming_the_problem():
    for body, what in [(b'{"name": "x", "role": ', "truncated"), (b"{name: 1}", "unquoted key"),
                       (b"not json at all", "not JSON"), (b'{"name":"x","role":"viewer"} trailing', "trailing"),
                       (b'["name", "role"]', "array instead of object"), (b"", "empty body"),
                       (b'{"name": "\xff\xfe", "role": "viewer"}', "invalid UTF-8"),
                       (b'{"name": 42, "role": "viewer"}', "name not a string")]:
        r = expect(S.srv.req("POST", "/tokens", body=body, token=S.admin,
                             headers={"Content-Type": "application/json"}), 400, "invalid_json", what=what)
        check(len(r.json["message"]) > 8, "%s: message too thin: %r" % (what, r.json["message"]))
    r = expect(S.srv.req("POST", "/tokens", {"name": "x", "role": "viewer", "colour": "red"}, S.admin), 400,
               "invalid_json", what="unknown field")
    check("colour" in r.json["message"], "message does not name the unknown field: %r" % r.json["message"])
    r = expect(S.srv.req("POST", "/devices/enroll", {"hw_class": 5}, S.srv.token("enroll", "e")), 400,
               "invalid_json", what="hw_class not a string")
    check("hw_class" in r.json["message"], "message does not name the field: %r" % r.json["message"])


@S.case
def json_nesting_over_max_depth_is_400():
    deep = '{"name":"x","role":"viewer","a":' + "[" * 40 + "]" * 40 + "}"
    r = expect(S.srv.req("POST", "/tokens", body=deep, token=S.admin), 400, "invalid_json", what="depth 41")
    print("  (depth message: %s)" % r.json["message"])
    # Deep enough to hurt a recursive parser: still a clean 400.
    deeper = "[" * 20000 + "]" * 20000
    expect(S.srv.req("POST", "/tokens", body=deeper, token=S.admin), 400, "invalid_json", what="depth 20000")
    expect(S.srv.get("/healthz"), 200, what="alive after deep JSON")


@S.case
def json_body_over_max_json_body_is_413():
    before = S.psql(S.srv.db_url, "SELECT count(*) FROM api_tokens")
    big = '{"name":"' + "x" * (70 * 1024) + '","role":"viewer"}'
    expect(S.srv.req("POST", "/tokens", body=big, token=S.admin), 413, "payload_too_large", what="70 KiB JSON")
    st, resp, sent, err = S.srv.stream_upload("/tokens", S.admin, 200 * 1024, chunk=4096, chunked=True)
    check(st == 413, "chunked JSON over the cap: status %r after %d bytes (%s) %r" % (st, sent, err, resp[:200]))
    n = S.psql(S.srv.db_url, "SELECT count(*) FROM api_tokens")
    check(n == before, "api_tokens went from %s to %s rows; refused bodies must not create tokens" % (before, n))


@S.case
def upload_over_max_upload_is_413_from_content_length():
    # Only the headers: the server must answer from Content-Length alone.
    raw = S.srv.raw(("POST /api/v1/packages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                     "Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"
                     % (S.op, CAP + 1)).encode(), timeout=5)
    st, h, body = parse_raw(raw)
    check(st == 413, "Content-Length cap+1 without a body: %r" % raw[:200])
    check(b"payload_too_large" in body, "413 body %r" % body[:200])
    # And a sender that pushes the bytes anyway.
    st, resp, sent, err = S.srv.stream_upload("/packages", S.op, 2 * CAP)
    check(st == 413, "2 MiB upload: status %r after %d bytes sent (%s) %r" % (st, sent, err, resp[:200]))
    expect_nothing_stored(S.srv, S.base, "413 upload")


@S.case
def chunked_upload_over_max_upload_is_413():
    st, resp, sent, err = S.srv.stream_upload("/packages", S.op, 3 * CAP, chunked=True)
    check(st == 413, "chunked 3 MiB upload: status %r after %d bytes sent (%s) %r" % (st, sent, err, resp[:200]))
    st, h, body = parse_raw(resp)
    check(b"payload_too_large" in body, "413 body %r" % body[:200])
    expect_nothing_stored(S.srv, S.base, "chunked 413 upload")
    # A huge chunked body: the server stops reading long before its end (with
    # libmicrohttpd 0.9 a response cannot be queued mid-body, so the server
    # may cut the connection instead of answering 413).
    total = 64 * CAP
    st, resp, sent, err = S.srv.stream_upload("/packages", S.op, total, chunked=True)
    check(st in (413, None), "chunked 64 MiB upload: status %r" % st)
    check(sent < total // 2, "the server read %d of 64 MiB past a 1 MiB cap" % sent)
    print("  (64 MiB chunked: %s after %.1f MiB sent%s)" % (st or "connection cut", sent / CAP,
                                                           ", " + err if err else ""))
    expect_nothing_stored(S.srv, S.base, "huge chunked upload")
    # A chunked upload under the cap works (a real package, chunked).
    with open(S.pkg, "rb") as f:
        data = f.read()
    r = S.srv.req("POST", "/packages", body=iter([data[i:i + 3000] for i in range(0, len(data), 3000)]), token=S.op)
    expect(r, 201, what="chunked upload of a valid package")
    S.pid = r.json["id"]
    S.base = stored_state(S.srv)


@S.case
def hostile_packages_refused_and_nothing_stored():
    gen = S.hostile_gen()
    check(gen, "mf-hostile-gen not found in the build tree")
    S.hdir = S.tmpdir("hostile")
    run([gen, S.hdir])
    fails = []
    for name, reason in sorted(HOSTILE.items()):
        with open(os.path.join(S.hdir, name + ".mfpkg"), "rb") as f:
            data = f.read()
        try:
            r = S.srv.push(data, S.op)
        except OSError as e:
            fails.append("%s: %s" % (name, e))
            continue
        if r.status != 422 or r.json.get("error") != "package_refused" or r.json.get("reason") != reason:
            fails.append("%s: want 422 package_refused/%s, got %s" % (name, reason, r.brief()[:200]))
        elif not r.json.get("message"):
            fails.append("%s: no message" % name)
        elif "upload-" in r.body.decode() or S.srv.data_dir in r.body.decode():
            fails.append("%s: the refusal shows a server path: %s" % (name, r.brief()[:200]))
    check(not fails, "hostile packages:\n    " + "\n    ".join(fails))
    expect_nothing_stored(S.srv, S.base, "hostile packages")
    # manifest-over-cap is over max_upload (1 MiB) too: refused either way.
    with open(os.path.join(S.hdir, "manifest-over-cap.mfpkg"), "rb") as f:
        st, resp, sent, err = S.srv.stream_upload("/packages", S.op, 0, body=f.read())
    check(st in (413, 422), "manifest-over-cap: %r (%s)" % (resp[:200], err))
    expect_nothing_stored(S.srv, S.base, "manifest-over-cap")
    # The control case is accepted.
    with open(os.path.join(S.hdir, "valid.mfpkg"), "rb") as f:
        expect(S.srv.push(f.read(), S.op), 201, what="hostile generator's valid package")
    S.base = stored_state(S.srv)


@S.case
def signature_refusals_when_publisher_signature_required():
    srv = S.server("strict", publisher_keys=os.path.join(S.hdir, "trusted.pub"),
                   require_publisher_signature=True, max_upload="1M").start()
    op = srv.token("operator", "ci")
    before = stored_state(srv)
    fails = []
    for name, reason in sorted(SIGNATURE.items()):
        with open(os.path.join(S.hdir, name + ".mfpkg"), "rb") as f:
            r = srv.push(f.read(), op)
        if r.status != 422 or r.json.get("error") != "package_refused" or r.json.get("reason") != reason:
            fails.append("%s: want 422 package_refused/%s, got %s" % (name, reason, r.brief()[:200]))
    r = srv.push(S.pkg, op)  # unsigned, made by `modelfleet pack`
    if r.status != 422 or r.json.get("reason") != "unsigned":
        fails.append("packed unsigned: want 422 unsigned, got %s" % r.brief()[:200])
    check(not fails, "signature refusals:\n    " + "\n    ".join(fails))
    expect_nothing_stored(srv, before, "signature refusals")
    with open(os.path.join(S.hdir, "valid.mfpkg"), "rb") as f:
        expect(srv.push(f.read(), op), 201, what="valid package signed by the publisher key")
    srv.stop()


@S.case
def dropped_connection_mid_upload_leaves_nothing():
    for stop_after in (0, 4096, 65536, 5 * 65536):
        for reset in (False, True):
            st, _, sent, _ = S.srv.stream_upload("/packages", S.op, 8 * 65536, content_length=8 * 65536,
                                                 stop_after=stop_after, reset=reset)
            check(st is None, "client closed, yet got a status")
    # Headers, part of the body and the FIN in one burst (the server sees them together).
    for part in (1000, 65536, 300000):
        S.srv.raw(("POST /api/v1/packages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                   "Content-Length: 524288\r\n\r\n" % S.op).encode() + b"\x5a" * part, read=False)
    # Chunked, dropped without the last chunk.
    S.srv.stream_upload("/packages", S.op, 8 * 65536, chunked=True, stop_after=3 * 65536)
    expect_nothing_stored(S.srv, S.base, "dropped uploads", timeout=10, settle=1.0)
    check(S.srv.alive(), "server died after dropped uploads")
    expect(S.srv.get("/healthz"), 200)
    d = S.pack(os.path.join(S.tmpdir("p"), "after-drop.mfpkg"), version="3.0.0")
    expect(S.srv.push(d, S.op), 201, what="push after dropped uploads")
    S.base = stored_state(S.srv)


@S.case
def many_drops_under_load_keep_serving():
    # More dropped uploads than http_threads at once, then normal traffic.
    errs = []

    def drop():
        try:
            S.srv.stream_upload("/packages", S.op, 4 * 65536, stop_after=65536)
        except OSError as e:
            errs.append(str(e))
    ts = [threading.Thread(target=drop) for _ in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    t0 = time.monotonic()
    expect(S.srv.get("/models", S.viewer), 200, what="GET /models after 16 dropped uploads")
    check(time.monotonic() - t0 < 5, "server slow to answer after dropped uploads")
    check(S.srv.alive(), "server died")
    check(not errs, "client errors: %s" % errs[:3])
    expect_nothing_stored(S.srv, S.base, "16 concurrent dropped uploads", timeout=10, settle=1.0)


S.run()
