"""Migrations: from an empty database, re-run as a no-op, two at once (advisory
lock), and the server applying them itself at start."""

import glob
import os
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mfharness import SOURCE_DIR, Suite, check, expect  # noqa: E402

S = Suite("api_migrate")
MIGRATIONS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(SOURCE_DIR, "schema", "[0-9]*.sql")))
TABLES = ["api_tokens", "signing_keys", "models", "packages", "package_hardware", "devices",
          "device_models", "desired_states", "rollouts", "rollout_stages", "rollout_devices",
          "reports", "events", "audit_log"]


def user_tables(url):
    out = S.psql(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
    return out.splitlines()


def migration_rows(url):
    return S.psql(url, "SELECT * FROM schema_migrations ORDER BY 1")


@S.case
def migrate_on_empty_database_creates_everything():
    S.srv = S.server("migrate")
    check(user_tables(S.srv.db_url) == [], "fresh database is not empty")
    S.srv.migrate()
    tables = user_tables(S.srv.db_url)
    for t in TABLES + ["schema_migrations"]:
        check(t in tables, "table %s missing after migrate; have %s" % (t, tables))
    rows = migration_rows(S.srv.db_url).splitlines()
    check(len(rows) == len(MIGRATIONS),
          "schema_migrations has %d rows, schema/ has %d migrations (%s): %s"
          % (len(rows), len(MIGRATIONS), MIGRATIONS, rows))
    for name in MIGRATIONS:
        num = name.split("_", 1)[0]
        check(any(num.lstrip("0") in r or name in r for r in rows),
              "no schema_migrations row names migration %s: %s" % (name, rows))
    S.rows = migration_rows(S.srv.db_url)


@S.case
def migrate_again_is_a_noop():
    S.srv.migrate()
    S.srv.migrate()
    check(migration_rows(S.srv.db_url) == S.rows,
          "schema_migrations changed on re-run:\nbefore %s\nafter  %s" % (S.rows, migration_rows(S.srv.db_url)))


@S.case
def two_migrations_at_once_both_succeed():
    # Several rounds on fresh databases to give the race a chance to happen.
    for i in range(3):
        srv = S.server("race%d" % i)
        argv = [S.server_bin, "migrate", "--config", srv.config_path]
        procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
        for p in procs:
            out, err = p.communicate(timeout=60)
            check(p.returncode == 0, "concurrent migrate #%d exited %d: %s" % (i, p.returncode,
                                                                                 err.decode(errors="replace")))
        rows = migration_rows(srv.db_url).splitlines()
        check(len(rows) == len(MIGRATIONS), "after concurrent migrate: %d rows, expected %d: %s"
              % (len(rows), len(MIGRATIONS), rows))
        check(set(TABLES) <= set(user_tables(srv.db_url)), "tables missing after concurrent migrate")


@S.case
def server_applies_migrations_at_start():
    srv = S.server("autostart")
    srv.start()
    expect(srv.get("/healthz"), 200)
    j = srv.get("/healthz").json
    check(j.get("status") == "ok" and j.get("database") == "ok", "healthz body %r" % j)
    expect(srv.get("/api/v1/healthz"), 200, what="/api/v1/healthz")
    check(len(migration_rows(srv.db_url).splitlines()) == len(MIGRATIONS), "server start did not migrate")
    srv.stop()
    # A second start on the migrated database changes nothing.
    before = migration_rows(srv.db_url)
    srv.start()
    check(migration_rows(srv.db_url) == before, "second start changed schema_migrations")
    srv.stop()


@S.case
def check_config_and_bad_config():
    srv = S.server("cfg")
    p = srv.cmd("--check-config", check_rc=False)
    check(p.returncode == 0, "--check-config on a good config exited %d: %s" % (p.returncode, p.stderr))
    with open(srv.config_path, "a") as f:
        f.write("no_such_key = 1\n")
    p = srv.cmd("--check-config", check_rc=False)
    check(p.returncode != 0, "--check-config accepted an unknown key")
    check(b"no_such_key" in p.stderr, "unknown-key error does not name the key: %r" % p.stderr)


S.run()
