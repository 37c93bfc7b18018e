"""mfharness.py — shared helpers for the integration tests (stdlib only).

Every test script is run as `python3 SCRIPT SERVICES_DIR BUILD_DIR`; the
services (PostgreSQL, mosquitto) were started by `services.sh start
SERVICES_DIR` and are described by SERVICES_DIR/services.env. A script builds
a `Suite`, registers cases with `@suite.case`, and calls `suite.run()`, which
prints one line per case and exits non-zero if any failed.

`Server` runs a real `modelfleet-server` on a free port against a fresh
database and a fresh data dir, all inside the suite's work dir (kept on
failure, removed on success). Requests go through http.client (`Server.req`)
or a raw socket (`Server.raw`) when a test needs control over the bytes.
"""

import atexit
import hashlib
import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import traceback
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.dirname(os.path.dirname(HERE))
FIXTURES = os.path.join(SOURCE_DIR, "tests", "fixtures", "models")
SERVICES_SH = os.path.join(HERE, "services.sh")

_live_servers = []


class Failure(AssertionError):
    pass


def check(cond, msg):
    """Assert with a message that says what was expected."""
    if not cond:
        raise Failure(msg)


def blake2b_hex(data):
    return hashlib.blake2b(data, digest_size=32).hexdigest()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run(argv, check_rc=True, timeout=60, **kw):
    """Run a command, capture output; raise Failure with both streams on a bad exit."""
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, **kw)
    if check_rc and p.returncode != 0:
        raise Failure(
            "command failed (exit %d): %s\nstdout: %s\nstderr: %s"
            % (p.returncode, " ".join(map(str, argv)), p.stdout.decode(errors="replace"),
               p.stderr.decode(errors="replace")))
    return p


def load_env(services_dir):
    env = {}
    path = os.path.join(services_dir, "services.env")
    if not os.path.exists(path):
        raise SystemExit("%s missing: services not started (services.sh start %s)"
                         % (path, services_dir))
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            k, v = line.split("=", 1)
            env[k] = v
    return env


class Response:
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name, value)
        self.body = body
        self._json = None

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    @property
    def json(self):
        if self._json is None:
            try:
                self._json = json.loads(self.body.decode())
            except (ValueError, UnicodeDecodeError) as e:
                raise Failure("response body is not JSON (%s): %r" % (e, self.body[:300]))
        return self._json

    def brief(self):
        body = self.body[:400]
        try:
            body = body.decode()
        except UnicodeDecodeError:
            body = repr(body)
        return "%d %s %s" % (self.status, self.reason, body)


