#!/usr/bin/env python3
"""make_corpus.py - the crafting half of make_corpus.sh (Python stdlib only).

  make_corpus.py payload DIR               tiny source files for the seed packages
  make_corpus.py derive WORK CORPUS SIGNER the seeds: corpus/manifest/seed-*,
                                           corpus/archive/seed-*

`derive` copies the packages make_corpus.sh packed into WORK, derives broken
variants from them (tar surgery keeps the signature valid: it covers only
manifest.json) and signs hand-made manifests with `SIGNER sign FILE`. The
output depends only on its inputs: no clock, no randomness.
"""
import copy
import gzip
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import tarfile

MTIME = 1769860800  # 2026-01-31T12:00:00Z, as make_corpus.sh packs
FUZZ_ID = None  # the fuzz key id, read from a signed seed


# ---- .npy ----

def npy(descr, shape, data=b"", version=1, fortran=False, raw_dict=None):
    """A .npy file: magic, version, header length, dict padded to 64, data."""
    if raw_dict is None:
        raw_dict = (f"{{'descr': '{descr}', 'fortran_order': {fortran}, "
                    f"'shape': {tuple(shape)!r}, }}")
    pre = 10 if version == 1 else 12
    body = raw_dict.encode("latin-1")
    pad = (64 - (pre + len(body) + 1) % 64) % 64
    body += b" " * pad + b"\n"
    size = struct.pack("<H", len(body)) if version == 1 else struct.pack("<I", len(body))
    return b"\x93NUMPY" + bytes([version, 0]) + size + body + data


def payload(out):
    os.makedirs(out, exist_ok=True)
    files = {
        "net.onnx": b"tiny-net: not a real model; fuzz seeds never reach a runner\n",
        "inputs.npy": npy("<f4", (4, 2), struct.pack("<8f", *[i / 8 for i in range(8)])),
        "labels.npy": npy("<i8", (4,), struct.pack("<4q", 0, 1, 2, 1)),
        "readme.txt": b"seed\n",
        "empty.bin": b"",
        "zeros.bin": b"\0" * (192 << 10),
    }
    for name, data in files.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
        os.utime(os.path.join(out, name), (MTIME, MTIME))


# ---- tar assembly ----

tarfile.RECORDSIZE = tarfile.BLOCKSIZE  # no padding to 10 KiB records


def pad(data):
    return data + b"\0" * (-len(data) % 512)


def ti(name, size=0, kind=tarfile.REGTYPE, **kw):
    t = tarfile.TarInfo(name)
    t.size, t.type, t.mtime, t.mode = size, kind, MTIME, 0o644
    t.uid = t.gid = 0
    t.uname = t.gname = ""
    for k, v in kw.items():
        setattr(t, k, v)
    return t


def header(t, fmt=tarfile.PAX_FORMAT):
    return t.tobuf(fmt, "utf-8", "surrogateescape")


def reg(name, data, fmt=tarfile.PAX_FORMAT, **kw):
    """A regular-file entry: header(s) and padded data."""
    return header(ti(name, len(data), **kw), fmt) + pad(data)


def special(name, kind, fmt=tarfile.PAX_FORMAT, **kw):
    return header(ti(name, 0, kind, **kw), fmt)


def with_checksum(h):
    """Recomputes a ustar header block's checksum after surgery."""
    h = bytearray(h)
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def tar(blocks):
    return b"".join(blocks) + b"\0" * 1024


def entries(data):
    """[(name, bytes)] of a plain tar package."""
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        for m in tf.getmembers():
            out.append((m.name, tf.extractfile(m).read()))
    return out


def build(items, fmt=tarfile.PAX_FORMAT):
    return tar(reg(n, d, fmt) for n, d in items)


def zstd(data):
    return subprocess.run(["zstd", "-q", "-c", "-3", "--no-progress"], input=data,
                          stdout=subprocess.PIPE, check=True).stdout


def unzstd(data):
    return subprocess.run(["zstd", "-q", "-d", "-c"], input=data, stdout=subprocess.PIPE,
                          check=True).stdout


