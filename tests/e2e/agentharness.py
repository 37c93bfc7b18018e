"""agentharness.py — helpers for the agent's end-to-end tests (stdlib only).

Builds on tests/integration/mfharness.py (imported from there, not copied):
every script runs as `python3 SCRIPT SERVICES_DIR BUILD_DIR`, with the
`mf_services` fixture's PostgreSQL and mosquitto described by
SERVICES_DIR/services.env. What this file adds:

  AgentSuite   a Suite that also knows the agent, the OpenCV runner, the fake
               runners and mf-desired-sign; makes keys, packs the fixture
               models (fp32 1.0.0, int8 1.1.0, int2 1.2.0), pushes them to a
               real modelfleet-server, enrolls devices, signs and publishes
               desired states. Exits 77 (CTest: skipped) with a message when
               a binary a script needs is not built.
  Agent        one `modelfleet-agent run` process: config file, log, SIGTERM
               / SIGKILL, `status --json`, CPU time.
  Broker       (from mfharness) a private mosquitto on its own loopback port (stop/start on
               the same port), for tests that take the broker away.
  Watch        a `mosquitto_sub -F %j` on a device's state/event/report/online
               topics, every message parsed and checked against the field
               tables of docs/protocol.md.
  Proxy        a loopback HTTP proxy in front of the server that logs every
               request, counts the body bytes it forwards and can cut blob
               downloads at given absolute offsets.
  BlobServer   a tiny Range-capable HTTP server serving chosen bytes under
               chosen package ids (to play a corrupt server).
"""

import atexit
import functools
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import mfharness  # noqa: E402
from mfharness import Broker, Failure, check, free_port, run, terminate, wait_for  # noqa: E402,F401

SOURCE_DIR = mfharness.SOURCE_DIR
FIXTURES = mfharness.FIXTURES
FAKE_RUNNERS = os.path.join(SOURCE_DIR, "tests", "unit", "fake_runners")
SKIP = 77  # SKIP_RETURN_CODE in tests/e2e/CMakeLists.txt

# fixture model -> version (tests/fixtures/models; the int2 one is over-quantized)
MODELS = {"fp32": ("1.0.0", "digits-fp32.onnx"),
          "int8": ("1.1.0", "digits-int8.onnx"),
          "int2": ("1.2.0", "digits-int2.onnx")}

_live = []  # every process started here, killed at exit if still running


def _kill_live():
    for p in _live:
        if p.poll() is None:
            p.kill()
            p.wait()


def log(msg):
    print("  . " + msg, flush=True)


def spawn(argv, **kw):
    p = subprocess.Popen(argv, **kw)
    _live.append(p)
    return p


