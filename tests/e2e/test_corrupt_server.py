"""e2e 5 — a server that serves the wrong bytes. server_url points at a small
Python HTTP server: for the package id of a real (server-signed) package it
serves those bytes with one flipped, so their BLAKE2b-256 is not the id:
"download_failed" reason hash_mismatch, nothing activated. Then a package
signed by a key the device does not trust, under an id that is its hash:
"install_failed" reason unknown_key, nothing activated."""

import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agentharness import (FAKE_RUNNERS, FIXTURES, MODELS, AgentSuite, BlobServer, check,  # noqa: E402
                          trail)
from mfharness import blake2b_hex  # noqa: E402

S = AgentSuite("e2e_corrupt_server", need_opencv=False)


def nothing_activated(ag, w, e):
    st = ag.wait_idle()
    check(st["models"] == [], "status after a refusal: %s" % st)
    s = w.wait_idle_state(e["msg"])
    check(s["models"] == [], "state after a refusal: %s" % s)
    check(not os.path.exists(os.path.join(ag.config["state_dir"], "models", "digits", "current")),
          "a current link exists")
    check(not w.reports(), "a report was sent for a package that never ran")


@S.case
def setup():
    S.setup_server()
    S.push_fixtures(("fp32",))
    S.dev = S.device_id("corrupt")
    cred = S.enroll(S.dev)
    good = S.blob("fp32")
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x01
    S.fp32_id = S.packages["fp32"]["id"]
    check(blake2b_hex(bytes(bad)) != S.fp32_id, "the flipped copy hashes to the id")
    stranger_key, _ = S.keygen(os.path.join(S.tmpdir("keys"), "stranger"))
    spath = S.pack_model("stranger", "1.1.0", os.path.join(FIXTURES, MODELS["int8"][1]), key=stranger_key)
    with open(spath, "rb") as f:
        S.stranger = f.read()
    S.stranger_id = blake2b_hex(S.stranger)
    S.fake = BlobServer(S, {S.fp32_id: bytes(bad), S.stranger_id: S.stranger})
    S.w = S.watch(S.dev)
    S.ag = S.agent(S.dev, server_url=S.fake.url, credential_file=cred,
                   runners="onnx=%s/good.sh" % FAKE_RUNNERS).start()
    S.w.wait(lambda w: w.last_state(), 20, "the first state")


@S.case
def wrong_bytes_hash_mismatch():
    S.publish(S.dev, S.desired(S.dev, 1, ["fp32"]))
    e = S.w.wait_event("download_failed", 30)
    check(trail(S.w.events()) == "desired_accepted download_failed:hash_mismatch",
          "events: %s" % trail(S.w.events()))
    check(e["package"] == S.fp32_id and e["version"] == "1.0.0", "event: %s" % e)
    nothing_activated(S.ag, S.w, e)
    gets = [r for r in S.fake.requests if r[0].endswith("/blob")]
    check(len(gets) == 2, "want 2 blob GETs (a mismatch is fetched once more from scratch), got %s" % gets)
    check(all(r[1] is None for r in gets), "a mismatched .part was resumed: %s" % gets)
    downloads = os.path.join(S.ag.config["state_dir"], "downloads")
    check(os.listdir(downloads) == [], "wrong bytes left in downloads/: %s" % os.listdir(downloads))


@S.case
def stranger_signed_unknown_key():
    before = S.w.max_msg()
    S.publish(S.dev, S.desired(S.dev, 2, [("digits", "1.1.0", S.stranger_id, len(S.stranger))]))
    e = S.w.wait_event("install_failed", 30, after=before)
    check(trail(S.w.events(), before) == "desired_accepted install_failed:unknown_key",
          "events: %s" % trail(S.w.events(), before))
    check(e["package"] == S.stranger_id, "event: %s" % e)
    nothing_activated(S.ag, S.w, e)
    mdir = os.path.join(S.ag.config["state_dir"], "models")
    left = [os.path.join(dp, f) for dp, _, fs in os.walk(mdir) for f in fs]
    check(left == [], "files left under models/ by a refused package: %s" % left)
    check(S.ag.stop() == 0, "agent exit status")
    S.w.no_errors()
    S.clear_retained(S.dev)


S.run()
