"""fleet.py — a whole fleet on loopback for the rollout end-to-end test (and
the demo): one modelfleet-server with its rollout controller, and several
`modelfleet-agent run` processes in several hardware classes, each with the
real OpenCV runner and a Watch on its topics (stdlib only).

Builds on tests/e2e/agentharness.py (imported, not copied): the AgentSuite
gives the server (mfharness.Server), the agents (agentharness.Agent) and the
watchers (agentharness.Watch); this file adds

  Fleet        the server (controller_interval_ms, a persistent MQTT session
               so a restart loses no telemetry), the devices enrolled in their
               classes and started, packages packed per class with chosen
               manifest thresholds, the /api/v1/rollouts calls, waits with a
               timeout that fail with the evidence (rollout JSON, its devices,
               the server log tail), and what every agent runs.
  Device       one enrolled device: id, class, its Agent and its Watch.
  bucket()     a device's bucket in a rollout, as rollout/rollout.c computes
               it (docs/rollouts.md "Stages and bucketing"), and first_stage()
               the stage that covers it.

Typical use (the suite's cases share one Fleet):

    S = AgentSuite("e2e_rollout")
    F = Fleet(S, {"rpi5": 3, "jetson": 3}).start()
    F.pack_push("int8", "1.1.0", "digits-int8.onnx")
    r = F.start_rollout({"model": "digits", "version": "1.1.0", ...})
    F.wait_status(r["id"], "completed", 120)
    F.wait_versions("1.1.0", F.devices, 60)
"""

import hashlib
import json
import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agentharness  # noqa: E402
from agentharness import FIXTURES, Failure, check, log, run  # noqa: E402

LIVE = ("running", "paused", "watching")
FINAL = ("completed", "failed", "aborted")
BUCKET_DOMAIN = b"modelfleet-bucket-v1\n"


class Stop(Failure):
    """Raised inside a Fleet.wait predicate: fail now, do not keep polling."""


def bucket(device_id, rollout_id):
    """[0, 1): the first 53 bits of BLAKE2b-256("modelfleet-bucket-v1\\n" id
    "\\n" decimal rollout id), over 2^53 (mf_rollout_bucket)."""
    h = hashlib.blake2b(BUCKET_DOMAIN + device_id.encode() + b"\n" + str(int(rollout_id)).encode(),
                        digest_size=32).digest()
    return (int.from_bytes(h[:7], "big") >> 3) / float(1 << 53)


def first_stage(stages, device_ids, rollout_id):
    """{device id: index of the first stage that covers it} for the devices of
    ONE hardware class: stage k covers the buckets below percent/100, topped
    up to min_devices by the lowest buckets (ties by id)."""
    order = sorted(device_ids, key=lambda d: (bucket(d, rollout_id), d))
    out = {}
    for k, st in enumerate(stages):
        cut = st["percent"] / 100.0
        covered = [d for d in order if bucket(d, rollout_id) < cut]
        if len(covered) < st.get("min_devices", 1):
            covered = order[:min(len(order), st.get("min_devices", 1))]
        for d in covered:
            out.setdefault(d, k)
    return out


class Device:
    def __init__(self, fleet, device_id, hw_class, cred, agent, watch):
        self.fleet = fleet
        self.id = device_id
        self.hw_class = hw_class
        self.cred = cred
        self.agent = agent
        self.watch = watch

    def __repr__(self):
        return "%s(%s)" % (self.id, self.hw_class)

    def current(self):
        """(version, package, complete) from `status --json`, or None."""
        return self.agent.current()

    def versions_seen(self):
        """Every version named by an event of this device (from its Watch)."""
        return sorted({e.get("version") for e in self.watch.events() if e.get("version")})