def cpu_seconds(pid):
    """utime + stime of a process (all its threads), in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------
# The suite
# ---------------------------------------------------------------------------

class AgentSuite(mfharness.Suite):
    def __init__(self, name, need_opencv=True):
        super().__init__(name)
        atexit.register(_kill_live)
        b = self.build_dir
        self.agent_bin = os.path.join(b, "agent", "modelfleet-agent")
        self.sign_bin = os.path.join(b, "tests", "unit", "mf-desired-sign")
        self.opencv = os.path.join(b, "runners", "opencv", "modelfleet-runner-opencv")
        self.mqtt_port = int(self.env["MF_MQTT_PORT"])
        for exe in (self.agent_bin, self.sign_bin):
            if not os.access(exe, os.X_OK):
                self.skip("%s is not built" % exe)
        for exe in ("mosquitto_sub", "mosquitto_pub"):
            if not shutil.which(exe):
                self.skip("%s is not installed (package mosquitto-clients)" % exe)
        if need_opencv and not os.access(self.opencv, os.X_OK):
            self.skip("the OpenCV runner is not built (%s)" % self.opencv)
        self.packages = {}  # tag -> {"path", "id", "size", "version"}
        self.watches = []
        self.agents = []
        self.brokers = []
        self.closers = []
        self.ndev = 0
        self.last_credential = None

    def case(self, fn):
        """As Suite.case; a failing case also prints the agents' log tails."""
        @functools.wraps(fn)
        def wrapped():
            try:
                fn()
            except Exception:
                for a in self.agents:
                    print(a.tail(), flush=True)
                raise
        return super().case(wrapped)

    def skip(self, why):
        print("SKIP %s: %s" % (self.name, why), flush=True)
        shutil.rmtree(self.work, ignore_errors=True)
        os._exit(SKIP)

    def cleanup(self, check_exit=False):
        # the agents first (they talk to the server and the brokers)
        for a in getattr(self, "agents", []):
            a.kill()
        for w in getattr(self, "watches", []):
            w.close()
        for c in getattr(self, "closers", []):
            c.close()
        for b in getattr(self, "brokers", []):
            b.stop()
        _kill_live()
        return super().cleanup(check_exit)

    # --- the server side ------------------------------------------------------
    def setup_server(self):
        """A server with its signing key, an operator and an enroll token, and
        a publisher key (S.srv, S.op, S.enroll, S.pub_key, S.pub_pub)."""
        self.srv = self.server().start()
        self.op = self.srv.token("operator", "e2e")
        self.enroll_token = self.srv.token("enroll", "e2e-enroll", max_uses=50)
        self.pub_key, self.pub_pub = self.keygen(os.path.join(self.tmpdir("keys"), "publisher"))
        return self.srv

    def pack_model(self, tag, version, model_path, key=None, hardware="rpi5"):
        out = os.path.join(self.tmpdir("pkgs"), "%s.mfpkg" % tag)
        argv = [self.cli_bin, "pack", "--name", "digits", "--version", version,
                "--hardware", hardware, "--runtime", "onnx", "--model", model_path,
                "--eval-inputs", os.path.join(FIXTURES, "eval-inputs.npy"),
                "--eval-labels", os.path.join(FIXTURES, "eval-labels.npy"),
                "--min-accuracy", "0.95", "--max-accuracy-drop", "0.01",
                "--created", "2026-11-01T09:00:00Z", "--out", out]
        key = key if key is not None else self.pub_key
        if key:
            argv += ["--key", key]
        run(argv)
        return out

    def push_package(self, tag, path):
        """Pushes a package file; records and returns {"id","size","version","path"}."""
        r = self.srv.push(path, self.op)
        check(r.status in (200, 201), "push %s: %s" % (tag, r.brief()))
        j = r.json
        check(re.fullmatch(r"[0-9a-f]{64}", j.get("id", "")) and j.get("size", 0) > 0,
              "push %s: no id/size in %s" % (tag, r.brief()))
        self.packages[tag] = {"id": j["id"], "size": j["size"], "version": j["version"], "path": path}
        return self.packages[tag]

    def push_fixtures(self, tags=("fp32", "int8", "int2")):
        for tag in tags:
            version, fname = MODELS[tag]
            self.push_package(tag, self.pack_model(tag, version, os.path.join(FIXTURES, fname)))

    def blob(self, tag):
        """The bytes the server serves for a pushed package (server-signed)."""
        p = self.packages[tag]
        r = self.srv.get("/packages/%s/blob" % p["id"], token=self.last_credential or self.op)
        check(r.status == 200 and mfharness.blake2b_hex(r.body) == p["id"],
              "blob %s: %s" % (tag, r.status))
        return r.body

    def enroll(self, device_id):
        """Enrolls a device; returns the path of a 0600 credential file."""
        r = self.srv.req("POST", "/devices/enroll", token=self.enroll_token,
                         body={"device_id": device_id, "hw_class": "rpi5", "runtimes": ["onnx"],
                               "agent_version": "0.4.0"})
        check(r.status == 201, "enroll %s: %s" % (device_id, r.brief()))
        cred = r.json["credential"]
        path = os.path.join(self.tmpdir("creds"), device_id + ".cred")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(cred + "\n")
        self.last_credential = cred
        return path

    def device_id(self, tag):
        """A device id unique to this run (the shared broker keeps retained
        messages for the whole CTest run)."""
        self.ndev += 1
        return "e2e-%s-%d-%d" % (tag, os.getpid(), self.ndev)

    # --- desired states ---------------------------------------------------------
    def desired(self, device, seq, models, key=None, rollout=None):
        """A signed desired-state message (bytes). models: list of package
        tags, or of (name, version, id, size) tuples."""
        argv = [self.sign_bin, "--key", key or self.srv.signing_key, "--device", device,
                "--seq", str(seq)]
        if rollout:
            argv += ["--rollout", str(rollout)]
        for m in models:
            if isinstance(m, str):
                p = self.packages[m]
                m = ("digits", p["version"], p["id"], p["size"])
            argv.append("%s=%s:%s:%d" % m)
        return run(argv).stdout

    def publish(self, device, msg, port=None, retain=True):
        path = os.path.join(self.tmpdir("msgs"), "desired-%d.msg" % time.monotonic_ns())
        with open(path, "wb") as f:
            f.write(msg)
        argv = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port or self.mqtt_port),
                "-q", "1", "-t", "mf/v1/d/%s/desired" % device, "-f", path]
        if retain:
            argv.insert(1, "-r")
        run(argv, timeout=20)

    def clear_retained(self, device, port=None):
        """Empties this device's retained topics on the broker (best effort)."""
        for kind in ("desired", "state", "online"):
            run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port or self.mqtt_port), "-r", "-n",
                 "-q", "1", "-t", "mf/v1/d/%s/%s" % (device, kind)], check_rc=False, timeout=10)

    def retained(self, device, kind, port=None, timeout=3):
        """The retained payload (str) of a device topic, or None."""
        p = run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port or self.mqtt_port),
                 "-t", "mf/v1/d/%s/%s" % (device, kind), "-C", "1", "-W", str(timeout),
                 "-F", "%j"], check_rc=False, timeout=timeout + 10)
        for line in p.stdout.decode(errors="replace").splitlines():
            try:
                j = json.loads(line)
            except ValueError:
                continue
            if j.get("retain"):
                return j.get("payload")
        return None

    # --- processes ----------------------------------------------------------------
    def agent(self, device, **config):
        a = Agent(self, device, **config)
        self.agents.append(a)
        return a

    def watch(self, device, port=None, session=None):
        w = Watch(self, device, port or self.mqtt_port, session=session)
        self.watches.append(w)
        return w

    def broker(self, tag="broker"):
        b = Broker(self, tag)
        self.brokers.append(b)
        return b


