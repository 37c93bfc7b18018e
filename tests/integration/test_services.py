"""The fixture itself: services.env is complete, PostgreSQL answers SQL on its
port with the settings the tests rely on, createdb works, and the broker
passes a message from a publisher to a subscriber (raw MQTT 3.1.1)."""

import os
import socket
import struct
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mfharness import SERVICES_SH, load_env  # noqa: E402

services_dir = os.path.abspath(sys.argv[1])
env = load_env(services_dir)
failed = 0


def case(fn):
    global failed
    try:
        fn()
        print("PASS %s" % fn.__name__)
    except Exception as e:  # noqa: BLE001
        failed += 1
        print("FAIL %s: %s" % (fn.__name__, e))
    return fn


@case
def env_file_complete():
    for k in ("MF_PG_HOST", "MF_PG_PORT", "MF_PG_USER", "MF_PG_DATA", "MF_PG_BIN", "MF_MQTT_HOST",
              "MF_MQTT_PORT", "MF_SERVICES_DIR"):
        assert env.get(k), "services.env lacks %s" % k
    assert env["MF_PG_HOST"] == "127.0.0.1" and env["MF_MQTT_HOST"] == "127.0.0.1", "not loopback"
    assert env["MF_PG_PORT"] != env["MF_MQTT_PORT"], "same port twice"
    assert os.path.samefile(env["MF_SERVICES_DIR"], services_dir), "MF_SERVICES_DIR differs"


@case
def postgres_answers_with_test_settings():
    url = "postgresql://postgres@%s:%s/postgres" % (env["MF_PG_HOST"], env["MF_PG_PORT"])
    out = subprocess.run(["psql", url, "-XtA", "-c", "SELECT current_setting('max_connections'), "
                          "current_setting('server_version_num')::int / 10000"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    mc, ver = out.stdout.strip().split("|")
    assert int(mc) >= 200, "max_connections %s" % mc
    assert ver == "15", "PostgreSQL major %s" % ver


@case
def createdb_prints_a_url():
    name = "svc_check_%d" % os.getpid()
    out = subprocess.run(["bash", SERVICES_SH, "createdb", services_dir, name], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    url = out.stdout.strip()
    assert url == "postgresql://postgres@127.0.0.1:%s/%s" % (env["MF_PG_PORT"], name), url
    r = subprocess.run(["psql", url, "-XtA", "-c", "SELECT current_database()"], capture_output=True,
                       text=True, timeout=30)
    assert r.stdout.strip() == name, r.stderr
    subprocess.run(["psql", url.rsplit("/", 1)[0] + "/postgres", "-Xq", "-c", "DROP DATABASE %s" % name],
                   timeout=30)


def mqtt_packet(kind, body):
    n, enc = len(body), b""
    while True:
        d, n = n % 128, n // 128
        enc += bytes([d | (0x80 if n else 0)])
        if not n:
            return bytes([kind]) + enc + body


def s16(b):
    return struct.pack(">H", len(b)) + b


def mqtt_connect(cid):
    c = socket.create_connection((env["MF_MQTT_HOST"], int(env["MF_MQTT_PORT"])), timeout=5)
    c.sendall(mqtt_packet(0x10, s16(b"MQTT") + bytes([4, 2]) + struct.pack(">H", 30) + s16(cid)))
    ack = c.recv(4)
    assert ack[:1] == b"\x20" and ack[3:4] == b"\x00", "CONNACK %r" % ack
    return c


@case
def mosquitto_passes_messages():
    sub = mqtt_connect(b"svc-sub-%d" % os.getpid())
    sub.sendall(mqtt_packet(0x82, struct.pack(">H", 1) + s16(b"mf/test/svc") + b"\x00"))
    ack = sub.recv(5)
    assert ack[:1] == b"\x90", "SUBACK %r" % ack
    pub = mqtt_connect(b"svc-pub-%d" % os.getpid())
    pub.sendall(mqtt_packet(0x30, s16(b"mf/test/svc") + b"hello"))
    msg = sub.recv(100)
    assert msg[0] & 0xF0 == 0x30 and msg.endswith(b"hello"), "PUBLISH %r" % msg
    pub.sendall(b"\xe0\x00")
    sub.sendall(b"\xe0\x00")
    pub.close()
    sub.close()


sys.exit(1 if failed else 0)
