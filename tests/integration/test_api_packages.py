"""Packages: push → sign → download round trip with the agent-side verify,
Range requests and a resumed download, ETag/HEAD, idempotent re-push and the
409, and the model listings."""

import http.client
import os
import socket
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mfharness import Suite, blake2b_hex, check, expect, run  # noqa: E402

S = Suite("api_packages")
BLOB_CT = "application/vnd.modelfleet.package"


def blob_path(pid):
    return "/packages/%s/blob" % pid


@S.case
def setup_server_tokens_and_packages():
    d = S.tmpdir("pkgs")
    S.pub_key, S.pub_pub = S.keygen(os.path.join(d, "publisher"))
    S.srv = S.server(publisher_keys=S.pub_pub, max_upload="1M").start()
    S.admin = S.srv.token("admin", "root")
    S.op = S.srv.token("operator", "ci")
    S.viewer = S.srv.token("viewer", "dash")
    S.unsigned = S.pack(os.path.join(d, "unsigned.mfpkg"), version="1.0.0")
    S.signed = S.pack(os.path.join(d, "signed.mfpkg"), version="1.1.0", key=S.pub_key)


@S.case
def push_unsigned_gives_201_and_package_object():
    r = expect(S.srv.push(S.unsigned, S.op), 201, what="push unsigned")
    p = r.json
    with open(S.unsigned, "rb") as f:
        raw = f.read()
    check(p.get("upload_hash") == blake2b_hex(raw), "upload_hash %r != BLAKE2b of the pushed bytes"
          % p.get("upload_hash"))
    check(p.get("model") == "digits" and p.get("version") == "1.0.0", "model/version in %r" % p)
    check(sorted(p.get("hardware", [])) == ["rpi4", "x86-cpu"], "hardware %r" % p.get("hardware"))
    check(p.get("runtime") == "onnx", "runtime %r" % p.get("runtime"))
    check(p.get("publisher_key") is None, "unsigned package has publisher_key %r" % p.get("publisher_key"))
    check(p.get("pushed_by") == "ci", "pushed_by %r (token name is 'ci')" % p.get("pushed_by"))
    check(p.get("blob") == "/api/v1/packages/%s/blob" % p.get("id"), "blob link %r" % p.get("blob"))
    check(isinstance(p.get("files"), list) and p["files"], "files missing")
    check(isinstance(p.get("manifest"), dict), "manifest missing")
    S.p1 = p


@S.case
def download_is_signed_by_server_and_hashes_to_id():
    r = expect(S.srv.get(blob_path(S.p1["id"]), S.viewer), 200, what="GET blob")
    S.blob1 = r.body
    check(blake2b_hex(r.body) == S.p1["id"], "BLAKE2b-256 of the blob != package id")
    check(len(r.body) == S.p1["size"], "blob is %d bytes, package says %d" % (len(r.body), S.p1["size"]))
    check(r.header("Content-Type", "").startswith(BLOB_CT), "Content-Type %r" % r.header("Content-Type"))
    check(r.header("Accept-Ranges") == "bytes", "Accept-Ranges %r" % r.header("Accept-Ranges"))
    check(r.header("ETag") == '"%s"' % S.p1["id"], "ETag %r" % r.header("ETag"))
    f = os.path.join(S.tmpdir("dl"), "p1.mfpkg")
    with open(f, "wb") as out:
        out.write(r.body)
    run([S.cli_bin, "verify", "--pubkey", S.srv.pubkey, f])
    # The key id the server reports is the one /keys lists.
    keys = expect(S.srv.get("/keys", S.viewer), 200).json["keys"]
    check(keys and keys[0]["key_id"] == S.p1["server_key"] and keys[0]["active"] is True,
          "/keys %r vs server_key %r" % (keys, S.p1["server_key"]))
    with open(S.srv.pubkey) as pk:
        check(keys[0]["public_key_file"].strip() == pk.read().strip(),
              "public_key_file differs from the server's .pub")


@S.case
def push_publisher_signed_keeps_both_signatures():
    r = expect(S.srv.push(S.signed, S.op), 201, what="push signed")
    p = r.json
    check(p.get("publisher_key"), "publisher_key missing for a signed package: %r" % p.get("publisher_key"))
    blob = expect(S.srv.get(blob_path(p["id"]), S.op), 200).body
    check(blake2b_hex(blob) == p["id"], "blob hash != id")
    f = os.path.join(S.tmpdir("dl"), "p2.mfpkg")
    with open(f, "wb") as out:
        out.write(blob)
    run([S.cli_bin, "verify", "--pubkey", S.srv.pubkey, f])
    run([S.cli_bin, "verify", "--pubkey", S.pub_pub, f])  # the publisher's signature is still there
    S.p2 = p
    S.blob2 = blob