class Suite:
    """Test cases of one script; state shared between cases lives in attributes."""

    def __init__(self, name):
        if len(sys.argv) != 3:
            raise SystemExit("usage: %s SERVICES_DIR BUILD_DIR" % sys.argv[0])
        self.name = name
        self.services_dir = os.path.abspath(sys.argv[1])
        self.build_dir = os.path.abspath(sys.argv[2])
        self.env = load_env(self.services_dir)
        self.server_bin = os.path.join(self.build_dir, "server", "modelfleet-server")
        self.cli_bin = os.path.join(self.build_dir, "cli", "modelfleet")
        for b in (self.server_bin, self.cli_bin):
            if not os.access(b, os.X_OK):
                raise SystemExit("%s: missing binary %s (build first)" % (name, b))
        self.work = os.path.join(self.build_dir, "tests", "integration", "work", name)
        shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.work)
        self.cases = []
        self.servers = []
        self.retained_topics = set()  # topics with a retained message published here
        self._ndb = 0
        atexit.register(self.cleanup)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))

    # --- services ---------------------------------------------------------
    def services(self, *args):
        return run(["bash", SERVICES_SH, args[0], self.services_dir] + list(args[1:]),
                   timeout=120).stdout.decode().strip()

    def createdb(self, tag="db"):
        self._ndb += 1
        name = re.sub(r"[^a-z0-9_]", "_", ("%s_%s_%d_%d" % (self.name, tag, os.getpid(), self._ndb)).lower())
        return self.services("createdb", name[:63])

    def psql(self, url, sql, check_rc=True):
        """Run SQL with psql; returns stdout (unaligned, tuples only, '|' separated)."""
        p = run(["psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-tA", "-c", sql], check_rc=check_rc)
        return p.stdout.decode().strip() if check_rc else p

    # --- MQTT (the fixture's mosquitto) -----------------------------------
    def mqtt_pub(self, topic, payload, retain=False, client_id=None):
        """Publishes with QoS 1: a dict or list as compact JSON, text or bytes
        as they are, an empty payload as a null message (clears a retained
        one). Retained topics are remembered for clear_retained_topics()."""
        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload, separators=(",", ":"))
        if isinstance(payload, str):
            payload = payload.encode()
        argv = ["mosquitto_pub", "-h", self.env["MF_MQTT_HOST"], "-p", self.env["MF_MQTT_PORT"],
                "-q", "1", "-t", topic, "-s" if payload else "-n"]
        if client_id:
            argv += ["-i", client_id]
        if retain:
            argv.append("-r")
            self.retained_topics.add(topic)
        run(argv, input=payload, timeout=20)

    def clear_retained_topics(self):
        """Clears every retained message this suite published (the broker is
        shared by the whole CTest run)."""
        for t in sorted(self.retained_topics):
            self.mqtt_pub(t, b"", retain=True)
        self.retained_topics.clear()

    # --- files ------------------------------------------------------------
    def tmpdir(self, tag):
        d = os.path.join(self.work, tag)
        os.makedirs(d, exist_ok=True)
        return d

    def keygen(self, prefix):
        run([self.cli_bin, "keygen", "--out", prefix])
        return prefix + ".key", prefix + ".pub"

    def pack(self, out, name="digits", version="1.0.0", hardware="rpi4,x86-cpu",
             model="digits-fp32.onnx", created="2026-11-01T09:00:00Z", key=None, extra=()):
        argv = [self.cli_bin, "pack", "--name", name, "--version", version, "--hardware", hardware,
                "--runtime", "onnx", "--model", os.path.join(FIXTURES, model),
                "--eval-inputs", os.path.join(FIXTURES, "eval-inputs.npy"),
                "--eval-labels", os.path.join(FIXTURES, "eval-labels.npy"),
                "--min-accuracy", "0.9", "--created", created, "--out", out] + list(extra)
        if key:
            argv += ["--key", key]
        run(argv)
        return out

    def hostile_gen(self):
        """Path of mf-hostile-gen in the build tree, or None."""
        for rel in ("tests/support/mf-hostile-gen", "tests/unit/mf-hostile-gen"):
            p = os.path.join(self.build_dir, rel)
            if os.access(p, os.X_OK):
                return p
        return None

    # --- servers ----------------------------------------------------------
    def server(self, tag="server", **config):
        s = Server(self, tag, **config)
        self.servers.append(s)
        return s

    # --- running ----------------------------------------------------------
    def start_with_roles(self, **config):
        """A started server with an admin, an operator and a viewer token and a
        packed fixture (S.srv, S.admin, S.op, S.viewer, S.pkg)."""
        self.srv = self.server(**config).start()
        self.admin = self.srv.token("admin", "root")
        self.op = self.srv.token("operator", "ci")
        self.viewer = self.srv.token("viewer", "dash")
        self.pkg = self.pack(os.path.join(self.tmpdir("p"), "d.mfpkg"))

    def case(self, fn):
        self.cases.append(fn)
        return fn

    def run(self):
        failed = 0
        t0 = time.monotonic()
        for fn in self.cases:
            t = time.monotonic()
            name = fn.__name__
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - report every failure the same way
                failed += 1
                print("FAIL %s (%.1fs): %s" % (name, time.monotonic() - t, e), flush=True)
                if not isinstance(e, Failure):
                    traceback.print_exc(file=sys.stdout)
                for s in self.servers:
                    s.note_failure()
                continue
            print("PASS %s (%.1fs)" % (name, time.monotonic() - t), flush=True)
        ok = self.cleanup(check_exit=True) and failed == 0
        print("%s: %d cases, %d failed, %.1fs" % (self.name, len(self.cases), failed,
                                                   time.monotonic() - t0), flush=True)
        if ok:
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            for s in self.servers:
                s.dump_log()
            print("work dir kept: %s" % self.work)
        sys.exit(0 if ok else 1)

    def cleanup(self, check_exit=False):
        ok = True
        for s in self.servers:
            if s.proc is not None and s.proc.poll() is None:
                try:
                    s.stop()
                except Failure as e:
                    print("FAIL server %s shutdown: %s" % (s.tag, e), flush=True)
                    ok = False
        return ok