class Fleet:
    """A server and agents in hardware classes; see the module doc."""

    def __init__(self, suite, classes, controller_interval_ms=300, agent_config=None,
                 **server_config):
        self.S = suite
        self.classes = dict(classes)  # hw_class -> how many devices
        self.server_config = {"controller_interval_ms": controller_interval_ms,
                              # a persistent session: what devices send while the server
                              # is down is kept for it by the broker
                              "mqtt_client_id": "mf-e2e-%s-%d" % (suite.name, os.getpid())}
        self.server_config.update(server_config)
        self.agent_config = {"retry_min_s": 1, "retry_max_s": 4}
        self.agent_config.update(agent_config or {})
        self.devices = []
        self.srv = None
        self.last_rid = None  # the last rollout started (for evidence on a failure)

    # --- setting up ---------------------------------------------------------------
    def start(self, timeout=30):
        """Server, tokens, publisher key; every device enrolled, its agent
        started and seen online by the server (GET /devices)."""
        S = self.S
        S.srv = self.srv = S.server("server", **self.server_config).start()
        S.op = self.op = S.srv.token("operator", "e2e-operator")
        self.viewer = S.srv.token("viewer", "e2e-viewer")
        S.enroll_token = S.srv.token("enroll", "e2e-enroll", max_uses=1000)
        S.pub_key, S.pub_pub = S.keygen(os.path.join(S.tmpdir("keys"), "publisher"))
        for cls, n in self.classes.items():
            for _ in range(n):
                self.add_device(cls)
        for d in self.devices:
            d.agent.start()
        self.wait_online(self.devices, timeout)
        return self

    def add_device(self, hw_class, start=False, labels=None):
        """Enrolls a device of this class (a fresh id) with its Agent and Watch."""
        S = self.S
        dev = S.device_id(hw_class)
        body = {"device_id": dev, "hw_class": hw_class, "runtimes": ["onnx"],
                "agent_version": "0.4.0"}
        if labels:
            body["labels"] = labels
        r = S.srv.req("POST", "/devices/enroll", token=S.enroll_token, body=body)
        check(r.status == 201, "enroll %s: %s" % (dev, r.brief()))
        path = os.path.join(S.tmpdir("creds"), dev + ".cred")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(r.json["credential"] + "\n")
        watch = S.watch(dev)
        agent = S.agent(dev, hw_class=hw_class, credential_file=path, **self.agent_config)
        d = Device(self, dev, hw_class, path, agent, watch)
        self.devices.append(d)
        if start:
            agent.start()
        return d

    def of_class(self, hw_class):
        return [d for d in self.devices if d.hw_class == hw_class]

    def device(self, device_id):
        for d in self.devices:
            if d.id == device_id:
                return d
        raise Failure("no device %s in the fleet" % device_id)

    def wait_online(self, devices, timeout):
        """Each device's agent said online "1" and the server shows it online."""
        for d in devices:
            d.watch.wait(lambda w: any(m["payload"] == "1" for m in w.snapshot("online")),
                         timeout, "%s online" % d.id)
        ids = {d.id for d in devices}

        def seen():
            api = self.api_devices()
            return all(i in api and api[i]["online"] for i in ids)
        self.wait(seen, timeout, "the server to show %s online" % sorted(ids))

    # --- packages -------------------------------------------------------------------
    def pack(self, tag, version, model_file, hardware=None, min_accuracy=0.95,
             max_accuracy_drop=0.01):
        """Packs fixture model `model_file` as digits `version` for `hardware`
        (a list of classes; default every class of the fleet) with these
        manifest thresholds (the agent's own gate), signed by the publisher
        key. Returns the file's path."""
        S = self.S
        hw = ",".join(hardware or sorted(self.classes))
        out = os.path.join(S.tmpdir("pkgs"), "%s.mfpkg" % tag)
        run([S.cli_bin, "pack", "--name", "digits", "--version", version, "--hardware", hw,
             "--runtime", "onnx", "--model", os.path.join(FIXTURES, model_file),
             "--eval-inputs", os.path.join(FIXTURES, "eval-inputs.npy"),
             "--eval-labels", os.path.join(FIXTURES, "eval-labels.npy"),
             "--min-accuracy", str(min_accuracy), "--max-accuracy-drop", str(max_accuracy_drop),
             "--created", "2026-11-01T09:00:00Z", "--key", S.pub_key, "--out", out])
        return out

    def pack_push(self, tag, version, model_file, **kw):
        """pack + push; returns S.packages[tag] ({"id","size","version","path"})."""
        return self.S.push_package(tag, self.pack(tag, version, model_file, **kw))

    # --- the API ----------------------------------------------------------------------
    def api(self, method, path, body=None, token=None, expect=200):
        r = self.srv.req(method, path, body=body, token=token or self.op)
        statuses = expect if isinstance(expect, (tuple, list)) else (expect,)
        check(r.status in statuses, "%s %s: expected %s, got %s"
              % (method, path, "/".join(map(str, statuses)), r.brief()))
        return r.json if r.body else None

    def _pages(self, path, key):
        out, after = [], None
        for _ in range(1000):
            sep = "&" if "?" in path else "?"
            p = path + ("%safter=%s" % (sep, agentharness.mfharness.quote(str(after))) if after else "")
            j = self.api("GET", p, token=self.viewer)
            out += j[key]
            after = j.get("next")
            if not after:
                return out
        raise Failure("%s: more than 1000 pages" % path)

    def api_devices(self):
        """GET /devices, every page: {id: device object} (this fleet's devices)."""
        ids = {d.id for d in self.devices}
        return {x["id"]: x for x in self._pages("/devices?limit=100", "devices") if x["id"] in ids}

    def api_version(self, dev_obj, model="digits"):
        for m in dev_obj.get("models") or []:
            if m["name"] == model:
                return m["version"]
        return None

    def start_rollout(self, plan, expect=201):
        j = self.api("POST", "/rollouts", body=plan, expect=expect)
        if isinstance(j, dict) and isinstance(j.get("id"), int):
            self.last_rid = j["id"]
        return j

    def rollout(self, rid):
        return self.api("GET", "/rollouts/%d" % rid, token=self.viewer)

    def rollout_devices(self, rid, **query):
        q = "&".join("%s=%s" % kv for kv in sorted(query.items()))
        return self._pages("/rollouts/%d/devices?limit=100%s" % (rid, "&" + q if q else ""),
                           "devices")

    def next_rollout_id(self):
        """The id the next POST /rollouts is expected to get (ids grow by one
        on a fresh database; the caller checks it after the fact)."""
        j = self.api("GET", "/rollouts?limit=1", token=self.viewer)
        return (j["rollouts"][0]["id"] + 1) if j["rollouts"] else 1

    # --- waiting ------------------------------------------------------------------------
    def wait(self, fn, timeout, what, rid=None, interval=0.3):
        """Polls fn() until truthy (returns it); on timeout a Failure with the
        evidence: what fn last said, the rollout and its devices (when rid),
        the fleet's versions and the server log tail."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                v = fn()
            except Stop:
                raise
            except (Failure, OSError) as e:  # e.g. refused while the server restarts: retry
                v, last = None, str(e)
            if v:
                return v
            if time.monotonic() >= deadline:
                break
            time.sleep(interval)
        raise Failure("timed out after %ss waiting for %s%s\n%s"
                      % (timeout, what, " (last error: %s)" % last if last else "",
                         self.evidence(rid)))

    def wait_status(self, rid, statuses, timeout):
        """Waits until the rollout's status is one of `statuses`; a final
        status that is not wanted fails at once. Returns the rollout."""
        statuses = (statuses,) if isinstance(statuses, str) else tuple(statuses)
        box = {}

        def done():
            r = box["r"] = self.rollout(rid)
            if r["status"] in FINAL and r["status"] not in statuses:
                raise Stop("rollout %d ended %s (wanted %s): %s\n%s"
                              % (rid, r["status"], "/".join(statuses), r.get("reason"),
                                 self.evidence(rid)))
            return r if r["status"] in statuses else None
        return self.wait(done, timeout, "rollout %d to be %s" % (rid, "/".join(statuses)), rid)

    def wait_versions(self, version, devices, timeout, rid=None):
        """Every device's agent runs `version` (complete, nothing in flight)
        and GET /devices says so too."""
        def ok():
            bad = []
            api = self.api_devices()
            for d in devices:
                st = d.agent.status()
                cur = d.agent.current(st)
                if not (cur and cur[0] == version and cur[2] and st["op"] is None
                        and st["desired_done"]):
                    bad.append("%s agent %s" % (d.id, cur and cur[0]))
                elif self.api_version(api.get(d.id, {})) != version:
                    bad.append("%s api %s" % (d.id, self.api_version(api.get(d.id, {}))))
            box["bad"] = bad
            return not bad
        box = {}
        try:
            return self.wait(ok, timeout, "digits %s on %s" % (version, [d.id for d in devices]), rid)
        except Failure as e:
            raise Failure("%s\nnot there: %s" % (e, box.get("bad")))

    # --- evidence -------------------------------------------------------------------------
    def versions(self):
        """{device id: (agent's current version, the server's version)}."""
        api = {}
        try:
            api = self.api_devices()
        except (Failure, OSError):
            pass
        out = {}
        for d in self.devices:
            try:
                cur = d.agent.current()
            except (Failure, OSError, ValueError):
                cur = None
            out[d.id] = (cur and cur[0], self.api_version(api.get(d.id, {})))
        return out

    def evidence(self, rid=None, server_lines=40):
        parts = []
        if rid is not None:
            for path in ("/rollouts/%d" % rid, "/rollouts/%d/devices?limit=100" % rid):
                try:
                    r = self.srv.req("GET", path, token=self.viewer, timeout=5)
                    body = json.dumps(r.json, indent=1) if r.status == 200 else r.brief()
                except (OSError, Failure) as e:
                    body = "(%s)" % e
                parts.append("---- GET %s ----\n%s" % (path, body))
        vs = self.versions()
        parts.append("---- versions (agent, server) ----\n%s"
                     % "\n".join("  %s %s: %s" % (d.id, d.hw_class, vs[d.id]) for d in self.devices))
        parts.append("---- events ----\n%s"
                     % "\n".join("  %s: %s" % (d.id, agentharness.trail(d.watch.events()))
                                 for d in self.devices))
        lines = self.srv.log_text().splitlines() if self.srv else []
        parts.append("---- server log (last %d of %d lines) ----\n%s"
                     % (min(server_lines, len(lines)), len(lines),
                        "\n".join("  | " + x for x in lines[-server_lines:])))
        return "\n".join(parts)

    def log_rollout(self, rid):
        """One line per stage and class: the verdict and the reason (for the log)."""
        r = self.rollout(rid)
        log("rollout %d %s %s: %s" % (rid, r["version"], r["status"], r.get("reason")))
        for st in r.get("stages", []):
            for c in st.get("classes", []):
                log("  stage %d %s %s: %s" % (st["stage"], c["hw_class"], c["verdict"], c["reason"]))
        return r

    # --- teardown -------------------------------------------------------------------------
    def close(self):
        """Stops every agent (SIGTERM) and the server (which must exit 0),
        clears the devices' retained topics and the server's persistent MQTT
        session on the shared broker. Returns {device id: agent exit status}
        of the agents that were running."""
        rcs = {}
        for d in self.devices:
            if d.agent.alive():
                rcs[d.id] = d.agent.stop()
        if self.srv is not None and self.srv.alive():
            self.srv.stop()
        for d in self.devices:
            self.S.clear_retained(d.id)
        # a clean-session connect with the server's client id drops its session
        run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.S.mqtt_port), "-i",
             self.server_config["mqtt_client_id"], "-t", "mf-e2e/none", "-W", "1"],
            check_rc=False, timeout=10)
        return rcs
