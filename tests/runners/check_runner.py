#!/usr/bin/python3
"""check_runner.py — checks a model runner against docs/runner-protocol.md.

usage: check_runner.py [--runtime NAME] RUNNER FIXTURES_DIR

Runs RUNNER on each fixture model with eval-inputs.npy and --warmup 3 (in a
scratch working directory, stdin /dev/null, under timeout(1)), validates every
output line with strict patterns, computes top-1 accuracy from eval-labels.npy
(never shown to the runner) and compares it with the known counts, then checks
the exit statuses for refused inputs and malformed command lines. Prints the
accuracy and latency of each model as information; latencies never fail it.
Standard library only. Exit 0 when every check passed, 1 otherwise.
"""

import ast
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile

# Correct top-1 predictions out of the 360 evaluation samples
# (tests/fixtures/models/models.json: correct_opencv and correct_numpy).
EXPECT_CORRECT = {
    "digits-fp32.onnx": 353,  # 98.06 %
    "digits-int8.onnx": 353,  # 98.06 %
    "digits-int2.onnx": 254,  # 70.56 %, the over-quantized one
}
EXPECT_N = 360
RUN_TIMEOUT_S = 120

NUM = r"(0|[1-9][0-9]{0,17})"  # non-negative, at most 18 digits, no leading zero
NAME = r"([A-Za-z0-9._+-]{1,64})"
RE_HEADER = re.compile(r"modelfleet-runner 1 " + NAME + " " + NAME, re.ASCII)
RE_LOAD = re.compile(r"load " + NUM, re.ASCII)
RE_FIRST = re.compile(r"first " + NUM, re.ASCII)
RE_SAMPLE = re.compile(NUM + " " + NUM + " " + NUM, re.ASCII)
RE_END = re.compile(r"end " + NUM, re.ASCII)

failures = []
passed = 0


def check(cond, what):
    global passed
    if cond:
        passed += 1
    else:
        failures.append(what)
        print("FAIL: " + what, flush=True)
    return cond


class BadOutput(Exception):
    pass


def read_npy(path):
    """(header dict, data bytes) of a .npy format 1.0/2.0 file."""
    with open(path, "rb") as f:
        b = f.read()
    if b[:6] != b"\x93NUMPY":
        raise ValueError(path + ": not a .npy file")
    if b[6] == 1:
        hlen, pre = struct.unpack_from("<H", b, 8)[0], 10
    else:
        hlen, pre = struct.unpack_from("<I", b, 8)[0], 12
    header = ast.literal_eval(b[pre : pre + hlen].decode("latin1"))
    return header, b[pre + hlen :]


def make_npy(descr, shape, data, fortran=False, version=1):
    """A .npy file image with a 64-byte aligned header, like numpy writes."""
    d = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (
        descr,
        "True" if fortran else "False",
        "(%s)" % "".join("%d, " % s for s in shape) if len(shape) != 1 else "(%d,)" % shape[0],
    )
    pre = 10 if version == 1 else 12
    pad = 64 - (pre + len(d) + 1) % 64
    text = (d + " " * (pad % 64) + "\n").encode("latin1")
    if version == 1:
        head = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text))
    else:
        head = b"\x93NUMPY" + bytes([version, 0]) + struct.pack("<I", len(text))
    return head + text + data


def run(runner, args, cwd, env=None):
    """(exit status, stdout bytes, stderr text) of one run of the runner."""
    cmd = [runner] + args
    if shutil.which("timeout"):
        cmd = ["timeout", "--kill-after=5", str(RUN_TIMEOUT_S)] + cmd
    p = subprocess.run(
        cmd,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        timeout=RUN_TIMEOUT_S + 30,
    )
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