def terminate(p, timeout, what):
    """SIGTERM to a child process and wait up to `timeout` s for it (killed
    and a Failure after that); returns its exit status."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise Failure("%s did not exit within %ds of SIGTERM" % (what, timeout))
    return p.returncode


class Server:
    """One modelfleet-server with its own database, data dir, key and port."""

    def __init__(self, suite, tag, db_url=None, data_dir=None, signing_key=None, **config):
        self.suite = suite
        self.tag = tag
        self.dir = suite.tmpdir(tag)
        self.db_url = db_url or suite.createdb(tag)
        self.data_dir = data_dir or os.path.join(self.dir, "data")
        os.makedirs(self.data_dir, exist_ok=True)
        self.tmp = os.path.join(self.dir, "tmp")  # the server's TMPDIR
        os.makedirs(self.tmp, exist_ok=True)
        if signing_key is None:
            signing_key, _ = suite.keygen(os.path.join(self.dir, "server"))
        self.signing_key = signing_key
        self.pubkey = signing_key[:-4] + ".pub"
        self.port = None
        self.proc = None
        self.log_path = os.path.join(self.dir, "server.log")
        self.logs = []
        self.config = {
            "database_url": self.db_url,
            "data_dir": self.data_dir,
            "signing_key": self.signing_key,
            "mqtt_broker": "%s:%s" % (suite.env["MF_MQTT_HOST"], suite.env["MF_MQTT_PORT"]),
            "log_level": "info",
        }
        self.config.update({k: v for k, v in config.items() if v is not None})
        self.config_path = os.path.join(self.dir, "server.conf")
        self.write_config()
        self.failed_logged = False

    def write_config(self):
        with open(self.config_path, "w") as f:
            f.write("# integration test %s/%s\n" % (self.suite.name, self.tag))
            for k, v in self.config.items():
                if isinstance(v, bool):
                    v = "true" if v else "false"
                f.write("%s = %s\n" % (k, v))

    # --- process ------------------------------------------------------------
    def cmd(self, *args, check_rc=True, timeout=60):
        """Run `modelfleet-server ARGS --config FILE` to completion."""
        return run([self.suite.server_bin] + list(args) + ["--config", self.config_path],
                   check_rc=check_rc, timeout=timeout)

    def migrate(self, check_rc=True):
        return self.cmd("migrate", check_rc=check_rc)

    def token(self, role, name=None, max_uses=None, expires_in=None):
        argv = ["token", "create", "--role", role, "--name", name or ("t-" + role)]
        if max_uses is not None:
            argv += ["--max-uses", str(max_uses)]
        if expires_in is not None:
            argv += ["--expires-in", str(expires_in)]
        out = self.cmd(*argv).stdout.decode()
        lines = out.splitlines()
        check(len(lines) == 1, "token create must print one line, got %r" % out)
        tok = lines[0].strip()
        check(re.fullmatch(r"mft_[A-Za-z0-9_-]{43}", tok), "token create printed %r" % tok)
        return tok

    def start(self, timeout=20):
        if self.port is None:
            self.port = free_port()
        n = len(self.logs)
        log_path = "%s.%d" % (self.log_path, n)
        self.logs.append(log_path)
        logf = open(log_path, "wb")
        env = dict(os.environ, TMPDIR=self.tmp)
        self.proc = subprocess.Popen(
            [self.suite.server_bin, "serve", "--config", self.config_path,
             "--listen", "127.0.0.1:%d" % self.port],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=env)
        logf.close()
        _live_servers.append(self.proc)
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.dump_log()
                raise Failure("server %s exited with %d during start" % (self.tag, self.proc.returncode))
            try:
                r = self.req("GET", "/healthz", timeout=2)
                if r.status == 200:
                    return self
                last = r.brief()
            except OSError as e:
                last = str(e)
            time.sleep(0.05)
        self.dump_log()
        raise Failure("server %s: /healthz not 200 within %ds (last: %s)" % (self.tag, timeout, last))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10):
        """SIGTERM; the server must exit 0 within `timeout` seconds."""
        check(self.proc is not None, "server %s not started" % self.tag)
        p = self.proc
        try:
            terminate(p, timeout, "server %s" % self.tag)
        finally:
            self.proc = None
        check(p.returncode == 0, "server %s exited %d after SIGTERM (expected 0)" % (self.tag, p.returncode))

    def restart(self):
        self.stop()
        return self.start()

    def log_text(self):
        out = []
        for path in self.logs:
            try:
                with open(path, "rb") as f:
                    out.append(f.read().decode(errors="replace"))
            except OSError:
                pass
        return "".join(out)

    def note_failure(self):
        self.failed_logged = True

    def dump_log(self, lines=60):
        text = self.log_text().splitlines()
        print("---- server %s log (last %d of %d lines; %s.*) ----"
              % (self.tag, min(lines, len(text)), len(text), self.log_path))
        for line in text[-lines:]:
            print("  | " + line)
        print("----")

    # --- HTTP ---------------------------------------------------------------
    def url(self, path):
        if path.startswith("/healthz") or path.startswith("/api/"):
            return path
        return "/api/v1" + path

    def req(self, method, path, body=None, token=None, headers=None, timeout=30):
        """One request on a fresh connection. `path` without /api/v1 is prefixed.
        body: bytes, str, dict/list (sent as JSON), or an iterator (sent chunked)."""
        h = {}
        if token is not None:
            h["Authorization"] = "Bearer " + token
        chunked = False
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        elif isinstance(body, str):
            body = body.encode()
            h["Content-Type"] = "application/json"
        elif body is not None and not isinstance(body, (bytes, bytearray)):
            chunked = True
            h["Content-Type"] = "application/octet-stream"
        if headers:
            h.update(headers)
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request(method, self.url(path), body=body, headers=h, encode_chunked=chunked)
            r = c.getresponse()
            data = r.read()
            return Response(r.status, r.reason, r.getheaders(), data)
        finally:
            c.close()

    def get(self, path, token=None, **kw):
        return self.req("GET", path, token=token, **kw)

    def push(self, path_or_bytes, token, headers=None):
        if isinstance(path_or_bytes, (bytes, bytearray)):
            data = bytes(path_or_bytes)
        else:
            with open(path_or_bytes, "rb") as f:
                data = f.read()
        h = {"Content-Type": "application/octet-stream"}
        h.update(headers or {})
        return self.req("POST", "/packages", body=data, token=token, headers=h)

    def raw(self, data, read=True, timeout=10, shut_write=False):
        """Send raw bytes on a new connection and return the raw response bytes."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        try:
            s.sendall(data)
            if shut_write:
                s.shutdown(socket.SHUT_WR)
            if not read:
                return b""
            return recv_all(s)
        finally:
            s.close()

    def stream_upload(self, path, token, total, chunk=65536, chunked=False, content_length=None,
                      stop_after=None, reset=False, body=None):
        """Upload `total` bytes of junk (or `body`) in pieces, watching for an early response.
        stop_after: close the connection (RST when `reset`) once that many bytes went out.
        Returns (status or None, raw response bytes, bytes sent, error string)."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=15)
        head = "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n" \
               "Content-Type: application/octet-stream\r\n" % (self.url(path), token)
        if chunked:
            head += "Transfer-Encoding: chunked\r\n"
        else:
            head += "Content-Length: %d\r\n" % (content_length if content_length is not None else total)
        head += "Connection: close\r\n\r\n"
        sent = 0
        err = None
        piece = b"\xa5" * chunk
        if body is not None:
            total = len(body)
        try:
            s.sendall(head.encode())
            while sent < total:
                if stop_after is not None and sent >= stop_after:
                    if reset:  # RST instead of FIN
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    s.close()
                    return None, b"", sent, "closed by client"
                r, _, _ = select.select([s], [], [], 0)
                if r:
                    break  # the server answered early
                n = min(chunk, total - sent)
                data = piece[:n] if body is None else body[sent:sent + n]
                if chunked:
                    data = b"%x\r\n" % n + data + b"\r\n"
                s.sendall(data)
                sent += n
            else:
                if chunked:
                    s.sendall(b"0\r\n\r\n")
        except OSError as e:
            err = "send: %s" % e
        try:
            resp = recv_all(s)
        except OSError as e:
            resp = b""
            err = (err + "; " if err else "") + "recv: %s" % e
        s.close()
        m = re.match(rb"HTTP/1\.[01] (\d{3})", resp)
        return (int(m.group(1)) if m else None), resp, sent, err


def recv_all(s):
    out = b""
    while True:
        try:
            d = s.recv(65536)
        except socket.timeout:
            break
        if not d:
            break
        out += d
    return out


def parse_raw(resp):
    """Split a raw HTTP/1.1 response into (status, headers dict lowercased, body)."""
    head, _, body = resp.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    m = re.match(r"HTTP/1\.[01] (\d{3})", lines[0]) if lines else None
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return (int(m.group(1)) if m else None), headers, body


def expect(resp, status, error=None, what=""):
    """The response must have this status (or one of these) and, if given, this error code."""
    statuses = status if isinstance(status, (tuple, list, set)) else (status,)
    check(resp.status in statuses, "%sexpected %s, got %s" % (what + ": " if what else "",
                                                             "/".join(map(str, statuses)), resp.brief()))
    if error is not None:
        j = resp.json
        check(isinstance(j, dict) and j.get("error") == error,
              "%sexpected error %r, got %s" % (what + ": " if what else "", error, resp.brief()))
        check(isinstance(j.get("message"), str) and j["message"],
              "%serror without a message: %s" % (what + ": " if what else "", resp.brief()))
    return resp


def files_under(root):
    """Every file (and symlink) below root, relative, sorted."""
    out = []
    for dp, dns, fns in os.walk(root):
        for fn in fns:
            out.append(os.path.relpath(os.path.join(dp, fn), root))
    return sorted(out)


def quote(seg):
    return urllib.parse.quote(seg, safe="")


def wait_for(fn, timeout, interval=0.05):
    """Poll fn() until it returns a truthy value; return it (or the last value)."""
    deadline = time.monotonic() + timeout
    v = fn()
    while not v and time.monotonic() < deadline:
        time.sleep(interval)
        v = fn()
    return v


class Broker:
    """A private mosquitto on its own loopback port (stop/start on the same
    port, retained messages and sessions kept), for tests that take the
    broker away."""

    def __init__(self, suite, tag):
        self.dir = suite.tmpdir(tag)
        self.port = free_port()
        self.proc = None
        self.conf = os.path.join(self.dir, "mosquitto.conf")
        with open(self.conf, "w") as f:
            f.write("listener %d 127.0.0.1\nallow_anonymous true\n" % self.port)
            # keep retained messages and persistent sessions across stop/start
            f.write("persistence true\npersistence_location %s/\nautosave_interval 1\n" % self.dir)
            f.write("log_dest file %s/mosquitto.log\n" % self.dir)
            if os.getuid() == 0:
                f.write("user root\n")

    def start(self, timeout=10):
        exe = os.environ.get("MF_MOSQUITTO") or shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([exe, "-c", self.conf], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _live_servers.append(self.proc)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            check(self.proc.poll() is None, "mosquitto exited with %s" % self.proc.returncode)
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise Failure("mosquitto did not listen on %d" % self.port)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def wait_until(what, fn, timeout=15):
    """fn()'s first true value within timeout seconds, else AssertionError
    naming what was awaited and fn()'s last value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError("timed out waiting for %s (last: %r)" % (what, last))


@atexit.register
def _kill_leftovers():
    for p in _live_servers:
        if p.poll() is None:
            p.kill()
            p.wait()