def b2(data):
    return hashlib.blake2b(data, digest_size=32).hexdigest()


# ---- manifests ----

def dump(obj):
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()


def manifest_for(base, files, **top):
    """base (a parsed manifest) listing `files` {path: bytes}, with overrides."""
    m = copy.deepcopy(base)
    m["files"] = [{"path": p, "size": len(d), "blake2b": b2(d)} for p, d in sorted(files.items())]
    m.update(top)
    return m


class Signer:
    def __init__(self, tool, work):
        self.tool, self.work = tool, work

    def __call__(self, manifest_bytes):
        path = os.path.join(self.work, "to-sign.json")
        with open(path, "wb") as f:
            f.write(manifest_bytes)
        return subprocess.run([self.tool, "sign", path], stdout=subprocess.PIPE,
                              check=True).stdout


def sig_line(key_id, sig):
    import base64
    return f"ed25519 {key_id} {base64.b64encode(sig).decode()}\n".encode()


def manifest_seeds(base, big):
    """{name: bytes} for corpus/manifest: manifests, manifest.sig texts, .npy heads."""
    s = {}

    def var(name, fn):
        m = copy.deepcopy(base)
        fn(m)
        s["json-" + name] = dump(m)

    def setp(path, value):
        def fn(m):
            keys = path.split(".")
            obj = m
            for k in keys[:-1]:
                obj = obj[int(k)] if isinstance(obj, list) else obj[k]
            last = keys[-1]
            if value is KeyError:
                del obj[last]
            elif isinstance(obj, list):
                obj[int(last)] = value
            else:
                obj[last] = value
        return fn

    # format versions
    def future(m):
        m["format_version"] = "1.1"
        m["signing_hint"] = {"algo": "ed25519", "rotations": [1, 2]}
        m["variant"]["accelerator"] = "npu"
        m["eval"]["warmup"] = 3
        m["thresholds"]["energy_mj"] = 12.5
        m["files"][0]["mode"] = "0644"
    var("v1.1-unknown-fields", future)
    var("v1.0-unknown-field", setp("signing_hint", "x"))
    var("v1.0-unknown-file-field", setp("files.0.mode", "0644"))
    var("v2.0", setp("format_version", "2.0"))
    var("v0.9", setp("format_version", "0.9"))
    for i, fv in enumerate(["1", "1.0.0", "01.0", "1.-1", " 1.0", "1.00", "1.4294967296", "1.x",
                            ""]):
        var(f"format-{i}", setp("format_version", fv))
    var("format-number", setp("format_version", 1.0))
    # metadata and budgets
    var("metadata-rich", setp("metadata", {
        "team": "vision", "nested": {"a": [1, 2.5, -0.0, 1e300, True, None, "x"], "b": {}},
        "unicode": "Gr\u00fc\u00dfe \u2603 \U0001F600", "escapes": "tab\there \"q\" \\ /",
        "big": 9223372036854775807, "small": -9223372036854775808,
        "digits": 0.12345678901234567, "tiny": 5e-324}))
    var("metadata-array", setp("metadata", [1, 2]))
    var("metadata-absent", setp("metadata", KeyError))
    var("budgets", lambda m: m["thresholds"].update(latency_p99_ms=12.5, memory_bytes=67108864))
    var("budget-latency-min", setp("thresholds.latency_p99_ms", 1e-6))
    var("budget-latency-max", setp("thresholds.latency_p99_ms", 3600000))
    var("budget-latency-zero", setp("thresholds.latency_p99_ms", 0))
    var("budget-latency-over", setp("thresholds.latency_p99_ms", 3600000.5))
    var("budget-memory-zero", setp("thresholds.memory_bytes", 0))
    var("budget-memory-2p53", setp("thresholds.memory_bytes", 2 ** 53))
    var("budget-memory-over", setp("thresholds.memory_bytes", 2 ** 53 + 1))
    var("budget-memory-real", setp("thresholds.memory_bytes", 1.5))
    var("thr-int", lambda m: m["thresholds"].update(min_accuracy=1, max_accuracy_drop=0))
    var("thr-precise", lambda m: m["thresholds"].update(min_accuracy=0.1234567890123456789,
                                                        max_accuracy_drop=0.99999999999999))
    var("thr-over", setp("thresholds.min_accuracy", 1.0000001))
    var("thr-negative", setp("thresholds.max_accuracy_drop", -0.01))
    var("thr-string", setp("thresholds.min_accuracy", "0.9"))
    var("thr-missing", setp("thresholds.min_accuracy", KeyError))
    # versions and times
    var("version-pre-build", setp("version", "1.0.0-alpha.1+build.5"))
    var("version-bad", setp("version", "1.0"))
    var("version-leading-zero", setp("version", "01.0.0"))
    var("agent-pre", setp("min_agent_version", "0.2.0-rc.1"))
    var("agent-bad", setp("min_agent_version", "latest"))
    for name, t in [("leap-second", "2026-06-30T23:59:60Z"), ("feb29", "2024-02-29T00:00:00Z"),
                    ("feb29-bad", "2025-02-29T00:00:00Z"), ("epoch", "1970-01-01T00:00:00Z"),
                    ("pre-epoch", "1969-12-31T23:59:59Z"), ("y1000", "1000-01-01T00:00:00Z"),
                    ("y9999", "9999-12-31T23:59:59Z"), ("offset", "2026-01-31T12:00:00+01:00"),
                    ("fraction", "2026-01-31T12:00:00.5Z"), ("lower-z", "2026-01-31t12:00:00z"),
                    ("month13", "2026-13-01T00:00:00Z")]:
        var("created-" + name, setp("created", t))
    # names
    var("model-dash", setp("model", "-net"))
    var("model-long", setp("model", "m" * 65))
    var("model-64", setp("model", "m" * 64))
    var("model-number", setp("model", 7))
    var("hardware-empty", setp("variant.hardware", []))
    var("hardware-many", setp("variant.hardware", [f"hw{i}" for i in range(40)]))
    var("hardware-dup", setp("variant.hardware", ["pi4", "pi4"]))
    var("hardware-nonstring", setp("variant.hardware", ["pi4", 5]))
    var("runtime-bad", setp("variant.runtime", "on nx"))
    var("variant-array", setp("variant", ["pi4"]))
    # files
    f0 = base["files"][0]
    var("files-empty", setp("files", []))
    var("files-object", setp("files", {"a": 1}))
    var("files-unsorted", lambda m: m["files"].reverse())
    var("files-dup", lambda m: m["files"].append(dict(f0)))
    var("files-many", lambda m: m["files"].extend(
        {"path": f"extra/f{i:03d}.bin", "size": i, "blake2b": "ab" * 32} for i in range(60)))
    for i, p in enumerate(["../escape", "/abs/file", "a//b", "a/./b", "a/", "manifest.json",
                           "manifest.sig", "sp ace", "x" * 256, "d/" * 100 + "f", "back\\slash",
                           "\u00e9t\u00e9", ".hidden", "..."]):
        var(f"path-{i}", lambda m, p=p: m["files"].append(
            {"path": p, "size": 1, "blake2b": "00" * 32}))
    var("hash-upper", setp("files.0.blake2b", f0["blake2b"].upper()))
    var("hash-short", setp("files.0.blake2b", f0["blake2b"][:-2]))
    var("size-negative", setp("files.0.size", -1))
    var("size-2p53", setp("files.0.size", 2 ** 53))
    var("size-2p64", setp("files.0.size", 2 ** 64))
    var("size-real", setp("files.0.size", 10.0))
    var("entry-unlisted", setp("entry", "model/other.onnx"))
    var("eval-inputs-unlisted", setp("eval.inputs", "eval/x.npy"))
    var("eval-metric", setp("eval.metric", "top5"))
    var("eval-n-zero", setp("eval.n", 0))
    var("eval-n-max", setp("eval.n", 2 ** 53))
    var("eval-missing", setp("eval", KeyError))
    var("string-nul", setp("model", "net\u0000x"))
    var("model-true", setp("model", True))
    var("runtime-null", setp("variant.runtime", None))
    var("files-0-false", setp("files.0", False))
    var("path-empty", setp("files.0.path", ""))

    # JSON-level
    text = dump(base).decode()
    s["json-valid"] = dump(base)
    s["json-big"] = big
    s["json-compact"] = json.dumps(base, separators=(",", ":")).encode()
    s["json-dup-key"] = text.replace('"model": ', '"model": "x", "model": ', 1).encode()
    s["json-trailing-comma"] = text.replace("\n}", ",\n}", 1).encode()
    s["json-truncated"] = text[: len(text) // 2].encode()
    s["json-bom"] = b"\xef\xbb\xbf" + text.encode()
    s["json-bad-utf8"] = text.replace('"tiny-net"', '"tiny\xff"').encode("latin-1")
    s["json-array"] = b"[1, 2, 3]\n"
    s["json-null"] = b"null"
    s["json-deep"] = b"{\"metadata\": " + b"[" * 3000 + b"]" * 3000 + b"}"
    s["json-empty"] = b""
    s["json-space"] = b" \n\t "
    s["json-two-docs"] = dump(base) + dump(base)

    # manifest.sig
    sig64 = bytes(range(64))
    s["sig-magic"] = b"modelfleet-signature v1\n"
    s["sig-one"] = b"modelfleet-signature v1\n" + sig_line(FUZZ_ID, sig64)
    s["sig-two"] = s["sig-one"] + sig_line("0123456789abcdef", sig64[::-1])
    s["sig-blank-lines"] = b"modelfleet-signature v1\n\n" + sig_line(FUZZ_ID, sig64) + b"\n\n"
    s["sig-no-newline"] = s["sig-one"].rstrip(b"\n")
    s["sig-crlf"] = s["sig-one"].replace(b"\n", b"\r\n")
    s["sig-v2"] = b"modelfleet-signature v2\n" + sig_line(FUZZ_ID, sig64)
    s["sig-upper-id"] = b"modelfleet-signature v1\n" + sig_line(FUZZ_ID.upper(), sig64)
    s["sig-short-id"] = b"modelfleet-signature v1\n" + sig_line("abc", sig64)
    s["sig-bad-b64"] = b"modelfleet-signature v1\ned25519 " + FUZZ_ID.encode() + b" !!!!\n"
    s["sig-63-bytes"] = b"modelfleet-signature v1\n" + sig_line(FUZZ_ID, sig64[:63])
    s["sig-double-space"] = s["sig-one"].replace(b" ", b"  ", 1)
    s["sig-rsa"] = s["sig-one"].replace(b"ed25519", b"rsa4096")
    s["sig-17"] = b"modelfleet-signature v1\n" + b"".join(
        sig_line("%016x" % i, sig64) for i in range(17))
    s["sig-16"] = b"modelfleet-signature v1\n" + b"".join(
        sig_line("%016x" % i, sig64) for i in range(16))
    s["sig-long-line"] = b"modelfleet-signature v1\n" + b"x" * 300 + b"\n"
    s["sig-nul"] = b"modelfleet-signature v1\n\0"

    # .npy headers
    s["npy-f4-2d"] = npy("<f4", (4, 2), b"\0" * 32)
    s["npy-i8-1d"] = npy("<i8", (4,), b"\0" * 32)
    s["npy-u1-3d"] = npy("|u1", (2, 3, 4))
    s["npy-b1-0d"] = npy("|b1", ())
    s["npy-f8-v2"] = npy("<f8", (3, 1), version=2)
    s["npy-i2-v3"] = npy("<i2", (5,), version=3)
    s["npy-fortran"] = npy("<f4", (2, 2), fortran=True)
    s["npy-big-endian"] = npy(">f4", (2,))
    s["npy-complex"] = npy("<c8", (2,))
    s["npy-object"] = npy("|O", (2,))
    s["npy-9-dims"] = npy("<f4", (1,) * 9)
    s["npy-8-dims"] = npy("<f4", (2,) * 8)
    s["npy-overflow"] = npy("<f8", (2 ** 62, 4))
    s["npy-zero-dim"] = npy("<f8", (2 ** 63, 0, 2 ** 63))
    s["npy-huge-dim"] = npy("<u1", (18446744073709551615,))
    s["npy-double-quotes"] = npy(None, None, raw_dict='{"descr": "<f4", "fortran_order": False, '
                                 '"shape": (3,)}')
    s["npy-reordered"] = npy(None, None, raw_dict="{'shape': (3, 4), 'fortran_order': False, "
                             "'descr': '<i4'}")
    s["npy-missing-key"] = npy(None, None, raw_dict="{'descr': '<f4', 'shape': (3,)}")
    s["npy-extra-key"] = npy(None, None, raw_dict="{'descr': '<f4', 'fortran_order': False, "
                             "'shape': (3,), 'x': 1}")
    s["npy-dup-key"] = npy(None, None, raw_dict="{'descr': '<f4', 'descr': '<f4', "
                           "'fortran_order': False, 'shape': (3,)}")
    s["npy-v4"] = b"\x93NUMPY\x04\x00" + s["npy-f4-2d"][8:]
    s["npy-truncated"] = s["npy-f4-2d"][:40]
    s["npy-hlen-huge"] = b"\x93NUMPY\x02\x00\xff\xff\xff\x7f{}"
    return s


# ---- archives ----

def archive_seeds(work, sign):
    def read(name):
        with open(os.path.join(work, name), "rb") as f:
            return f.read()

    s = {}
    for name in ["signed", "signed-zstd", "unsigned", "unsigned-zstd", "signed-budgets",
                 "signed-empty-file", "signed-by-sign", "signed-needs-agent-9",
                 "signed-zstd-big", "real-digits-int8"]:
        s[name] = read(name + ".mfpkg")
    good = s["signed"]
    items = entries(good)
    (mname, mjson), (sname, msig), payload = items[0], items[1], items[2:]
    assert (mname, sname) == ("manifest.json", "manifest.sig")
    base = json.loads(mjson)
    files = dict(payload)
    net = "model/net.onnx"

    # other tar dialects of the good package, and order
    s["fmt-gnu"] = build(items, tarfile.GNU_FORMAT)
    s["fmt-ustar"] = build(items, tarfile.USTAR_FORMAT)
    s["fmt-pax"] = build(items, tarfile.PAX_FORMAT)
    s["payload-reordered"] = build(items[:2] + payload[::-1])
    s["no-end-blocks"] = good[: good.rindex(pad(payload[-1][1])) + len(pad(payload[-1][1]))]

    # truncated and damaged containers
    for cut in [100, 511, 512, 700, 1536, len(good) // 2, len(good) - 1024, len(good) - 1]:
        s[f"trunc-{cut}"] = good[:cut]
    z = s["signed-zstd"]
    s["trunc-zstd-half"] = z[: len(z) // 2]
    s["trunc-zstd-end"] = z[:-8]
    s["zstd-of-text"] = zstd(b"this is not a tar archive\n" * 4)
    s["zstd-of-zeros"] = zstd(b"\0" * 2048)
    s["zstd-magic-only"] = b"\x28\xb5\x2f\xfd"
    s["zstd-twice"] = zstd(z)
    s["gzip"] = gzip.compress(good, mtime=0)
    s["empty"] = b""
    s["zero-block"] = b"\0" * 512
    s["end-blocks"] = b"\0" * 1024
    s["text"] = b"modelfleet package? no.\n"
    bad = bytearray(good)
    bad[100] ^= 0x01  # mode field of manifest.json's (pax) header: checksum breaks
    s["bad-checksum"] = bytes(bad)

    # layout
    s["layout-sig-first"] = build([items[1], items[0]] + payload)
    s["layout-manifest-only"] = build(items[:1])
    s["layout-no-manifest"] = build(payload)
    s["layout-manifest-third"] = build([payload[0], items[0], items[1]] + payload[1:])
    s["layout-manifest-again"] = build(items + [items[0]])
    s["layout-sig-again"] = build(items + [items[1]])
    s["layout-sig-huge"] = tar([reg(mname, mjson), reg(sname, b"x" * 5000)] +
                               [reg(n, d) for n, d in payload])
    s["layout-manifest-dir"] = tar([special("manifest.json", tarfile.DIRTYPE)] +
                                   [reg(n, d) for n, d in items[1:]])
    s["layout-sig-symlink"] = tar([reg(mname, mjson),
                                   special(sname, tarfile.SYMTYPE, linkname="/etc/passwd")] +
                                  [reg(n, d) for n, d in payload])

    # signatures
    def resig(text, its=items):
        return build([its[0], ("manifest.sig", text)] + its[2:])
    sig64 = bytes(range(64))
    real_line = msig.split(b"\n")[1] + b"\n"
    s["sig-empty"] = resig(b"")
    s["sig-unknown-key"] = resig(b"modelfleet-signature v1\n" + sig_line("0123456789abcdef", sig64))
    s["sig-bad"] = resig(b"modelfleet-signature v1\n" + sig_line(FUZZ_ID, sig64))
    s["sig-good-and-unknown"] = resig(msig + sig_line("0123456789abcdef", sig64))
    s["sig-unknown-and-good"] = resig(b"modelfleet-signature v1\n" +
                                      sig_line("fedcba9876543210", sig64) + real_line)
    s["sig-good-then-bad"] = resig(msig + sig_line(FUZZ_ID, sig64))
    s["sig-v2"] = resig(msig.replace(b"v1", b"v2", 1))
    s["sig-17"] = resig(b"modelfleet-signature v1\n" + real_line * 17)
    s["sig-garbage"] = resig(b"\x00\x01garbage")
    s["sig-tampered-manifest"] = build([(mname, mjson.replace(b"0.9", b"0.1", 1))] + items[1:])
    s["sig-manifest-extra-space"] = build([(mname, mjson + b" ")] + items[1:])

    # payload entries
    def swap(name, data):
        return [(n, data if n == name else d) for n, d in payload]
    flipped = bytearray(files[net])
    flipped[0] ^= 0x20
    s["payload-hash-mismatch"] = build(items[:2] + swap(net, bytes(flipped)))
    s["payload-longer"] = build(items[:2] + swap(net, files[net] + b"!"))
    s["payload-shorter"] = build(items[:2] + swap(net, files[net][:-1]))
    s["payload-unlisted"] = build(items + [("model/extra.bin", b"extra")])
    s["payload-missing"] = build(items[:-1])
    s["payload-duplicate"] = build(items + [payload[0]])
    s["payload-none"] = build(items[:2])
    for kind, name, kw in [
            ("symlink", tarfile.SYMTYPE, {"linkname": "/etc/passwd"}),
            ("symlink-rel", tarfile.SYMTYPE, {"linkname": "../../../etc/passwd"}),
            ("hardlink", tarfile.LNKTYPE, {"linkname": "eval/labels.npy"}),
            ("dir", tarfile.DIRTYPE, {}),
            ("fifo", tarfile.FIFOTYPE, {}),
            ("chardev", tarfile.CHRTYPE, {"devmajor": 1, "devminor": 3}),
            ("blockdev", tarfile.BLKTYPE, {"devmajor": 8, "devminor": 0}),
            ("contiguous", tarfile.CONTTYPE, {})]:
        blocks = [reg(n, d) for n, d in items[:2]]
        for n, d in payload:
            blocks.append(special(n, name, **kw) if n == net else reg(n, d))
        s["type-" + kind] = tar(blocks)
    s["type-dir-then-files"] = tar([reg(n, d) for n, d in items[:2]] +
                                   [special("model", tarfile.DIRTYPE),
                                    special("model/", tarfile.DIRTYPE)] +
                                   [reg(n, d) for n, d in payload])
    for i, p in enumerate(["../escape.txt", "/etc/cron.d/x", "model/../../x", "./model/net.onnx",
                           "model//net.onnx", "model/net.onnx/", "d/" * 150 + "f",
                           "\u00e9t\u00e9.bin", "model\\net.onnx", ""]):
        s[f"path-{i}"] = build(items + [(p, b"hostile")])
    # pax extended headers
    pax = lambda n, d, h: header(ti(n, len(d), pax_headers=h)) + pad(d)  # noqa: E731
    s["pax-path-override"] = tar([reg(n, d) for n, d in items[:2]] +
                                 [pax("innocent", d, {"path": n}) if n == net else reg(n, d)
                                  for n, d in payload])
    s["pax-path-escape"] = tar([reg(n, d) for n, d in items] +
                               [pax("innocent", b"x", {"path": "../../escape"})])
    s["pax-size-override"] = tar([reg(n, d) for n, d in items[:2]] +
                                 [pax(n, d, {"size": str(len(d) + 4096)}) if n == net
                                  else reg(n, d) for n, d in payload])
    s["pax-linkpath"] = tar([reg(n, d) for n, d in items[:2]] +
                            [pax(n, d, {"linkpath": "/etc/passwd"}) if n == net else reg(n, d)
                             for n, d in payload])
    glob = tarfile.TarInfo._create_pax_generic_header({"comment": "global"}, tarfile.XGLTYPE,
                                                      "utf-8")
    s["pax-global-first"] = glob + build(items)
    s["pax-global-middle"] = tar([reg(n, d) for n, d in items[:2]] + [glob] +
                                 [reg(n, d) for n, d in payload])
    d = files[net]

    def sparse(stored, mapping, minor_1=True):
        """GNU sparse in pax: format 0.1 (map in the header) or 1.0 (map in the data)."""
        if minor_1:
            h = {"GNU.sparse.numblocks": str(len(mapping) // 2), "GNU.sparse.name": net,
                 "GNU.sparse.size": str(len(d)), "GNU.sparse.map": ",".join(map(str, mapping))}
            return pax("GNUSparseFile.0/net.onnx", stored, h)
        text = "".join(f"{v}\n" for v in [len(mapping) // 2] + mapping).encode()
        h = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": net,
             "GNU.sparse.realsize": str(len(d))}
        return pax("GNUSparseFile.0/net.onnx", pad(text) + stored, h)
    for tag, stored, mapping, minor_1 in [("0.1-no-holes", d, [0, len(d)], True),
                                          ("0.1-hole", d[8:], [8, len(d) - 8], True),
                                          ("1.0-no-holes", d, [0, len(d)], False),
                                          ("1.0-hole", d[:8], [0, 8], False)]:
        s["sparse-" + tag] = tar([reg(n, dd) for n, dd in items[:2]] +
                                 [sparse(stored, mapping, minor_1) if n == net else reg(n, dd)
                                  for n, dd in payload])
    # raw header surgery on the first payload entry
    h = bytearray(header(ti(payload[0][0], len(payload[0][1])), tarfile.USTAR_FORMAT))
    huge = bytearray(h)
    huge[124:136] = b"\x80" + b"\0" * 3 + struct.pack(">Q", 2 ** 62)
    s["size-base256-huge"] = tar([reg(n, dd) for n, dd in items[:2]] +
                                 [with_checksum(huge) + pad(payload[0][1])] +
                                 [reg(n, dd) for n, dd in payload[1:]])
    neg = bytearray(h)
    neg[124:136] = b"\xff" * 12
    s["size-base256-negative"] = tar([reg(n, dd) for n, dd in items[:2]] +
                                     [with_checksum(neg) + pad(payload[0][1])] +
                                     [reg(n, dd) for n, dd in payload[1:]])
    octal = bytearray(h)
    octal[124:136] = b"77777777777\0"
    s["size-octal-8g"] = tar([reg(n, dd) for n, dd in items[:2]] +
                             [with_checksum(octal) + pad(payload[0][1])])

    # hand-made manifests, signed with the fuzz key
    def signed(fs, order=None, **top):
        m = dump(manifest_for(base, fs, **top))
        names = order if order is not None else sorted(fs)
        return build([("manifest.json", m), ("manifest.sig", sign(m))] +
                     [(n, fs[n]) for n in names])
    future = manifest_for(base, files, format_version="1.1", future_field={"x": [1, 2]})
    future["thresholds"]["energy_mj"] = 3.5
    fm = dump(future)
    s["signed-v1.1-unknown"] = build([("manifest.json", fm), ("manifest.sig", sign(fm))] + payload)
    s["signed-v1.1-unknown-zstd"] = zstd(s["signed-v1.1-unknown"])
    s["signed-v2.0"] = signed(files, format_version="2.0")
    s["signed-schema-error"] = signed(files, eval=dict(base["eval"], metric="top5"))
    s["signed-not-json"] = build([("manifest.json", b"{not json"),
                                  ("manifest.sig", sign(b"{not json"))] + payload)
    s["signed-empty-manifest"] = build([("manifest.json", b""), ("manifest.sig", sign(b""))])
    over = manifest_for(base, files)
    over["files"].append({"path": "big.bin", "size": 2 ** 40, "blake2b": "00" * 32})
    om = dump(over)
    s["signed-over-budget"] = build([("manifest.json", om), ("manifest.sig", sign(om))] + payload)
    deep = dict(files)
    deep["a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p.bin"] = b"deep"
    deep["a/b/c/other.bin"] = b"other"
    s["signed-deep-dirs"] = signed(deep)
    many = dict(files)
    many.update({f"extra/f{i:02d}.bin": bytes([i]) * i for i in range(16)})
    s["signed-many-files"] = signed(many)
    conflict = dict(files, **{"x": b"file", "x/y": b"nested"})
    s["signed-dir-after-file"] = signed(conflict)
    s["signed-file-after-dir"] = signed(conflict, order=["x/y", "x"] + sorted(files))
    same = dict(files, **{"copy/a.bin": b"same", "copy/b.bin": b"same"})
    s["signed-same-content"] = signed(same)
    s["signed-missing-entry"] = signed(dict(files, **{"late.bin": b"late"}), order=sorted(files))
    s["signed-lying-size"] = build([(mname, dump(manifest_for(base, dict(files, **{
        "z.bin": b"12345678"})))), ("manifest.sig", b"")] + payload + [("z.bin", b"1234")])
    return s


def derive(work, corpus, tool):
    global FUZZ_ID
    sign = Signer(tool, work)
    with open(os.path.join(work, "fuzz.pub")) as f:
        FUZZ_ID = [ln.split()[1] for ln in f if ln.startswith("key-id:")][0]
    arch = archive_seeds(work, sign)
    good = entries(arch["signed"])
    big = entries(arch["signed-budgets"])[0][1]
    base = json.loads(good[0][1])
    man = manifest_seeds(base, big)
    man["sig-real"] = good[1][1]
    for name in ["real-digits-int8"]:
        data = arch[name]
        if data[:4] == b"\x28\xb5\x2f\xfd":
            data = unzstd(data)
        man["json-pkg-" + name] = entries(data)[0][1]
    for sub, seeds in [("manifest", man), ("archive", arch)]:
        d = os.path.join(corpus, sub)
        os.makedirs(d, exist_ok=True)
        for old in os.listdir(d):
            if old.startswith("seed-"):
                os.unlink(os.path.join(d, old))
        for name, data in sorted(seeds.items()):
            with open(os.path.join(d, "seed-" + name), "wb") as f:
                f.write(data)
        print(f"make_corpus: {len(seeds)} seeds in {d}")


def main(argv):
    if len(argv) == 3 and argv[1] == "payload":
        payload(argv[2])
    elif len(argv) == 5 and argv[1] == "derive":
        derive(argv[2], argv[3], argv[4])
    else:
        sys.exit("usage: make_corpus.py payload DIR | derive WORK CORPUS SIGNER")


if __name__ == "__main__":
    main(sys.argv)