# ---------------------------------------------------------------------------
# The agent
# ---------------------------------------------------------------------------

class Agent:
    def __init__(self, suite, device, **config):
        self.suite = suite
        self.device = device
        self.dir = suite.tmpdir("agent-" + device)
        self.config_path = os.path.join(self.dir, "agent.conf")
        self.log_path = os.path.join(self.dir, "agent.log")
        self.proc = None
        self.nstart = 0
        self.config = {
            "device_id": device,
            "hw_class": "rpi5",
            "runners": "onnx=%s" % suite.opencv,
            "trusted_keys": "%s,%s" % (suite.pub_pub, suite.srv.pubkey),
            "server_url": "http://127.0.0.1:%d" % suite.srv.port,
            "broker": "127.0.0.1:%d" % suite.mqtt_port,
            "state_dir": os.path.join(self.dir, "state"),
            "keepalive": 5,
            "reconnect_min_ms": 200,
            "reconnect_max_ms": 2000,
            "download_backoff_ms": 100,
            "benchmark_warmup": 1,
            "runner_memory": 0,
            "log_level": "info",
        }
        self.config.update(config)
        self.write_config()

    def write_config(self):
        with open(self.config_path, "w") as f:
            f.write("# e2e test %s\n" % self.device)
            for k, v in self.config.items():
                if v is not None:
                    f.write("%s = %s\n" % (k, v))

    def cmd(self, *args, check_rc=True, timeout=30):
        return run([self.suite.agent_bin, "--config", self.config_path] + list(args),
                   check_rc=check_rc, timeout=timeout)

    def start(self):
        check(self.proc is None or self.proc.poll() is not None, "agent %s already runs" % self.device)
        self.nstart += 1
        logf = open(self.log_path, "ab")
        logf.write(b"==== start %d\n" % self.nstart)
        logf.flush()
        self.proc = spawn([self.suite.agent_bin, "--config", self.config_path, "run"],
                          stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
        logf.close()
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10):
        """SIGTERM; returns the exit status (the caller checks it)."""
        check(self.proc is not None, "agent %s not started" % self.device)
        rc = terminate(self.proc, timeout, "agent %s" % self.device)
        self.check_sanitizers()
        return rc

    def check_sanitizers(self):
        """In ASan/UBSan builds: no sanitizer report in the log."""
        m = re.search(r"(ERROR: (Address|Leak)Sanitizer|runtime error:).*", self.log_text())
        check(m is None, "agent %s: sanitizer report: %s\n%s" % (self.device, m and m.group(0), self.tail()))

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def status(self):
        """`status --json`, parsed (works while the daemon runs)."""
        p = self.cmd("status", "--json")
        try:
            return json.loads(p.stdout.decode())
        except ValueError as e:
            raise Failure("status --json is not JSON (%s): %r" % (e, p.stdout[:300]))

    def wait_idle(self, timeout=20):
        """Waits until `status --json` shows no op in flight and the desired
        state done (an event is spooled before the state that follows it is
        saved); returns that status."""
        box = {}

        def idle():
            box["st"] = self.status()
            return box["st"]["op"] is None and box["st"]["desired_done"]
        check(wait_for(idle, timeout, 0.05), "agent %s not idle after %ss: %s"
              % (self.device, timeout, box.get("st")))
        return box["st"]

    def current(self, st=None):
        """(version, package, complete) of digits' current, or None."""
        st = st or self.status()
        for m in st.get("models", []):
            if m["name"] == "digits" and m.get("current"):
                c = m["current"]
                return c["version"], c["package"], c["complete"]
        return None

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_count(self, pattern):
        return len(re.findall(pattern, self.log_text()))

    def wait_log(self, pattern, timeout):
        ok = wait_for(lambda: re.search(pattern, self.log_text()), timeout, 0.05)
        check(ok, "agent %s: no log line matching %r within %ss\n%s"
              % (self.device, pattern, timeout, self.tail()))

    def tail(self, n=40):
        lines = self.log_text().splitlines()
        return "---- agent log %s (last %d lines) ----\n%s\n----" % (
            self.log_path, min(n, len(lines)), "\n".join("  | " + x for x in lines[-n:]))

    def state_file(self):
        with open(os.path.join(self.config["state_dir"], "state.json")) as f:
            return json.load(f)


