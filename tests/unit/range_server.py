#!/usr/bin/python3
"""range_server.py — a loopback HTTP/1.1 server for test_download: it serves
one blob at /api/v1/packages/<id>/blob (id = BLAKE2b-256 of the blob) the way
modelfleet-server does (Range bytes=N- / N-M / -N, If-Range, ETag,
Content-Range, 416 with bytes */SIZE, Bearer auth, JSON errors), plus faults
chosen on the command line. Standard library only.

It prints its port on stdout when ready, appends one JSON line per request to
--log (method, range asked, status, body bytes actually sent), and exits when
its stdin reaches end of file (after in-flight requests finish, at most 10 s),
so a test that dies never leaves it behind.

Faults (requests are numbered from 0 in arrival order, whatever they are):
  --cut-at A,B,...     request i (i < count) sends the blob only up to absolute
                       offset list[i], then closes the connection
  --corrupt            one byte of the blob (at size/3) is served flipped
  --error-status S --error-count K   the first K requests get status S
  --ignore-range       Range is ignored: always 200 with the whole blob
  --stall S --stall-count K --stall-after N
                       the first K requests send headers and N body bytes,
                       then nothing for S seconds or until shutdown (then
                       the rest, if the client is still there)
  --wrong-range K      the first K 206 replies carry a Content-Range (and
                       body) that starts 7 bytes off the offset asked
  --no-length --extra N
                       no Content-Length (body ends at close) and N bytes of
                       garbage after the blob
"""
import argparse
import hashlib
import http.server
import json
import os
import re
import socket
import sys
import threading
import time

CHUNK = 16384