def parse_output(out, n):
    """Validates a whole protocol output for n samples; returns
    (runtime, version, load_us, first_us, [(class, latency_us)])."""
    if len(out) > 64 * n + 4096:
        raise BadOutput("output is %d bytes, over the cap of %d" % (len(out), 64 * n + 4096))
    try:
        text = out.decode("ascii")
    except UnicodeDecodeError:
        raise BadOutput("output is not ASCII")
    if not text.endswith("\n"):
        raise BadOutput("output does not end with a newline")
    lines = text[:-1].split("\n")

    def line(i, pattern, what):
        if i >= len(lines):
            raise BadOutput("output ends before the %s line (line %d)" % (what, i + 1))
        m = pattern.fullmatch(lines[i])
        if not m:
            raise BadOutput("line %d is not a %s line: %r" % (i + 1, what, lines[i][:80]))
        return m

    m = line(0, RE_HEADER, "header")
    runtime, version = m.group(1), m.group(2)
    load_us = int(line(1, RE_LOAD, "load").group(1))
    first_us = int(line(2, RE_FIRST, "first").group(1))
    samples = []
    for i in range(n):
        m = line(3 + i, RE_SAMPLE, "sample %d" % i)
        if int(m.group(1)) != i:
            raise BadOutput("line %d: sample %s where %d was due" % (4 + i, m.group(1), i))
        samples.append((int(m.group(2)), int(m.group(3))))
    m = line(3 + n, RE_END, "end")
    if int(m.group(1)) != n:
        raise BadOutput("end %s, but there are %d samples" % (m.group(1), n))
    if len(lines) != n + 4:
        raise BadOutput("%d line(s) after end" % (len(lines) - n - 4))
    return runtime, version, load_us, first_us, samples


def self_test():
    """The validator itself refuses what the protocol calls invalid."""
    good = "modelfleet-runner 1 rt 1.0\nload 5\nfirst 7\n0 3 1\n1 0 2\nend 2\n"
    check(parse_output(good.encode(), 2)[4] == [(3, 1), (0, 2)], "validator: accepts a good output")
    bad = {
        "line after end": good + "x\n",
        "blank line after end": good + "\n",
        "no final newline": good[:-1],
        "CRLF": good.replace("\n", "\r\n"),
        "samples out of order": good.replace("0 3 1\n1 0 2", "1 0 2\n0 3 1"),
        "missing sample": good.replace("1 0 2\n", ""),
        "wrong end count": good.replace("end 2", "end 3"),
        "protocol 2": good.replace("runner 1", "runner 2"),
        "bad runtime name": good.replace(" rt ", " r/t "),
        "missing first": good.replace("first 7\n", ""),
        "two spaces": good.replace("0 3 1", "0  3 1"),
        "negative latency": good.replace("0 3 1", "0 3 -1"),
        "leading zero": good.replace("0 3 1", "0 03 1"),
        "19 digits": good.replace("load 5", "load " + "9" * 19),
        "trailing space": good.replace("load 5", "load 5 "),
        "non-ASCII": good.replace("rt", "r\u00e9"),
    }
    for what, text in bad.items():
        try:
            parse_output(text.encode("utf-8"), 2)
            check(False, "validator: refuses " + what)
        except BadOutput:
            check(True, "validator: refuses " + what)
    try:
        parse_output(good.encode() + b" " * 4096, 2)
        check(False, "validator: refuses an output over the cap")
    except BadOutput:
        check(True, "validator: refuses an output over the cap")


def snapshot(d):
    return sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(d))