@S.case
def get_package_and_listings():
    p = expect(S.srv.get("/packages/%s" % S.p1["id"], S.viewer), 200).json
    check(p["id"] == S.p1["id"] and p["upload_hash"] == S.p1["upload_hash"], "GET /packages/{id} differs")
    expect(S.srv.get("/packages/%s" % ("0" * 64), S.viewer), 404, "not_found")
    lst = expect(S.srv.get("/packages", S.viewer), 200).json
    ids = [x["id"] for x in lst["packages"]]
    check(sorted(ids) == sorted([S.p1["id"], S.p2["id"]]) and ids == sorted(ids),
          "GET /packages ids %r (must be both, ordered by id)" % ids)
    check(lst["next"] is None, "next %r on the last page" % lst["next"])
    page = expect(S.srv.get("/packages?limit=1", S.viewer), 200).json
    check(len(page["packages"]) == 1 and page["next"], "limit=1 page %r" % page)
    page2 = expect(S.srv.get("/packages?limit=1&after=%s" % page["next"], S.viewer), 200).json
    check([x["id"] for x in page["packages"] + page2["packages"]] == ids, "pagination of /packages")
    v = expect(S.srv.get("/packages?model=digits&version=1.1.0", S.viewer), 200).json
    check([x["id"] for x in v["packages"]] == [S.p2["id"]], "filter version=1.1.0: %r" % v)
    models = expect(S.srv.get("/models", S.viewer), 200).json["models"]
    check(len(models) == 1 and models[0]["name"] == "digits" and models[0]["versions"] == 2
          and models[0]["latest"] == "1.1.0", "GET /models %r" % models)
    m = expect(S.srv.get("/models/digits", S.viewer), 200).json
    check([v["version"] for v in m["versions"]] == ["1.1.0", "1.0.0"], "versions highest first: %r" % m)
    mv = expect(S.srv.get("/models/digits/versions/1.0.0", S.viewer), 200).json
    check([x["id"] for x in mv["variants"]] == [S.p1["id"]], "variants of 1.0.0: %r" % mv)
    expect(S.srv.get("/models/nosuch", S.viewer), 404, "not_found")
    expect(S.srv.get("/models/digits/versions/9.9.9", S.viewer), 404, "not_found")


@S.case
def range_requests():
    blob, pid, size = S.blob1, S.p1["id"], len(S.blob1)
    path = blob_path(pid)
    for rng, lo, hi in [("bytes=%d-" % 1234, 1234, size - 1), ("bytes=%d-" % (size - 1), size - 1, size - 1),
                        ("bytes=0-0", 0, 0), ("bytes=100-4095", 100, 4095),
                        ("bytes=%d-%d" % (size - 10, size + 1000), size - 10, size - 1),
                        ("bytes=-500", size - 500, size - 1)]:
        r = expect(S.srv.get(path, S.viewer, headers={"Range": rng}), 206, what="Range %s" % rng)
        check(r.body == blob[lo:hi + 1], "Range %s: wrong bytes (%d returned)" % (rng, len(r.body)))
        check(r.header("Content-Range") == "bytes %d-%d/%d" % (lo, hi, size),
              "Range %s: Content-Range %r" % (rng, r.header("Content-Range")))
        check(r.header("Content-Length") == str(hi - lo + 1), "Range %s: Content-Length %r"
              % (rng, r.header("Content-Length")))
    for rng in ("bytes=%d-" % size, "bytes=%d-%d" % (size + 5, size + 10)):
        r = expect(S.srv.get(path, S.viewer, headers={"Range": rng}), 416, "range_not_satisfiable",
                   what="Range %s" % rng)
        check(r.header("Content-Range") == "bytes */%d" % size, "416 Content-Range %r" % r.header("Content-Range"))
    # Several ranges: a plain 200 with everything is allowed.
    r = expect(S.srv.get(path, S.viewer, headers={"Range": "bytes=0-9,20-29"}), (200, 206))
    if r.status == 200:
        check(r.body == blob, "multi-range 200 must carry the whole blob")
    # If-Range with the right ETag honours the range, with another one it does not.
    r = expect(S.srv.get(path, S.viewer, headers={"Range": "bytes=10-19", "If-Range": '"%s"' % pid}), 206)
    check(r.body == blob[10:20], "If-Range match: wrong bytes")
    r = expect(S.srv.get(path, S.viewer, headers={"Range": "bytes=10-19", "If-Range": '"%s"' % ("1" * 64)}), 200)
    check(r.body == blob, "If-Range mismatch: must be the whole blob")


@S.case
def resume_after_a_cut_download():
    blob, pid = S.blob2, S.p2["id"]
    cut = 7919  # an arbitrary offset, not on any block boundary
    s = socket.create_connection(("127.0.0.1", S.srv.port), timeout=10)
    s.sendall(("GET /api/v1/packages/%s/blob HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n"
               % (pid, S.viewer)).encode())
    got = b""
    while b"\r\n\r\n" not in got or len(got.split(b"\r\n\r\n", 1)[1]) < cut:
        d = s.recv(1000)
        check(d, "server closed before %d body bytes" % cut)
        got += d
    s.close()  # cut mid-body
    head, body = got.split(b"\r\n\r\n", 1)
    check(head.startswith(b"HTTP/1.1 200"), "first download status %r" % head[:40])
    part = body[:cut]
    r = expect(S.srv.get(blob_path(pid), S.viewer, headers={"Range": "bytes=%d-" % cut,
                                                              "If-Range": '"%s"' % pid}), 206)
    full = part + r.body
    check(full == blob, "resumed download (%d + %d bytes) differs from the blob (%d)"
          % (len(part), len(r.body), len(blob)))
    check(blake2b_hex(full) == pid, "resumed download does not hash to the id")
    expect(S.srv.get("/healthz"), 200, what="server still serving after a cut download")