class State:
    def __init__(self, args, blob):
        self.args = args
        self.blob = blob
        self.id = hashlib.blake2b(blob, digest_size=32).hexdigest()
        self.lock = threading.Lock()
        self.count = 0
        self.wrong_left = args.wrong_range
        self.active = 0
        self.idle = threading.Condition(self.lock)
        self.quit = threading.Event()  # cuts stalls short at shutdown
        self.log = open(args.log, "a", encoding="utf-8")
        if args.corrupt:
            b = bytearray(blob)
            b[len(b) // 3] ^= 0xFF
            self.served = bytes(b)
        else:
            self.served = blob

    def next_index(self):
        with self.lock:
            n = self.count
            self.count += 1
            self.active += 1
            return n

    def done(self, entry):
        with self.lock:
            if not self.log.closed:
                self.log.write(json.dumps(entry, sort_keys=True) + "\n")
                self.log.flush()
            self.active -= 1
            self.idle.notify_all()

    def take_wrong(self):
        with self.lock:
            if self.wrong_left > 0:
                self.wrong_left -= 1
                return True
            return False


def parse_range(value, size):
    """(start, end) inclusive, 'unsatisfiable', or None (ignore the header)."""
    m = re.fullmatch(r"bytes=(\d*)-(\d*)", value.strip())
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None
    if m.group(1) == "":
        n = int(m.group(2))
        if n == 0:
            return "unsatisfiable"
        return (max(0, size - n), size - 1)
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else size - 1
    if start >= size:
        return "unsatisfiable"
    if end < start:
        return None
    return (start, min(end, size - 1))


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10
    server_version = "range_server/1"

    def log_message(self, fmt, *args):  # quiet: the JSON log is the record
        pass

    def do_HEAD(self):
        self.handle_blob(head=True)

    def do_GET(self):
        self.handle_blob(head=False)

    def handle_blob(self, head):
        st = self.server.state
        a = st.args
        n = st.next_index()
        entry = {"n": n, "method": self.command, "path": self.path,
                 "range": self.headers.get("Range"),
                 "if_range": self.headers.get("If-Range"), "status": 0, "sent": 0}
        try:
            self.serve(st, a, n, head, entry)
        except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError) as e:
            entry["error"] = type(e).__name__
            self.close_connection = True
        finally:
            st.done(entry)

    def send_json(self, entry, status, code, extra=None):
        body = json.dumps({"error": code, "message": code.replace("_", " ")}).encode()
        entry["status"] = status
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_body(self, entry, data, stall_at=None, stall_s=0.0):
        pos = 0
        while pos < len(data):
            if stall_at is not None and pos >= stall_at:
                self.wfile.flush()
                self.server.state.quit.wait(stall_s)
                stall_at = None
            end = min(len(data), pos + CHUNK)
            if stall_at is not None and pos < stall_at < end:
                end = stall_at
            self.wfile.write(data[pos:end])
            entry["sent"] += end - pos
            pos = end
        self.wfile.flush()

    def serve(self, st, a, n, head, entry):
        size = len(st.blob)
        if self.path != "/api/v1/packages/%s/blob" % st.id:
            self.send_json(entry, 404, "not_found")
            return
        if self.headers.get("Authorization") != "Bearer " + a.token:
            self.send_json(entry, 401, "unauthorized", {"WWW-Authenticate": "Bearer"})
            return
        if n < a.error_count:
            self.send_json(entry, a.error_status, "internal" if a.error_status >= 500 else "error")
            return

        etag = '"%s"' % st.id
        rng = None
        if "Range" in self.headers and not a.ignore_range:
            if_range = self.headers.get("If-Range")
            if if_range is None or if_range == etag:
                rng = parse_range(self.headers["Range"], size)
        if rng == "unsatisfiable":
            self.send_json(entry, 416, "range_not_satisfiable",
                           {"Content-Range": "bytes */%d" % size})
            return

        if rng is None:
            status, start, end = 200, 0, size - 1
        else:
            status, (start, end) = 206, rng
            if st.take_wrong():
                start = start + 7 if start + 7 <= end else max(0, start - 7)
        data = st.served[start:end + 1]
        extra = b""
        if a.no_length and status == 200:
            extra = bytes((i * 37 + 11) & 0xFF for i in range(a.extra))
        cut = None
        if n < len(a.cut_at):
            cut = max(0, min(len(data), a.cut_at[n] - start))

        entry["status"] = status
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.modelfleet.package")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        if status == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
        if a.no_length and status == 200:
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if head:
            return
        stall_at = None
        if n < a.stall_count:
            stall_at = min(a.stall_after, len(data))
        if cut is not None:
            self.send_body(entry, data[:cut], stall_at, a.stall)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_body(entry, data + extra, stall_at, a.stall)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # A client that hangs up between requests is part of the tests.
        if not isinstance(sys.exc_info()[1], (ConnectionError, socket.timeout)):
            super().handle_error(request, client_address)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blob", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--cut-at", default="",
                   type=lambda s: [int(x) for x in s.split(",") if x != ""])
    p.add_argument("--corrupt", action="store_true")
    p.add_argument("--error-status", type=int, default=500)
    p.add_argument("--error-count", type=int, default=0)
    p.add_argument("--ignore-range", action="store_true")
    p.add_argument("--stall", type=float, default=0.0)
    p.add_argument("--stall-count", type=int, default=0)
    p.add_argument("--stall-after", type=int, default=0)
    p.add_argument("--wrong-range", type=int, default=0)
    p.add_argument("--no-length", action="store_true")
    p.add_argument("--extra", type=int, default=0)
    a = p.parse_args()

    with open(a.blob, "rb") as f:
        blob = f.read()
    if not blob:
        sys.exit("range_server: empty blob")
    srv = Server(("127.0.0.1", 0), Handler)
    srv.state = State(a, blob)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True)
    t.start()
    print(srv.server_address[1], flush=True)

    while sys.stdin.buffer.read(4096):  # until EOF: the test is done (or gone)
        pass
    st = srv.state
    st.quit.set()
    srv.shutdown()
    deadline = time.monotonic() + 10
    with st.lock:
        while st.active > 0 and time.monotonic() < deadline:
            st.idle.wait(0.1)
        st.log.close()
    srv.server_close()
    os._exit(0)


if __name__ == "__main__":
    main()
