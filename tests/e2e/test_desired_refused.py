"""e2e 2 — replayed and forged desired states, published retained on the
device's topic of a real broker: an old seq, a stranger's signature, another
device's message, a flipped byte, a message over 64 KiB. Each gives one
"desired_refused" event with its reason; the retained message the agent
already applied, published again, gives none; `current` never moves."""

import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agentharness import AgentSuite, check, trail  # noqa: E402

S = AgentSuite("e2e_desired_refused")


def current_is_fp32():
    st = S.ag.status()
    check(S.ag.current(st) == ("1.0.0", S.packages["fp32"]["id"], True) and st["desired_seq"] == 5
          and st["op"] is None, "status --json changed: %s" % st)
    s = S.w.last_state()
    check(s["models"][0]["version"] == "1.0.0" and s["desired_seq"] == 5, "state changed: %s" % s)


@S.case
def setup():
    S.setup_server()
    S.push_fixtures(("fp32", "int8"))
    S.dev = S.device_id("forged")
    S.stranger_key, _ = S.keygen(os.path.join(S.tmpdir("keys"), "stranger"))
    S.w = S.watch(S.dev)
    S.ag = S.agent(S.dev, credential_file=S.enroll(S.dev)).start()
    S.good = S.desired(S.dev, 5, ["fp32"])
    S.publish(S.dev, S.good)
    e = S.w.wait_event("activated", 60)
    check(trail(S.w.events()) == "desired_accepted activated", "events: %s" % trail(S.w.events()))
    S.ag.wait_idle()
    S.w.wait_idle_state(e["msg"])
    current_is_fp32()


def refused(msg, reason):
    """Publishes msg retained; the next event must be desired_refused:reason."""
    before = S.w.max_msg()
    S.publish(S.dev, msg)
    e = S.w.wait_event("desired_refused", 20, after=before)
    check(trail(S.w.events(), before) == "desired_refused:" + reason,
          "want desired_refused:%s, got %s" % (reason, trail(S.w.events(), before)))
    check(e.get("detail"), "desired_refused without a detail: %s" % e)
    check("model" not in e and "desired_seq" not in e, "a refused desired state named things: %s" % e)
    current_is_fp32()
    return e


@S.case
def old_seq_is_stale():
    refused(S.desired(S.dev, 4, ["int8"]), "stale")
    refused(S.desired(S.dev, 5, ["int8"]), "stale")  # same seq, other content


@S.case
def stranger_key_is_unknown():
    refused(S.desired(S.dev, 6, ["int8"], key=S.stranger_key), "unknown_key")


@S.case
def other_device_is_wrong_target():
    refused(S.desired(S.dev + "-other", 7, ["int8"]), "wrong_target")


@S.case
def flipped_byte_is_bad_signature():
    msg = bytearray(S.desired(S.dev, 8, ["int8"]))
    i = msg.index(b'"seq":8')
    msg[i + 6] = ord("9")
    refused(bytes(msg), "bad_signature")
    # a flipped bit in the signature itself
    msg = bytearray(S.desired(S.dev, 8, ["int8"]))
    line2 = msg.index(b"\n") + 1
    sig = msg.index(b" ", msg.index(b" ", line2) + 1) + 5  # inside the base64 signature
    msg[sig] = ord("A") if msg[sig] != ord("A") else ord("B")
    refused(bytes(msg), "bad_signature")


@S.case
def over_64k_is_too_large():
    msg = S.desired(S.dev, 9, ["int8"])
    e = refused(msg[:-1] + b" " * (64 * 1024 + 1 - len(msg)) + msg[-1:], "too_large")
    check("65536" in e["detail"] or "64" in e["detail"], "too_large detail: %s" % e["detail"])


@S.case
def republished_applied_message_is_quiet():
    before = S.w.max_msg()
    S.publish(S.dev, S.good)
    time.sleep(1.5)
    check(S.w.max_msg() == before, "re-publishing the applied message produced: %s"
          % trail(S.w.events(), before))
    # the agent did get it: a marker published next is the very next event
    refused(S.desired(S.dev, 3, ["int8"]), "stale")
    # a reconnect delivers the retained (applied) message again: still quiet
    S.publish(S.dev, S.good)
    time.sleep(0.5)
    rc = S.ag.stop()
    check(rc == 0, "agent exited %d" % rc)
    before = S.w.max_msg()
    S.ag.start()
    S.w.wait(lambda w: sum(m["payload"] == "1" for m in w.snapshot("online")) >= 2, 20, "online again")
    time.sleep(1.5)
    check(S.w.max_msg() == before, "the retained applied message on reconnect produced: %s"
          % trail(S.w.events(), before))
    current_is_fp32()
    check(S.ag.log_count(r"download done") == 1, "more than one download")
    S.w.no_errors()
    check(S.ag.stop() == 0, "agent exit status")
    S.clear_retained(S.dev)


S.run()