# ---------------------------------------------------------------------------
# A private broker
# ---------------------------------------------------------------------------

# ---------------------------------------------------------------------------
# Watching a device's topics, checking every message against docs/protocol.md
# ---------------------------------------------------------------------------

# (required keys in order, optional keys) — the order of the doc's tables; a
# key's position is checked against this list with the optional ones in place.
_EVENT_KINDS = {"desired_accepted", "desired_refused", "download_failed", "install_failed",
                "benchmark_failed", "refused", "activated", "rolled_back", "hook_failed",
                "recovered"}
_FIELDS = {
    "state": (["device", "msg", "time", "hw_class", "agent_version", "desired_seq", "runtimes",
               "models", "op", "disk_free", "mem_available", "spool_dropped"], []),
    "state.models": (["name", "version", "package", "previous"], []),
    "state.previous": (["version", "package"], []),
    "state.op": (["kind"], ["model", "version", "phase"]),
    "event": (["device", "msg", "time", "kind"],
              ["origin", "model", "version", "package", "from_version", "desired_seq", "rollout",
               "reason", "detail", "failures"]),
    "failure": (["check", "measured", "limit", "excess", "reason"], []),
    "report": (["device", "msg", "time", "model", "hw_class", "agent_version", "runtime", "run",
                "eval", "model_bytes", "candidate", "gate", "validity"],
               ["desired_seq", "rollout", "incumbent", "paired", "latency_ratio"]),
    "report.runtime": (["name"], ["version"]),
    "report.run": (["warmup", "threads"], []),
    "report.eval": (["hash", "n", "metric"], []),
    "report.model": (["version", "package", "accuracy", "correct", "load_us", "first_us",
                      "latency", "peak_rss_bytes"], []),
    "report.latency": (["count", "mean_us", "stddev_us", "p50_us", "p90_us", "p99_us", "max_us"],
                       []),
    "report.paired": (["both", "only_candidate", "only_incumbent", "neither"], []),
    "report.latency_ratio": ([], ["p50", "p99"]),
    "report.gate": (["pass", "failures"], ["drop", "mcnemar_p"]),
    "report.validity": (["valid", "warnings"], []),
}
_ORDER = {
    "event": ["device", "msg", "time", "kind", "origin", "model", "version", "package",
              "from_version", "desired_seq", "rollout", "reason", "detail", "failures"],
    "report": ["device", "msg", "time", "model", "hw_class", "agent_version", "runtime",
               "desired_seq", "rollout", "run", "eval", "model_bytes", "candidate", "incumbent",
               "paired", "latency_ratio", "gate", "validity"],
    "report.gate": ["pass", "drop", "mcnemar_p", "failures"],
    "state.op": ["kind", "model", "version", "phase"],
}
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def _keys(obj, table, where):
    check(isinstance(obj, dict), "%s: not an object: %r" % (where, obj))
    req, opt = _FIELDS[table]
    keys = list(obj.keys())
    for k in req:
        check(k in obj, "%s: required field %r missing in %s" % (where, k, keys))
    for k in keys:
        check(k in req or k in opt, "%s: unknown field %r" % (where, k))
        check(obj[k] is not None or (table, k) in (("state", "op"), ("state.models", "previous")),
              "%s: field %r is null" % (where, k))
    order = _ORDER.get(table, req + opt)
    pos = [order.index(k) for k in keys]
    check(pos == sorted(pos), "%s: fields out of the documented order: %s" % (where, keys))


