"""fleet_counts (schema/0002) against the truth: after every statement shape a
writer uses (multi-row inserts, upserts, updates of class and online state,
model changes, the two-step decommission, TRUNCATE) and after concurrent
transactions on the same device, the trigger-kept counts equal a count over
devices x device_models, and GET /fleet/summary shows them."""

import os
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mfharness import Suite, check, expect  # noqa: E402

S = Suite("fleet_counts")

TRUTH = """
SELECT coalesce(string_agg(format('%s|%s|%s|%s|%s', hw, m, v, o, n), ' ' ORDER BY hw, m, v, o), '')
FROM (SELECT d.hw_class AS hw, coalesce(m.model, '') AS m, coalesce(m.version, '') AS v,
             d.online AS o, count(*) AS n
      FROM devices d LEFT JOIN device_models m ON m.device_id = d.id GROUP BY 1, 2, 3, 4
      UNION ALL
      SELECT hw_class, '*', '', online, count(*) FROM devices GROUP BY 1, 4) t"""
KEPT = """
SELECT coalesce(string_agg(format('%s|%s|%s|%s|%s', hw_class, model, version, online, devices), ' '
                           ORDER BY hw_class, model, version, online), '')
FROM fleet_counts WHERE devices <> 0"""


def sql(text):
    return S.psql(S.srv.db_url, text)


def counts_exact(what):
    truth, kept = sql(TRUTH), sql(KEPT)
    check(truth == kept, "%s: fleet_counts drifted\n  truth %s\n  kept  %s" % (what, truth, kept))


def device(i, hw="rpi4", online=True):
    return "('d%03d', '%s', decode(lpad(to_hex(%d), 64, '0'), 'hex'), %s)" % (i, hw, i, online)


@S.case
def setup():
    S.srv = S.server().start()
    S.viewer = S.srv.token("viewer", "dash")
    sql("INSERT INTO devices (id, hw_class, credential_hash, online) VALUES "
        + ", ".join(device(i, ("rpi4", "rpi5", "x86-cpu")[i % 3], i % 2 == 0) for i in range(30)))
    counts_exact("30 devices, no models")


@S.case
def statement_shapes():
    steps = [
        ("two models per device in one statement",
         "INSERT INTO device_models (device_id, model, version) SELECT id, m, '1.0.0' FROM devices,"
         " unnest(ARRAY['digits', 'keyword']) m WHERE id < 'd010'"),
        ("upsert: new rows and version changes",
         "INSERT INTO device_models (device_id, model, version) SELECT id, 'digits', '1.1.0'"
         " FROM devices WHERE id < 'd015' ON CONFLICT (device_id, model)"
         " DO UPDATE SET version = EXCLUDED.version"),
        ("online flip of devices with and without models",
         "UPDATE devices SET online = NOT online WHERE id BETWEEN 'd005' AND 'd020'"),
        ("class change", "UPDATE devices SET hw_class = 'jetson-orin' WHERE id IN ('d001', 'd025')"),
        ("some models removed, leaving devices with none",
         "DELETE FROM device_models WHERE model = 'keyword' OR device_id = 'd012'"),
        ("model moved to another version", "UPDATE device_models SET version = '2.0.0' WHERE device_id = 'd003'"),
        ("decommission, the store's way",
         "BEGIN; DELETE FROM device_models WHERE device_id IN ('d002', 'd013');"
         " DELETE FROM devices WHERE id IN ('d002', 'd013', 'd029'); COMMIT"),
    ]
    for what, text in steps:
        sql(text)
        counts_exact(what)
    p = S.psql(S.srv.db_url, "UPDATE devices SET id = 'renamed' WHERE id = 'd004'", check_rc=False)
    check(p.returncode != 0 and b"never changes" in p.stderr, "a device id could change: %r" % p.stderr)
    summary = expect(S.srv.get("/fleet/summary", S.viewer), 200).json
    check(summary["devices"] == int(sql("SELECT count(*) FROM devices")), "summary total %r" % summary)
    check(summary["online"] == int(sql("SELECT count(*) FROM devices WHERE online")), "summary online %r" % summary)


def concurrently(first, second, what):
    """Runs `first` in a transaction that holds for 1 s, and `second` (autocommit)
    0.3 s into it; both must succeed, then the counts must be exact."""
    p1 = subprocess.Popen(["psql", S.srv.db_url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c",
                           "BEGIN; %s; SELECT pg_sleep(1); COMMIT;" % first],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.3)
    p2 = subprocess.run(["psql", S.srv.db_url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", second],
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=30)
    err1 = p1.communicate(timeout=30)[1]
    check(p1.returncode == 0 and p2.returncode == 0, "%s: %r %r" % (what, err1, p2.stderr))
    counts_exact(what)


@S.case
def concurrent_writers_on_one_device():
    sql("INSERT INTO devices (id, hw_class, credential_hash, online) VALUES " + device(100) + ", " + device(101))
    concurrently("UPDATE devices SET online = false WHERE id = 'd100'",
                 "INSERT INTO device_models (device_id, model, version) VALUES ('d100', 'digits', '1.0.0')",
                 "online flip racing a model insert")
    concurrently("INSERT INTO device_models (device_id, model, version) VALUES ('d101', 'digits', '1.0.0')",
                 "INSERT INTO device_models (device_id, model, version) VALUES ('d101', 'keyword', '1.0.0')",
                 "two models added to one device at once")
    concurrently("DELETE FROM device_models WHERE device_id = 'd101' AND model = 'digits'",
                 "UPDATE devices SET hw_class = 'rpi5' WHERE id = 'd101'",
                 "a model removal racing a class change")


@S.case
def truncate_rebuilds():
    sql("TRUNCATE device_models")
    counts_exact("TRUNCATE device_models")


S.run()