@S.case
def etag_if_none_match_and_head():
    pid, size = S.p1["id"], len(S.blob1)
    r = expect(S.srv.get(blob_path(pid), S.viewer, headers={"If-None-Match": '"%s"' % pid}), 304)
    check(r.body == b"", "304 with a body")
    expect(S.srv.get(blob_path(pid), S.viewer, headers={"If-None-Match": "*"}), 304, what="If-None-Match: *")
    r = expect(S.srv.get(blob_path(pid), S.viewer, headers={"If-None-Match": '"%s"' % ("2" * 64)}), 200)
    check(r.body == S.blob1, "If-None-Match mismatch must return the blob")
    r = expect(S.srv.get(blob_path(pid), S.viewer, headers={"If-None-Match": '"%sff"' % pid}), 200,
               what="a longer tag that contains the id is another tag")
    expect(S.srv.get(blob_path(pid), S.viewer,
                     headers={"If-None-Match": '"%s", W/"%s"' % ("3" * 64, pid)}), 304,
           what="If-None-Match list with a weak match")
    c = http.client.HTTPConnection("127.0.0.1", S.srv.port, timeout=10)
    c.request("HEAD", "/api/v1" + blob_path(pid), headers={"Authorization": "Bearer " + S.viewer})
    h = c.getresponse()
    body = h.read()
    c.close()
    check(h.status == 200, "HEAD status %d" % h.status)
    check(h.getheader("Content-Length") == str(size), "HEAD Content-Length %r, blob is %d"
          % (h.getheader("Content-Length"), size))
    check(body == b"", "HEAD carried a body")
    # After a HEAD the connection must still be usable: raw check that nothing follows the headers.
    raw = S.srv.raw(("HEAD /api/v1%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n"
                     % (blob_path(pid), S.viewer)).encode())
    check(raw.endswith(b"\r\n\r\n"), "HEAD response has bytes after the headers: %r" % raw[-60:])
    expect(S.srv.get(blob_path("f" * 64), S.viewer), 404, "not_found", what="blob of unknown id")
    expect(S.srv.get(blob_path("nothex"), S.viewer), (400, 404), what="blob of malformed id")


@S.case
def repush_is_idempotent():
    r = expect(S.srv.push(S.unsigned, S.op), 200, what="re-push same bytes")
    check(r.json["id"] == S.p1["id"], "re-push gave id %s, first push %s" % (r.json["id"], S.p1["id"]))
    # Pushing the server-signed blob itself is the same package too.
    r = expect(S.srv.push(S.blob1, S.op), 200, what="push the served blob")
    check(r.json["id"] == S.p1["id"], "pushing the served blob gave id %s" % r.json["id"])
    n = S.psql(S.srv.db_url, "SELECT count(*) FROM packages")
    check(n == "2", "packages rows %s after re-pushes, expected 2" % n)


@S.case
def conflicting_package_is_409_with_existing():
    d = S.tmpdir("pkgs")
    # Same model+version, overlapping hardware, different bytes (other creation time).
    other = S.pack(os.path.join(d, "other-created.mfpkg"), version="1.0.0", hardware="x86-cpu",
                   created="2026-11-02T09:00:00Z")
    r = expect(S.srv.push(other, S.op), 409, "conflict", what="same model+version+hw, other bytes")
    check(r.json.get("existing") == S.p1["id"], "409 existing %r, expected %s" % (r.json.get("existing"), S.p1["id"]))
    # Same again with another model file.
    other2 = S.pack(os.path.join(d, "other-model.mfpkg"), version="1.0.0", hardware="rpi4,jetson-orin",
                    model="digits-int8.onnx")
    r = expect(S.srv.push(other2, S.op), 409, "conflict", what="other model file")
    check(r.json.get("existing") == S.p1["id"], "409 existing %r" % r.json.get("existing"))
    # A disjoint hardware class for the same version is a new variant.
    variant = S.pack(os.path.join(d, "variant.mfpkg"), version="1.0.0", hardware="jetson-orin",
                     model="digits-int8.onnx")
    r = expect(S.srv.push(variant, S.op), 201, what="same version, disjoint hardware")
    mv = expect(S.srv.get("/models/digits/versions/1.0.0", S.viewer), 200).json
    check(len(mv["variants"]) == 2, "1.0.0 should have 2 variants now: %r" % [v["id"] for v in mv["variants"]])
    n = S.psql(S.srv.db_url, "SELECT count(*) FROM packages")
    check(n == "3", "packages rows %s, expected 3 (the 409s stored nothing)" % n)


@S.case
def server_log_has_no_secrets():
    text = S.srv.log_text()
    for t in (S.admin, S.op, S.viewer):
        check(t not in text, "a token appears in the server log")


S.run()