def _uint(v, where):
    check(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 2 ** 53,
          "%s: not an integer 0..2^53: %r" % (where, v))


def check_message(kind, device, obj):
    """Field names, order and basic types of a state / event / report
    (docs/protocol.md). Raises Failure."""
    check(obj.get("device") == device, "%s: device %r, topic's %r" % (kind, obj.get("device"), device))
    _uint(obj.get("msg"), kind + ".msg")
    check(isinstance(obj.get("time"), str) and _TIME.fullmatch(obj["time"]), "%s.time %r" % (kind, obj.get("time")))
    if kind == "state":
        _keys(obj, "state", "state")
        for i, m in enumerate(obj["models"]):
            _keys(m, "state.models", "state.models[%d]" % i)
            check(_HEX64.fullmatch(m["package"]), "state.models[%d].package" % i)
            if m["previous"] is not None:
                _keys(m["previous"], "state.previous", "state.models[%d].previous" % i)
        if obj["op"] is not None:
            _keys(obj["op"], "state.op", "state.op")
        for k in ("desired_seq", "disk_free", "mem_available", "spool_dropped"):
            _uint(obj[k], "state." + k)
    elif kind == "event":
        check(obj["msg"] >= 1, "event.msg 0")
        _keys(obj, "event", "event")
        check(obj["kind"] in _EVENT_KINDS, "event.kind %r" % obj["kind"])
        for i, f in enumerate(obj.get("failures", [])):
            _keys(f, "failure", "event.failures[%d]" % i)
    elif kind == "report":
        _keys(obj, "report", "report")
        _keys(obj["runtime"], "report.runtime", "report.runtime")
        _keys(obj["run"], "report.run", "report.run")
        _keys(obj["eval"], "report.eval", "report.eval")
        check(_HEX64.fullmatch(obj["eval"]["hash"]), "report.eval.hash")
        for side in ("candidate", "incumbent"):
            if side in obj:
                _keys(obj[side], "report.model", "report." + side)
                _keys(obj[side]["latency"], "report.latency", "report.%s.latency" % side)
                check(0 <= obj[side]["accuracy"] <= 1, "report.%s.accuracy" % side)
        has_inc = "incumbent" in obj
        check(("paired" in obj) == has_inc, "report: paired must come with incumbent, and only then")
        check(("latency_ratio" in obj) == has_inc, "report: latency_ratio only with incumbent")
        if has_inc:
            _keys(obj["paired"], "report.paired", "report.paired")
            _keys(obj["latency_ratio"], "report.latency_ratio", "report.latency_ratio")
        _keys(obj["gate"], "report.gate", "report.gate")
        check(("drop" in obj["gate"]) == has_inc, "report.gate.drop only with incumbent")
        for i, f in enumerate(obj["gate"]["failures"]):
            _keys(f, "failure", "report.gate.failures[%d]" % i)
        _keys(obj["validity"], "report.validity", "report.validity")