def nearest_rank(sorted_values, p):
    k = max(1, -(-p * len(sorted_values) // 100))
    return sorted_values[k - 1]


def good_runs(runner, fixtures, runtime_want, labels, scratch):
    inputs = os.path.join(fixtures, "eval-inputs.npy")
    results = {}
    for model, want in EXPECT_CORRECT.items():
        before = snapshot(fixtures)
        rc, out, err = run(
            runner, ["--model", os.path.join(fixtures, model), "--inputs", inputs, "--warmup", "3"],
            scratch,
        )
        check(snapshot(fixtures) == before, model + ": the fixtures directory is unchanged")
        if not check(rc == 0, "%s: exit status 0 (got %d; stderr: %s)" % (model, rc, err[-500:])):
            continue
        try:
            runtime, version, load_us, first_us, samples = parse_output(out, len(labels))
        except BadOutput as e:
            check(False, "%s: valid protocol output: %s" % (model, e))
            continue
        check(True, model + ": valid protocol output")
        if runtime_want:
            check(runtime == runtime_want, "%s: runtime %s (got %s)" % (model, runtime_want, runtime))
        check(
            all(0 <= c <= 9 for c, _ in samples), model + ": every class is one of the 10 outputs"
        )
        correct = sum(1 for (c, _), y in zip(samples, labels) if c == y)
        check(
            correct == want,
            "%s: %d/%d correct (got %d/%d)" % (model, want, len(labels), correct, len(labels)),
        )
        lat = sorted(l for _, l in samples)
        print(
            "info: %-17s %s %s  top-1 %d/%d = %.2f%%  load %d us  first %d us  "
            "latency p50 %d us  p90 %d us  p99 %d us  max %d us"
            % (
                model,
                runtime,
                version,
                correct,
                len(labels),
                100.0 * correct / len(labels),
                load_us,
                first_us,
                statistics.median_low(lat),
                nearest_rank(lat, 90),
                nearest_rank(lat, 99),
                lat[-1],
            ),
            flush=True,
        )
        results[model] = [c for c, _ in samples]
    return results


def thread_and_warmup_runs(runner, fixtures, labels, scratch, classes):
    model = os.path.join(fixtures, "digits-fp32.onnx")
    inputs = os.path.join(fixtures, "eval-inputs.npy")
    # OPENCV_LOG_LEVEL=INFO: OpenCV logs INFO lines to std::cout; none may
    # reach the protocol output.
    chatty = dict(os.environ, OPENCV_LOG_LEVEL="INFO")
    for extra, env in (
        (["--threads", "1"], None),
        (["--warmup", "0"], None),
        (["--threads", "2", "--warmup", "1"], None),
        ([], chatty),
    ):
        args = ["--model", model, "--inputs", inputs]
        args += extra if "--warmup" in extra else extra + ["--warmup", "3"]
        rc, out, err = run(runner, args, scratch, env)
        what = "fp32 with " + (" ".join(extra) if extra else "OPENCV_LOG_LEVEL=INFO")
        if not check(rc == 0, "%s: exit status 0 (got %d; %s)" % (what, rc, err[-300:])):
            continue
        try:
            samples = parse_output(out, len(labels))[4]
        except BadOutput as e:
            check(False, "%s: valid protocol output: %s" % (what, e))
            continue
        if classes is not None:
            check(
                [c for c, _ in samples] == classes,
                what + ": the same classes as the default run",
            )


def refusals(runner, fixtures, scratch):
    """Bad inputs and models exit 1, malformed command lines exit 2, each with
    a message on stderr."""
    model = os.path.join(fixtures, "digits-fp32.onnx")
    inputs = os.path.join(fixtures, "eval-inputs.npy")
    header, data = read_npy(inputs)
    n, d = header["shape"]
    floats = struct.unpack("<%df" % (n * d), data)
    good = make_npy("<f4", (n, d), data)

    bad_files = {
        "truncated.npy": good[:-4],
        "header-only.npy": good[:20],
        "longer.npy": good + b"\0",
        "float64.npy": make_npy("<f8", (n, d), struct.pack("<%dd" % (n * d), *floats)),
        "bigendian.npy": make_npy(">f4", (n, d), struct.pack(">%df" % (n * d), *floats)),
        "fortran.npy": make_npy("<f4", (n, d), data, fortran=True),
        "empty.npy": make_npy("<f4", (0, d), b""),
        "onedim.npy": make_npy("<f4", (n * d,), data),
        "version3.npy": make_npy("<f4", (n, d), data, version=3),
        "badmagic.npy": b"\x93NUMPZ" + good[6:],
        "wrongwidth.npy": make_npy("<f4", (n * d // 32, 32), data),
    }
    for name, image in bad_files.items():
        path = os.path.join(scratch, name)
        with open(path, "wb") as f:
            f.write(image)
        rc, _, err = run(runner, ["--model", model, "--inputs", path, "--warmup", "0"], scratch)
        check(rc == 1 and err.strip() != "", "%s: exit 1 with a message (got %d)" % (name, rc))

    # The same data written as a version 2.0 file is fine.
    v2 = os.path.join(scratch, "version2.npy")
    with open(v2, "wb") as f:
        f.write(make_npy("<f4", (n, d), data, version=2))
    rc, out, err = run(runner, ["--model", model, "--inputs", v2, "--warmup", "0"], scratch)
    try:
        ok = rc == 0 and len(parse_output(out, n)[4]) == n
    except BadOutput:
        ok = False
    check(ok, "version2.npy: accepted (got %d: %s)" % (rc, err[-300:]))

    missing = os.path.join(scratch, "no-such-model.onnx")
    rc, _, err = run(runner, ["--model", missing, "--inputs", inputs, "--warmup", "0"], scratch)
    check(rc > 0 and err.strip() != "", "missing model: non-zero exit with a message (got %d)" % rc)
    rc, _, err = run(runner, ["--model", inputs, "--inputs", inputs, "--warmup", "0"], scratch)
    check(rc == 1 and err.strip() != "", "a model that is not ONNX: exit 1 (got %d)" % rc)
    none = os.path.join(scratch, "none.npy")
    rc, _, err = run(runner, ["--model", model, "--inputs", none, "--warmup", "0"], scratch)
    check(rc == 1 and err.strip() != "", "missing inputs: exit 1 (got %d)" % rc)

    usage = {
        "unknown option": ["--model", model, "--inputs", inputs, "--warmup", "0", "--batch", "1"],
        "missing value": ["--model", model, "--inputs", inputs, "--warmup"],
        "missing --warmup": ["--model", model, "--inputs", inputs],
        "negative warmup": ["--model", model, "--inputs", inputs, "--warmup", "-1"],
        "non-numeric warmup": ["--model", model, "--inputs", inputs, "--warmup", "3x"],
        "zero threads": ["--model", model, "--inputs", inputs, "--warmup", "0", "--threads", "0"],
        "repeated option": ["--model", model, "--model", model, "--inputs", inputs, "--warmup", "0"],
        "stray argument": ["--model", model, "--inputs", inputs, "--warmup", "0", "extra"],
    }
    for what, args in usage.items():
        rc, out, err = run(runner, args, scratch)
        check(
            rc == 2 and err.strip() != "" and out == b"",
            "%s: exit 2 with a usage message and no output (got %d)" % (what, rc),
        )


def main(argv):
    runtime_want = None
    if len(argv) >= 2 and argv[0] == "--runtime":
        runtime_want, argv = argv[1], argv[2:]
    if len(argv) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    runner, fixtures = os.path.abspath(argv[0]), os.path.abspath(argv[1])
    self_test()
    header, data = read_npy(os.path.join(fixtures, "eval-labels.npy"))
    if header["descr"] != "<i8" or header["fortran_order"] or len(header["shape"]) != 1:
        print("eval-labels.npy is not a 1-D '<i8' array", file=sys.stderr)
        return 1
    labels = list(struct.unpack("<%dq" % header["shape"][0], data))
    check(len(labels) == EXPECT_N, "eval-labels.npy holds %d labels" % EXPECT_N)

    with tempfile.TemporaryDirectory(prefix="mf-check-runner-") as scratch:
        results = good_runs(runner, fixtures, runtime_want, labels, scratch)
        thread_and_warmup_runs(runner, fixtures, labels, scratch, results.get("digits-fp32.onnx"))
        refusals(runner, fixtures, scratch)

    if failures:
        print("runner conformance FAILED: %d of %d checks" % (len(failures), len(failures) + passed))
        return 1
    print("runner conformance ok: %d checks" % passed)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
