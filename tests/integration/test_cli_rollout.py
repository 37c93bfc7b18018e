#!/usr/bin/env python3
"""`modelfleet rollout ...` against a real modelfleet-server (its controller
off: controller_interval_ms = 0, no MQTT, so nothing changes behind the
test's back). Every command is run as a process; its exit code and output are
checked, and what it did is checked through the API: start builds the plan
the flags say (and a --plan file merges under the flags), bad flags exit 2
without a request, refusals (conflict, validation, unknown version, a viewer
token, a transition the status does not allow) exit 1 with the server's
message, status renders stages, gate evidence and counts, list and devices
print their tables (devices across pages), pause/resume/promote/abort change
the status, and status --watch on a pipe prints each changed view once and
exits 1 when the rollout is aborted under it, 0 when it completed, 130 on
SIGINT. The token never appears in anything the CLI prints."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mfharness import Failure, Suite, check, expect, wait_for  # noqa: E402

S = Suite("cli_rollout")
OUTPUTS = []  # everything the CLI printed, searched for the tokens at the end


def env(token):
    e = {k: v for k, v in os.environ.items() if not k.startswith("MODELFLEET_")}
    e.pop("XDG_CONFIG_HOME", None)
    e["HOME"] = S.home  # no config file
    e["MODELFLEET_URL"] = "http://127.0.0.1:%d" % S.srv.port
    if token:
        e["MODELFLEET_TOKEN"] = token
    return e


def cli(*args, token=None, code=None, timeout=60):
    """Runs `modelfleet rollout ARGS`; returns (exit code, stdout, stderr).
    With code: the exit code must be that."""
    argv = [S.cli_bin, "rollout"] + [str(a) for a in args]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                       env=env(S.op if token is None else token), stdin=subprocess.DEVNULL)
    out, err = p.stdout.decode(), p.stderr.decode()
    OUTPUTS.append(out + err)
    if code is not None:
        check(p.returncode == code, "modelfleet rollout %s: exit %d, want %d\nstdout: %s\nstderr: %s"
              % (" ".join(map(str, args)), p.returncode, code, out[:1500], err[:1500]))
    return p.returncode, out, err


def get(rid):
    return expect(S.srv.get("/rollouts/%d" % rid, S.viewer), 200, what="GET /rollouts/%d" % rid).json


def rollout_count():
    return int(S.psql(S.srv.db_url, "SELECT count(*) FROM rollouts"))


@S.case
def setup_server_and_packages():
    S.start_with_roles(controller_interval_ms=0, mqtt_broker="")
    S.home = S.tmpdir("home")
    expect(S.srv.push(S.pkg, S.op), 201, what="push digits 1.0.0")
    pkg11 = S.pack(os.path.join(S.tmpdir("p"), "d11.mfpkg"), version="1.1.0")
    expect(S.srv.push(pkg11, S.op), 201, what="push digits 1.1.0")


@S.case
def usage_errors_exit_2_and_send_nothing():
    cases = [
        (["start", "digits", "1.1.0", "--soak", "5x"], r"--soak '5x' is not a duration"),
        (["start", "digits", "1.1.0", "--timeout", "-3"], r"--timeout '-3' is not a duration"),
        (["start", "digits", "1.1.0", "--on-fail", "explode"], r"--on-fail 'explode': expected rollback or pause"),
        (["start", "digits", "1.1.0", "--scope", "some"], r"--scope 'some': expected per_class or whole"),
        (["start", "digits", "1.1.0", "--stages", "10,0,100"], r"--stages '10,0,100': expected percents"),
        (["start", "digits", "1.1.0", "--classes", "rpi4,,x"], r"--classes 'rpi4,,x': expected names"),
        (["start", "digits", "1.1.0", "--label", "site"], r"--label 'site': expected KEY=VALUE"),
        (["start", "digits", "1.1.0", "--min-devices", "two"], r"--min-devices 'two' is not a whole number"),
        (["start", "digits", "1.1.0", "--max-p50-ratio", "fast"], r"--max-p50-ratio 'fast' is not a number"),
        (["start", "digits", "1.1.0", "--bogus"], r"unknown option '--bogus'"),
        (["start", "digits", "1.1.0", "--soak"], r"--soak needs a value"),
        (["start", "digits"], r"expected MODEL VERSION"),
        (["status", "x"], r"'x' is not a rollout id"),
        (["status", "1", "--interval", "1"], r"--interval needs --watch"),
        (["status", "1", "--watch", "--interval", "0"], r"--interval '0' is not a number of seconds"),
        (["list", "--status", "sleeping"], r"--status 'sleeping': expected running"),
        (["devices", "1", "--outcome", "happy"], r"--outcome 'happy': expected none"),
        (["pause", "1", "--rollback"], r"unknown option '--rollback'"),
        (["abort"], r"expected one rollout ID"),
        (["frobnicate", "1"], r"'frobnicate' is not a rollout command"),
    ]
    for args, want in cases:
        _, out, err = cli(*args, code=2)
        check(re.search(want, err), "rollout %s: stderr lacks /%s/: %r" % (" ".join(args), want, err))
        check(out == "", "rollout %s printed on stdout: %r" % (" ".join(args), out))
    check(rollout_count() == 0, "a usage error created a rollout")


@S.case
def start_with_flags_builds_the_plan():
    _, out, _ = cli("start", "digits", "1.1.0", "--classes", "rpi4", "--label", "site=berlin",
                    "--stages", "5,50,100", "--min-devices", "2", "--min-reporting", "3",
                    "--soak", "5m", "--timeout", "1h", "--on-fail", "pause", "--scope", "whole",
                    "--watch-window", "2h", "--max-accuracy-drop", "0.02", "--min-accuracy", "0.9",
                    "--max-failure-rate", "0.2", "--max-p50-ratio", "1.3", "--max-p99-ratio", "1.8",
                    code=0)
    m = re.fullmatch(r"started rollout (\d+): digits 1\.1\.0 to rpi4 in stages 5/50/100%, "
                     r"on failure pause \(whole\)\n", out)
    check(m, "start printed %r" % out)
    S.rid = int(m.group(1))
    ro = get(S.rid)
    plan = ro["plan"]
    check(ro["status"] == "running" and ro["stage"] == 0, "status/stage %r/%r" % (ro["status"], ro["stage"]))
    check(ro["created_by"] == "ci", "created_by %r" % ro["created_by"])
    check(plan["model"] == "digits" and plan["version"] == "1.1.0", "model/version in %r" % plan)
    check(plan["classes"] == ["rpi4"], "classes %r" % plan["classes"])
    check(plan["labels"] == {"site": "berlin"}, "labels %r" % plan.get("labels"))
    want_stages = [(5, 2, 3, 300, 3600), (50, 2, 3, 300, 3600), (100, 2, 3, 300, 3600)]
    got_stages = [(s["percent"], s["min_devices"], s["min_reporting"], s["soak_s"], s["timeout_s"])
                  for s in plan["stages"]]
    check(got_stages == want_stages, "stages %r, want %r" % (got_stages, want_stages))
    g = plan["gates"]
    for k, v in {"max_accuracy_drop": 0.02, "min_accuracy": 0.9, "max_failure_rate": 0.2,
                 "max_p50_ratio": 1.3, "max_p99_ratio": 1.8, "alpha": 0.05, "max_failures": 5,
                 "max_crashes": 2}.items():
        check(abs(g[k] - v) < 1e-12, "gates.%s = %r, want %r" % (k, g[k], v))
    check(plan["on_fail"] == "pause" and plan["scope"] == "whole" and plan["watch_s"] == 7200,
          "policy %r %r %r" % (plan["on_fail"], plan["scope"], plan["watch_s"]))


@S.case
def start_json_defaults_and_plan_file_under_flags():
    # --dry-run: the body that would go out; the file is the base, flags win.
    path = os.path.join(S.tmpdir("plans"), "plan.json")
    with open(path, "w") as f:
        json.dump({"model": "digits", "version": "1.1.0", "classes": ["x86-cpu"],
                   "stages": [{"percent": 20, "soak_s": 10, "timeout_s": 100}, {"percent": 100}],
                   "gates": {"alpha": 0.1, "max_p99_ratio": 3}, "on_fail": "pause"}, f)
    _, out, _ = cli("start", "--plan", path, "--max-p99-ratio", "2.5", "--soak", "1m",
                    "--on-fail", "rollback", "--dry-run", code=0)
    p = json.loads(out)
    check(p["classes"] == ["x86-cpu"] and p["on_fail"] == "rollback", "merged plan %r" % p)
    check(p["gates"] == {"alpha": 0.1, "max_p99_ratio": 2.5}, "merged gates %r" % p["gates"])
    check([(s["percent"], s["soak_s"]) for s in p["stages"]] == [(20, 60), (100, 60)],
          "merged stages %r" % p["stages"])
    check(p["stages"][0]["timeout_s"] == 100, "the file's timeout_s was lost: %r" % p["stages"])
    check(rollout_count() == 1, "--dry-run sent a request")
    # A bad plan file: exit 1 naming the file, nothing sent.
    bad = os.path.join(S.tmpdir("plans"), "bad.json")
    with open(bad, "w") as f:
        f.write('{"model": ')
    _, _, err = cli("start", "--plan", bad, code=1)
    check(bad in err and "line" in err, "bad plan file message %r" % err)
    # The validation of the server passes through: 400 naming the field.
    _, _, err = cli("start", "digits", "1.1.0", "--classes", "x86-cpu", "--stages", "10,5,100", code=1)
    check(re.search(r"server refused: 400 invalid_json: .*stages\[1\]\.percent", err),
          "stage order refusal %r" % err)
    _, _, err = cli("start", "digits", "9.9.9", "--classes", "x86-cpu", code=1)
    check("server refused: 404 not_found" in err, "unknown version %r" % err)
    # A viewer may not start: 403 with the role hint.
    _, _, err = cli("start", "digits", "1.1.0", "--classes", "x86-cpu", token=S.viewer, code=1)
    check("403 forbidden" in err and "operator" in err, "viewer start %r" % err)
    check(rollout_count() == 1, "a refused start created a rollout")


@S.case
def conflicting_start_exits_1_with_the_servers_message():
    plan = {"model": "digits", "version": "1.1.0", "classes": ["rpi4", "x86-cpu"]}
    r = expect(S.srv.req("POST", "/rollouts", body=plan, token=S.op), 409, "conflict",
               what="the API's own conflict")
    msg = r.json["message"]
    _, out, err = cli("start", "digits", "1.1.0", "--classes", "rpi4,x86-cpu", code=1)
    check(out == "", "a conflict printed on stdout: %r" % out)
    check("server refused: 409 conflict: " + msg in err, "stderr %r lacks the message %r" % (err, msg))
    check(rollout_count() == 1, "the conflicting start created a rollout")


def insert_evidence_and_devices():
    """Gives the running stage a decision (as the controller writes it) and
    the rollout 150 assigned devices, so status and devices have rows."""
    ev = {"hw_class": "rpi4", "stage": 0, "verdict": "inconclusive", "targeted": 8, "assigned": 7,
          "active": 5, "refused": 1, "failed": 1, "crashes": 0, "reporting": 4, "with_incumbent": 4,
          "n": 1440, "both": 1300, "only_candidate": 30, "only_incumbent": 34, "neither": 76,
          "correct": 1330, "accuracy": 1330 / 1440, "drop": 4 / 1440, "drop_upper": 0.0153,
          "p_worse": 0.36, "p50_ratio": 1.04, "p99_ratio": None,
          "reason": "accuracy drop upper bound 0.0153 exceeds the margin 0.0100: non-inferiority "
                    "not shown yet (drop 0.0028 over 4 devices, per device 8 vs 9 of 360, p = 0.36)"}
    decision = {"reason": "stage 1 extended: rpi4 inconclusive", "classes": [ev]}
    S.psql(S.srv.db_url, """
        UPDATE rollout_stages SET decision = '%s'::jsonb WHERE rollout_id = %d AND stage = 0;
        INSERT INTO devices (id, hw_class, credential_hash, agent_version, runtimes, online, last_seen)
        SELECT format('pi-%%s', lpad(i::text, 3, '0')), 'rpi4',
               decode(md5('a' || i) || md5('b' || i), 'hex'), '0.1.0', '{onnx}', i %% 2 = 0, now()
        FROM generate_series(1, 150) AS i;
        INSERT INTO rollout_devices (rollout_id, device_id, stage, bucket, from_version, hw_class)
        SELECT %d, format('pi-%%s', lpad(i::text, 3, '0')), 0, i / 1000.0, '1.0.0', 'rpi4'
        FROM generate_series(1, 150) AS i;
        INSERT INTO device_models (device_id, model, version)
        SELECT format('pi-%%s', lpad(i::text, 3, '0')), 'digits', '1.1.0'
        FROM generate_series(1, 150) AS i WHERE i %% 10 = 0;
    """ % (json.dumps(decision).replace("'", "''"), S.rid, S.rid))


@S.case
def status_shows_stages_evidence_and_counts():
    insert_evidence_and_devices()
    _, out, _ = cli("status", S.rid, code=0)
    lines = out.splitlines()
    check(re.fullmatch(r"rollout %d: digits 1\.1\.0, running, stage 1/3" % S.rid, lines[0]),
          "header %r" % lines[0])
    check(re.search(r"^classes rpi4 labelled site=berlin; stages 5/50/100%; on failure pause \(whole\); started \S+ by ci$",
                    out, re.M), "plan line missing:\n" + out)
    check(re.search(r"^stage 1/3 \(5%\): running, \S+ \.\. now$", out, re.M), "stage 1 line:\n" + out)
    check("  stage 1 extended: rpi4 inconclusive" in lines, "stage reason:\n" + out)
    check(re.search(r"^stage 2/3 \(50%\): pending$", out, re.M), "stage 2 line:\n" + out)
    check(re.search(r"^stage 3/3 \(100%\): pending$", out, re.M), "stage 3 line:\n" + out)
    hdr = [l for l in lines if l.strip().startswith("CLASS   VERDICT")]
    check(len(hdr) == 1, "one evidence table expected:\n" + out)
    cols = hdr[0].split()
    check(cols == ["CLASS", "VERDICT", "TARGETED", "ASSIGNED", "ACTIVE", "REFUSED", "FAILED",
                   "REPORTS", "ACCURACY", "DROP", "UPPER", "P-WORSE", "P50x", "P99x"],
          "evidence columns %r" % cols)
    row = lines[lines.index(hdr[0]) + 1].split()
    check(row == ["rpi4", "inconclusive", "8", "7", "5", "1", "1", "4", "0.9236", "+0.0028", "+0.0153",
                  "0.36", "1.04", "-"], "evidence row %r" % row)
    check("  rpi4: accuracy drop upper bound 0.0153 exceeds the margin 0.0100: non-inferiority not shown "
          "yet (drop 0.0028 over 4 devices, per device 8 vs 9 of 360, p = 0.36)" in lines,
          "class reason line missing:\n" + out)
    # The per-class device counts agree with the API's.
    ro = get(S.rid)
    c = ro["counts"][0]
    i = lines.index("devices:")
    check(lines[i + 1].split() == ["CLASS", "STATUS", "TARGETED", "ASSIGNED", "ACTIVE", "REFUSED",
                                   "FAILED", "ROLLED-BACK", "ONLINE"], "counts header %r" % lines[i + 1])
    want = ["rpi4", "active"] + [str(c[k]) for k in ("targeted", "assigned", "active", "refused", "failed",
                                                   "rolled_back", "online")]
    check(lines[i + 2].split() == want, "counts row %r, API says %r" % (lines[i + 2], want))
    check(c["assigned"] == 150 and c["active"] == 15, "API counts %r" % c)
    # --json is the server's object.
    _, out, _ = cli("status", S.rid, "--json", code=0)
    j = json.loads(out)
    check(j["id"] == S.rid and j["stages"][0]["classes"][0]["verdict"] == "inconclusive",
          "status --json %r" % out[:300])
    _, _, err = cli("status", 999999, code=1)
    check("server refused: 404 not_found" in err, "unknown rollout %r" % err)


@S.case
def devices_table_pages_through_next():
    _, out, err = cli("devices", S.rid, code=0)
    lines = out.splitlines()
    check(lines[0].split() == ["DEVICE", "HW-CLASS", "ONLINE", "BUCKET", "STAGE", "OUTCOME", "FROM",
                               "RUNNING", "ASSIGNED", "ROLLED-BACK"], "devices header %r" % lines[0])
    check(len(lines) == 151, "150 devices across two pages expected, got %d rows" % (len(lines) - 1))
    ids = [l.split()[0] for l in lines[1:]]
    check(ids == ["pi-%03d" % i for i in range(1, 151)], "device ids out of order or missing")
    r10 = lines[10].split()
    check(r10[:8] == ["pi-010", "rpi4", "yes", "0.0100", "1", "active", "1.0.0", "1.1.0"], "pi-010 row %r" % r10)
    r1 = lines[1].split()
    check(r1[:8] == ["pi-001", "rpi4", "no", "0.0010", "1", "assigned", "1.0.0", "-"], "pi-001 row %r" % r1)
    _, out, _ = cli("devices", S.rid, "--outcome", "active", "--json", code=0)
    j = json.loads(out)
    check([d["id"] for d in j["devices"]] == ["pi-%03d" % i for i in range(10, 151, 10)] and j["next"] is None,
          "--outcome active --json %r" % out[:300])
    _, out, err = cli("devices", S.rid, "--hw-class", "x86-cpu", code=0)
    check(out == "" and err == "no devices\n", "empty devices: %r %r" % (out, err))


@S.case
def list_shows_the_row():
    _, out, _ = cli("list", code=0)
    lines = out.splitlines()
    check(lines[0].split() == ["ID", "MODEL", "VERSION", "STATUS", "STAGE", "CLASSES", "BY", "CREATED", "REASON"],
          "list header %r" % lines[0])
    check(len(lines) == 2, "one rollout expected:\n" + out)
    row = lines[1].split()
    check(row[:7] == [str(S.rid), "digits", "1.1.0", "running", "1/3", "rpi4", "ci"], "list row %r" % row)
    _, out, _ = cli("list", "--status", "live", "--model", "digits", code=0)
    check(out.splitlines()[1].split()[0] == str(S.rid), "--status live lacks the rollout:\n" + out)
    _, out, err = cli("list", "--status", "completed", code=0)
    check(out == "" and err == "no rollouts\n", "--status completed: %r %r" % (out, err))
    _, out, _ = cli("list", "--json", code=0)
    j = json.loads(out)
    check([r["id"] for r in j["rollouts"]] == [S.rid] and j["next"] is None, "list --json %r" % j)


@S.case
def pause_resume_promote_change_the_status():
    _, out, _ = cli("pause", S.rid, code=0)
    check(out == "rollout %d: paused, stage 1/3: paused by ci\n" % S.rid, "pause printed %r" % out)
    check(get(S.rid)["status"] == "paused", "API status after pause")
    _, out, err = cli("pause", S.rid, code=1)
    check(out == "" and "server refused: 409 conflict: rollout %d is paused; only a running or watching "
          "rollout can be paused" % S.rid in err, "second pause: %r" % err)
    _, out, _ = cli("resume", S.rid, code=0)
    check(out == "rollout %d: running, stage 1/3: resumed by ci\n" % S.rid, "resume printed %r" % out)
    check(get(S.rid)["status"] == "running", "API status after resume")
    _, out, _ = cli("promote", S.rid, "--json", code=0)
    j = json.loads(out)
    check(j["status"] == "running" and j["stage"] == 1, "promote --json %r" % out[:300])
    ro = get(S.rid)
    check(ro["stage"] == 1 and [s["status"] for s in ro["stages"]] == ["promoted", "running", "pending"],
          "API after promote: stage %r, stages %r" % (ro["stage"], [s["status"] for s in ro["stages"]]))
    _, out, _ = cli("status", S.rid, code=0)
    check(out.startswith("rollout %d: digits 1.1.0, running, stage 2/3: promoted to stage 2/3 by ci\n" % S.rid)
          or re.match(r"rollout %d: digits 1\.1\.0, running, stage 2/3: promoted" % S.rid, out),
          "status after promote: %r" % out.splitlines()[0])
    _, _, err = cli("abort", S.rid, token=S.viewer, code=1)
    check("403 forbidden" in err and "operator" in err, "viewer abort %r" % err)
    check(get(S.rid)["status"] == "running", "the viewer's abort changed the status")


@S.case
def watch_on_a_pipe_ends_when_aborted():
    p = subprocess.Popen([S.cli_bin, "rollout", "status", str(S.rid), "--watch", "--interval", "0.2"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                         env=env(S.op))
    try:
        # Several polls without a change: still one frame.
        time.sleep(1.5)
        check(p.poll() is None, "watch exited early (%r)" % p.poll())
        _, out, _ = cli("abort", S.rid, "--rollback", code=0)
        check(re.fullmatch(r"rollout %d: aborted, stage 2/3: aborted by ci, rolling back every device that "
                           r"took the candidate\n" % S.rid, out), "abort printed %r" % out)
        out, err = p.communicate(timeout=15)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    out, err = out.decode(), err.decode()
    OUTPUTS.append(out + err)
    check(p.returncode == 1, "watch of an aborted rollout: exit %d, want 1; stderr %r" % (p.returncode, err))
    check("\033[" not in out, "ANSI escapes on a pipe")
    frames = out.split("\n\nrollout ")
    check(len(frames) == 2, "two frames expected (running, aborted), got %d:\n%s" % (len(frames), out))
    check(frames[0].startswith("rollout %d: digits 1.1.0, running, stage 2/3" % S.rid), "first frame %r"
          % frames[0][:200])
    check(frames[1].startswith("%d: digits 1.1.0, aborted, stage 2/3: aborted by ci" % S.rid),
          "last frame %r" % frames[1][:200])
    check("rollback in progress" in frames[1], "the last frame does not say the rollback is pending")
    ro = get(S.rid)
    check(ro["status"] == "aborted" and ro["rollback_pending"] is True, "API after abort %r %r"
          % (ro["status"], ro["rollback_pending"]))
    _, out, err = cli("abort", S.rid, code=1)
    check(out == "" and "server refused: 409 conflict: rollout %d is aborted" % S.rid in err,
          "second abort: %r" % err)


@S.case
def watch_exits_0_when_completed_and_130_on_sigint():
    _, out, _ = cli("start", "digits", "1.1.0", "--json", code=0)
    j = json.loads(out)
    rid = j["id"]
    check(j["status"] == "running" and j["plan"]["classes"] == ["rpi4", "x86-cpu"],
          "start --json %r (no --classes: every class of the version)" % out[:300])
    # SIGINT while watching a running rollout: 130.
    p = subprocess.Popen([S.cli_bin, "rollout", "status", str(rid), "--watch", "--interval", "0.2"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                         env=env(S.viewer))
    try:
        first = p.stdout.readline().decode()
        check(first.startswith("rollout %d: digits 1.1.0, running" % rid), "first line %r" % first)
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=15)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    check(p.returncode == 130, "watch after SIGINT: exit %d, want 130" % p.returncode)
    # Completed (as the controller would record it): exit 0 at once.
    S.psql(S.srv.db_url, "UPDATE rollouts SET status = 'completed', finished_at = now() WHERE id = %d" % rid)
    _, out, _ = cli("status", rid, "--watch", "--interval", "0.2", token=S.viewer, code=0, timeout=20)
    check(out.startswith("rollout %d: digits 1.1.0, completed" % rid) and "\n\nrollout " not in out,
          "watch of a completed rollout printed %r" % out[:300])
    _, _, err = cli("promote", rid, code=1)
    check("409 conflict: rollout %d is completed" % rid in err, "promote of a completed rollout %r" % err)


@S.case
def watch_on_a_terminal_redraws_in_place():
    _, out, _ = cli("start", "digits", "1.1.0", "--classes", "x86-cpu", code=0)
    rid = int(re.match(r"started rollout (\d+):", out).group(1))
    master, slave = os.openpty()
    p = subprocess.Popen([S.cli_bin, "rollout", "status", str(rid), "--watch", "--interval", "0.2"],
                         stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env(S.viewer))
    os.close(slave)
    chunks = []
    reader = threading.Thread(target=drain, args=(master, chunks), daemon=True)
    reader.start()
    try:
        time.sleep(1.0)
        check(p.poll() is None, "watch on a terminal exited early (%r)" % p.poll())
        cli("abort", rid, code=0)
        p.wait(timeout=15)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    reader.join(10)
    os.close(master)
    out = b"".join(chunks).decode(errors="replace")
    OUTPUTS.append(out + p.stderr.read().decode())
    check(p.returncode == 1, "watch on a terminal of an aborted rollout: exit %d, want 1" % p.returncode)
    views = out.split("\033[H\033[2J")
    check(views[0] == "" and len(views) >= 3, "expected a clear before every view, got %d views: %r"
          % (len(views) - 1, out[:300]))
    check(all("Ctrl-C to stop" in v for v in views[1:-1]), "a live view without the footer")
    last = views[-1]
    check(re.match(r"rollout %d: digits 1\.1\.0, aborted" % rid, last) and "Ctrl-C" not in last,
          "last view %r" % last[:300])


def drain(fd, chunks):
    """Reads a pty master until the other side is gone."""
    while True:
        try:
            d = os.read(fd, 65536)
        except OSError:
            return
        if not d:
            return
        chunks.append(d)


@S.case
def the_token_never_appears_in_output():
    for text in OUTPUTS:
        for tok in (S.op, S.viewer):
            if tok in text:
                raise Failure("a token appears in the CLI's output: %r" % text[:300])


if __name__ == "__main__":
    S.run()