class Watch:
    """mosquitto_sub on mf/v1/d/<device>/{state,event,report,online}. Each
    message: {"kind", "payload" (str), "json" (parsed, for state/event/
    report, already checked), "retain"}. With `session`, a persistent
    session (clean session off, QoS 1) with that client id: messages sent
    while it is disconnected are kept for it by the broker."""

    def __init__(self, suite, device, port, session=None):
        self.device = device
        self.msgs = []
        self.errors = []
        self.cv = threading.Condition()
        argv = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-F", "%j"]
        if session:
            argv += ["-c", "-i", session]
        for kind in ("state", "event", "report", "online"):
            argv += ["-t", "mf/v1/d/%s/%s" % (device, kind)]
        self.probe = "mf-e2e/probe/%s/%d" % (device, os.getpid())
        argv += ["-t", self.probe]
        self.ready = threading.Event()
        self.proc = spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        # subscribed once a probe published to its private topic comes back
        for _ in range(50):
            run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", self.probe,
                 "-m", "probe"], timeout=10)
            if self.ready.wait(0.2):
                break
        check(self.ready.is_set(), "mosquitto_sub on port %d never subscribed" % port)

    def _read(self):
        for line in self.proc.stdout:
            try:
                j = json.loads(line.decode())
                if j["topic"] == self.probe:
                    self.ready.set()
                    continue
                kind = j["topic"].rsplit("/", 1)[1]
                m = {"kind": kind, "payload": j.get("payload", ""), "retain": bool(j.get("retain"))}
                if kind in ("state", "event", "report") and m["payload"]:
                    m["json"] = json.loads(m["payload"])
                    check_message(kind, self.device, m["json"])
            except Exception as e:  # noqa: BLE001 - recorded, asserted by the test
                self.errors.append("%s: %r" % (e, line[:500]))
                continue
            with self.cv:
                self.msgs.append(m)
                self.cv.notify_all()

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()

    def snapshot(self, kind=None):
        with self.cv:
            return [m for m in self.msgs if kind is None or m["kind"] == kind]

    def events(self):
        return [m["json"] for m in self.snapshot("event")]

    def reports(self):
        return [m["json"] for m in self.snapshot("report")]

    def states(self):
        return [m["json"] for m in self.snapshot("state") if "json" in m]

    def last_state(self):
        s = self.states()
        return s[-1] if s else None

    def wait_idle_state(self, after, timeout=20):
        """The newest state, once it has no op and comes after message `after`."""
        return self.wait(lambda w: (lambda s: s if s and s["op"] is None and s["msg"] >= after else None)(
            w.last_state()), timeout, "a state after msg %d with no op" % after)

    def wait(self, pred, timeout, what):
        """Waits until pred(self) is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                v = pred(self)
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cv.wait(min(left, 0.2))
        raise Failure("timed out after %ss waiting for %s; events so far: %s; errors: %s"
                      % (timeout, what, trail(self.events()), self.errors))

    def wait_event(self, kind, timeout, after=0, reason=None):
        """The first event of this kind with msg > after (and this reason)."""
        def find(w):
            for e in w.events():
                if e["msg"] > after and e["kind"] == kind and (reason is None or e.get("reason") == reason):
                    return e
            return None
        return self.wait(find, timeout, "event %s%s (msg > %d)" % (kind, ":" + reason if reason else "", after))

    def no_errors(self):
        check(not self.errors, "messages that fail docs/protocol.md: %s" % self.errors)

    def max_msg(self):
        return max([e["msg"] for e in self.events()] + [r["msg"] for r in self.reports()] + [0])


def trail(events, after=0):
    """'kind:reason kind ...' of events with msg > after, in msg order, deduplicated."""
    seen = {}
    for e in events:
        if e["msg"] > after:
            seen.setdefault(e["msg"], e)
    out = []
    for n in sorted(seen):
        e = seen[n]
        out.append(e["kind"] + (":" + e["reason"] if e.get("reason") else ""))
    return " ".join(out)


# ---------------------------------------------------------------------------
# HTTP: a counting, cutting proxy and a fake blob server
# ---------------------------------------------------------------------------

def _read_head(sock, buf=b""):
    while b"\r\n\r\n" not in buf:
        d = sock.recv(65536)
        if not d:
            return None, buf
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head.decode("latin-1"), rest


def _set_header(head, name, value):
    lines = [x for x in head.split("\r\n") if not x.lower().startswith(name.lower() + ":")]
    lines.append("%s: %s" % (name, value))
    return "\r\n".join(lines)


class Proxy:
    """Loopback HTTP proxy to 127.0.0.1:upstream. One request per client
    connection (it forces `Connection: close` both ways). `requests` lists
    dicts {method, path, range, status, body} (body: bytes forwarded).
    cuts: absolute blob offsets; a blob GET whose body would pass the next
    one not yet used is cut there (the connection closed mid-body).
    rate: bytes/s for blob bodies (0 = as fast as possible); the proxy, not
    the agent's download_rate, makes a download take a known time."""

    def __init__(self, suite, upstream, cuts=(), rate=0):
        self.upstream = upstream
        self.cuts = sorted(cuts)
        self.rate = rate
        self.requests = []
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()
        suite.closers.append(self)

    def close(self):
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def blob_gets(self):
        with self.lock:
            return [r for r in self.requests if r["method"] == "GET" and r["path"].endswith("/blob")]

    def body_bytes(self):
        return sum(r["body"] for r in self.blob_gets())

    def _serve(self, c):
        rec = {"method": "", "path": "", "range": None, "status": None, "body": 0, "cut": None}
        up = None
        try:
            c.settimeout(30)
            head, rest = _read_head(c)
            if head is None:
                return
            first = head.split("\r\n", 1)[0].split(" ")
            rec["method"], rec["path"] = first[0], first[1] if len(first) > 1 else ""
            m = re.search(r"(?im)^range:\s*(.*)$", head)
            rec["range"] = m.group(1).strip() if m else None
            with self.lock:
                self.requests.append(rec)
            up = socket.create_connection(("127.0.0.1", self.upstream), timeout=30)
            up.sendall((_set_header(head, "Connection", "close") + "\r\n\r\n").encode("latin-1") + rest)
            rhead, body = _read_head(up)
            if rhead is None:
                return
            m = re.match(r"HTTP/1\.[01] (\d+)", rhead)
            rec["status"] = int(m.group(1)) if m else None
            start = 0
            m = re.search(r"(?im)^content-range:\s*bytes (\d+)-", rhead)
            if m:
                start = int(m.group(1))
            cut = None
            if rec["method"] == "GET" and rec["path"].endswith("/blob") and rec["status"] in (200, 206):
                with self.lock:
                    for x in self.cuts:
                        if x > start:
                            cut = x
                            self.cuts.remove(x)
                            break
            rec["cut"] = cut
            c.sendall((_set_header(rhead, "Connection", "close") + "\r\n\r\n").encode("latin-1"))
            pos = start
            rate = self.rate if rec["path"].endswith("/blob") else 0
            t0 = time.monotonic()
            while True:
                while body:
                    piece, body = (body[:4096], body[4096:]) if rate else (body, b"")
                    if cut is not None and pos + len(piece) >= cut:
                        piece = piece[:cut - pos]
                        c.sendall(piece)
                        rec["body"] += len(piece)
                        return  # cut: close mid-body
                    if rate:
                        ahead = rec["body"] / rate - (time.monotonic() - t0)
                        if ahead > 0:
                            time.sleep(ahead)
                    c.sendall(piece)
                    rec["body"] += len(piece)
                    pos += len(piece)
                body = up.recv(65536)
                if not body:
                    return
        except OSError:
            return
        finally:
            if up is not None:
                up.close()
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()


class BlobServer:
    """Serves `blobs` ({package id: bytes}) at /api/v1/packages/<id>/blob,
    with Range (bytes=N-); logs (path, range, status) in `requests`."""

    def __init__(self, suite, blobs):
        self.blobs = dict(blobs)
        self.requests = []
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                m = re.fullmatch(r"/api/v1/packages/([0-9a-f]{64})/blob", self.path)
                data = outer.blobs.get(m.group(1)) if m else None
                if data is None:
                    body = b'{"error":"not_found","message":"no such package"}'
                    outer.requests.append((self.path, rng, 404))
                    self.send_response(404)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                start = 0
                rm = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if rm and int(rm.group(1)) < len(data):
                    start = int(rm.group(1))
                status = 206 if start else 200
                outer.requests.append((self.path, rng, status))
                self.send_response(status)
                self.send_header("Content-Type", "application/vnd.modelfleet.package")
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", '"%s"' % m.group(1))
                if start:
                    self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
                self.end_headers()
                self.wfile.write(data[start:])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        suite.closers.append(self)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
