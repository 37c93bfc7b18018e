#!/usr/bin/python3
"""mfpkg_py.py — an independent implementation of the .mfpkg format, written
from docs/package-format.md alone (not from the C sources), to check that the
document pins the format: packages it packs must verify with `modelfleet
verify` (and be byte-identical to `modelfleet pack` output for the same
inputs), and packages `modelfleet pack` makes must verify here.

Standard library only, plus an Ed25519 module: Debian's python3-cryptography
(preferred) or python3-nacl. Run it with /usr/bin/python3.

  mfpkg_py.py keyinfo KEYFILE
  mfpkg_py.py pack [--key K.key] --name N --version V --hardware HW[,HW] \
      --model F --eval-inputs F --eval-labels F --min-accuracy X [options] \
      --created T --out PKG [--tar-style pinned|tarfile]
  mfpkg_py.py verify --pubkey K.pub [--pubkey ...] [--disk-budget BYTES] PKG
  mfpkg_py.py entries PKG          (name, size, BLAKE2b-256 of each entry; no checks)

Exit codes: 0 success, 1 refused/failed (one line on stderr:
"mfpkg_py <cmd>: <token>: <where>: <what>"), 2 usage error.
"""

import argparse
import base64
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

# ---- Ed25519 (python3-cryptography, else python3-nacl) ----

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization as _ser
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (Ed25519PrivateKey,
                                                                   Ed25519PublicKey)

    ED25519_BACKEND = "cryptography"

    def ed25519_public_from_seed(seed):
        k = Ed25519PrivateKey.from_private_bytes(seed)
        return k.public_key().public_bytes(_ser.Encoding.Raw, _ser.PublicFormat.Raw)

    def ed25519_sign(seed, msg):
        return Ed25519PrivateKey.from_private_bytes(seed).sign(msg)

    def ed25519_verify(pk, sig, msg):
        try:
            Ed25519PublicKey.from_public_bytes(pk).verify(sig, msg)
            return True
        except (InvalidSignature, ValueError):
            return False

except ImportError:  # pragma: no cover - depends on the host
    try:
        import nacl.exceptions
        import nacl.signing

        ED25519_BACKEND = "nacl"

        def ed25519_public_from_seed(seed):
            return bytes(nacl.signing.SigningKey(seed).verify_key)

        def ed25519_sign(seed, msg):
            return nacl.signing.SigningKey(seed).sign(msg).signature

        def ed25519_verify(pk, sig, msg):
            try:
                nacl.signing.VerifyKey(pk).verify(msg, sig)
                return True
            except (nacl.exceptions.BadSignatureError, ValueError):
                return False

    except ImportError:
        ED25519_BACKEND = None

# ---- constants from the spec ----

MANIFEST_MAX = 1 << 20  # §2.2
SIG_FILE_MAX = 4096  # §2.2, §6.1
SIG_MAX_COUNT = 16  # §6.1
SIG_CONTEXT = b"modelfleet-manifest-v1\n"  # §6.2
SIG_MAGIC = "modelfleet-signature v1"
KEY_SECRET_MAGIC = "modelfleet-secret-key v1"  # §7.1
KEY_PUBLIC_MAGIC = "modelfleet-public-key v1"
KEY_FILE_MAX = 4096  # §7.3
FILES_MAX = 4096  # §5.2
INT_MAX = 1 << 53  # §5.2
NAME_MAX = 64  # §3.2
PATH_MAX = 255  # §3.1
SEMVER_MAX = 127  # §5.4
NPY_HEAD_MAX = 16384  # §8.1
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # §2.1
USTAR_NUM_MAX = 8**11  # §2.5: 11 octal digits

ERR_TEXT = {  # token -> mf_strerror text (§9)
    "io": "input/output error",
    "usage": "invalid argument",
    "parse": "malformed input",
    "schema": "invalid field",
    "version": "unsupported format version",
    "too_large": "over the size cap",
    "not_package": "not a modelfleet package",
    "truncated": "truncated archive",
    "layout": "wrong package layout",
    "unsigned": "package is not signed",
    "unknown_key": "signed by an unknown key",
    "bad_signature": "bad signature",
    "unsafe_path": "unsafe path",
    "entry_type": "forbidden entry type",
    "duplicate": "duplicate entry",
    "unlisted": "entry not listed in the manifest",
    "missing": "listed file missing",
    "size_mismatch": "size mismatch",
    "hash_mismatch": "hash mismatch",
    "disk_budget": "over the disk budget",
    "exists": "already exists",
    "not_found": "not found",
    "key": "invalid key file",
}


class MfError(Exception):
    def __init__(self, token, where, what):
        super().__init__(token, where, what)
        self.token, self.where, self.what = token, where, what

    def line(self):
        return "%s: %s: %s" % (self.token, self.where, self.what) if self.where else "%s: %s" % (
            self.token, self.what)


def blake2b256(data=b""):
    """§4: BLAKE2b, unkeyed, 32-byte digest (not BLAKE2b-512 truncated)."""
    return hashlib.blake2b(data, digest_size=32)


# ---- base64 (§6.1: canonical, padded, standard alphabet) ----

_B64_RE = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")


def b64decode_canonical(text, want_len):
    if not _B64_RE.fullmatch(text) or len(text) % 4:
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        return None
    if base64.b64encode(raw).decode("ascii") != text or len(raw) != want_len:
        return None
    return raw


# ---- key files (§7) ----


def key_id(pk):
    """§7.2: hex of the first 8 bytes of BLAKE2b-256(public key)."""
    return blake2b256(pk).digest()[:8].hex()


def _key_parse(data, magic, field, nbytes, where):
    if len(data) > KEY_FILE_MAX:
        raise MfError("key", where, "not a modelfleet key file (too large)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise MfError("key", where, "not UTF-8 text")
    lines = text.split("\n")
    # Exactly three lines; the third may lack its newline; nothing after it.
    if len(lines) == 4 and lines[3] == "":
        lines = lines[:3]
    if len(lines) > 3:
        raise MfError("key", where, "unexpected text after line 3")
    while len(lines) < 3:
        lines.append("")
    for i, ln in enumerate(lines):
        if len(ln.encode("utf-8")) >= 256:
            raise MfError("key", where, "line %d is too long" % (i + 1))
    if lines[0] != magic:
        if lines[0].startswith(magic[:-1]):
            raise MfError("version", where, "key file version '%s' is not supported" % lines[0])
        raise MfError("key", where, "first line must be '%s'" % magic)
    if not lines[1].startswith("key-id: ") or len(lines[1]) - 8 != 16:
        raise MfError("key", where, "second line must be 'key-id: <16 hex>'")
    kid = lines[1][8:]
    prefix = field + ": "
    if not lines[2].startswith(prefix):
        raise MfError("key", where, "third line must be '%s: <base64>'" % field)
    raw = b64decode_canonical(lines[2][len(prefix):], nbytes)
    if raw is None:
        raise MfError("key", where, "%s is not %d bytes of base64" % (field, nbytes))
    return kid, raw


def load_secret_key(path):
    """Returns (seed, public key, key id)."""
    with open(path, "rb") as f:
        data = f.read(KEY_FILE_MAX + 1)
    kid, sk = _key_parse(data, KEY_SECRET_MAGIC, "secret-key", 64, path)
    seed = sk[:32]
    pk = ed25519_public_from_seed(seed)  # §7.2: derived from the seed
    if key_id(pk) != kid:
        raise MfError("key", path, "key-id %s does not match the key (%s)" % (kid, key_id(pk)))
    return seed, pk, kid


def load_public_key(path):
    """Returns (public key, key id)."""
    with open(path, "rb") as f:
        data = f.read(KEY_FILE_MAX + 1)
    kid, pk = _key_parse(data, KEY_PUBLIC_MAGIC, "public-key", 32, path)
    if key_id(pk) != kid:
        raise MfError("key", path, "key-id %s does not match the key (%s)" % (kid, key_id(pk)))
    return pk, kid


# ---- names, paths, versions, times (§3, §5.4, §5.5) ----

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_COMPONENT_RE = re.compile(r"^[A-Za-z0-9._-]+$")


def name_ok(s):
    return 1 <= len(s) <= NAME_MAX and bool(_NAME_RE.fullmatch(s))


def path_problem(p):
    """None if p is a valid payload path (§3.1), else the reason."""
    if p == "":
        return "is empty"
    if p.startswith("/"):
        return "is an absolute path"
    if len(p.encode("utf-8", "surrogateescape")) > PATH_MAX:
        return "is longer than 255 bytes"
    if p in ("manifest.json", "manifest.sig"):
        return "is a reserved name"
    for c in p.split("/"):
        if c == "..":
            return "has a '..' component"
        if c in ("", "."):
            return "has an empty or '.' component"
        if not _COMPONENT_RE.fullmatch(c) or not c.isascii():
            return "has a character outside [A-Za-z0-9._-/]"
    return None


_SEMVER_NUM = r"(0|[1-9][0-9]*)"
_SEMVER_PRE_ID = r"(0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_SEMVER_RE = re.compile(r"^%s\.%s\.%s(-%s(\.%s)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$" %
                        (_SEMVER_NUM, _SEMVER_NUM, _SEMVER_NUM, _SEMVER_PRE_ID, _SEMVER_PRE_ID))


def semver_ok(s):
    m = _SEMVER_RE.fullmatch(s) if len(s) <= SEMVER_MAX and s.isascii() else None
    return bool(m) and all(int(m.group(i)) < 2**64 for i in (1, 2, 3))


_TIME_RE = re.compile(r"^([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z$")
_MDAYS = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]


def _days_from_civil(y, m, d):
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def time_parse(s):
    """§5.5: exactly YYYY-MM-DDTHH:MM:SSZ -> seconds since the epoch, or None."""
    m = _TIME_RE.fullmatch(s) if s.isascii() else None
    if not m:
        return None
    y, mo, d, h, mi, sec = (int(g) for g in m.groups())
    if not (y >= 1970 and 1 <= mo <= 12 and 1 <= d <= _MDAYS[mo - 1] and h <= 23 and mi <= 59
            and sec <= 59):
        return None
    leap = (y % 4 == 0 and y % 100 != 0) or y % 400 == 0
    if mo == 2 and d == 29 and not leap:
        return None
    return _days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec


def time_format(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


# ---- JSON as the manifest needs it (§5.1, §5.6) ----


class _JsonReject(Exception):
    pass


def _pairs(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise _JsonReject("duplicate object key '%s'" % k)
        d[k] = v
    return d


def _int(s):
    v = int(s)
    if not -(2**63) <= v < 2**63:
        raise _JsonReject("too big integer")
    return v


def _float(s):
    v = float(s)
    if v in (float("inf"), float("-inf")):
        raise _JsonReject("real number overflow")
    return v


def _const(s):
    raise _JsonReject("invalid token '%s'" % s)


def _check_strings(v):
    if isinstance(v, str):
        if "\x00" in v:
            raise _JsonReject("\\u0000 is not allowed")
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise _JsonReject("invalid Unicode (lone surrogate)")
    elif isinstance(v, dict):
        for k, x in v.items():
            _check_strings(k)
            _check_strings(x)
    elif isinstance(v, list):
        for x in v:
            _check_strings(x)


def json_load_strict(data):
    """§5.1. Returns the value or raises MfError('parse')."""
    try:
        text = data.decode("utf-8")
        if text.startswith("\ufeff"):
            raise _JsonReject("byte-order mark")
        v = json.loads(text, object_pairs_hook=_pairs, parse_int=_int, parse_float=_float,
                       parse_constant=_const)
        if not isinstance(v, (dict, list)):
            raise _JsonReject("'[' or '{' expected")
        _check_strings(v)
        return v
    except (UnicodeDecodeError, ValueError, _JsonReject, RecursionError) as e:
        raise MfError("parse", "manifest.json", "invalid JSON: %s" % e)


_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n",
                 "\r": "\\r", "\t": "\\t"}


def json_string(s):
    """§5.6: UTF-8, only '"', '\\' and characters below U+0020 escaped (uppercase hex)."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch in _JSON_ESCAPES:
            out.append(_JSON_ESCAPES[ch])
        elif o < 0x20:
            out.append("\\u%04X" % o)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def json_real(x):
    """§5.6: printf("%.12g"), '.0' appended if neither '.' nor 'e', exponent without
    '+' and leading zeros."""
    s = "%.12g" % x
    if "." not in s and "e" not in s:
        s += ".0"
    if "e" in s:
        mant, exp = s.split("e")
        neg = exp.startswith("-")
        digits = exp.lstrip("+-").lstrip("0") or "0"
        s = mant + "e" + ("-" if neg else "") + digits
    return s


def json_dump(v, indent=0):
    """§5.6: 2-space indentation, one member/element per line, '": "' separator."""
    pad = " " * (indent + 2)
    if isinstance(v, dict):
        if not v:
            return "{}"
        items = ["%s%s: %s" % (pad, json_string(k), json_dump(x, indent + 2)) for k, x in v.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    if isinstance(v, list):
        if not v:
            return "[]"
        items = [pad + json_dump(x, indent + 2) for x in v]
        return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return json_real(v)
    if isinstance(v, str):
        return json_string(v)
    raise TypeError(type(v))


# ---- manifest validation (§5.2, §5.3, §5.8) ----

_FORMAT_RE = re.compile(r"^(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
KNOWN = {
    "": {"format_version", "model", "version", "created", "variant", "entry", "files", "eval",
         "thresholds", "min_agent_version", "metadata"},
    "variant": {"hardware", "runtime"},
    "files": {"path", "size", "blake2b"},
    "eval": {"inputs", "labels", "metric", "n"},
    "thresholds": {"min_accuracy", "max_accuracy_drop", "latency_p99_ms", "memory_bytes"},
}


def _tname(v):
    if v is None:
        return "nothing (the field is missing)"
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    return "null"


def _is_int(v):
    return type(v) is int


def _is_num(v):
    return type(v) in (int, float)


class _Missing:
    pass


def manifest_parse(data):
    """Validates manifest bytes; returns the parsed dict plus 'files_by_path'."""
    if len(data) > MANIFEST_MAX:
        raise MfError("too_large", "manifest.json", "is %d bytes; the cap is %d" %
                      (len(data), MANIFEST_MAX))
    root = json_load_strict(data)

    def fail(token, where, what):
        raise MfError(token, "manifest.json: " + where if where else "manifest.json", what)

    def get(obj, key):
        return obj.get(key, _Missing) if isinstance(obj, dict) else _Missing

    def want(path, v, what):
        fail("schema", path, "expected %s, got %s" % (what, _tname(None if v is _Missing else v)))

    def string(obj, prefix, key):
        v = get(obj, key)
        if not isinstance(v, str):
            want(prefix + key, v, "a string")
        return v

    def uint(obj, prefix, key, optional=False):
        v = get(obj, key)
        if v is _Missing and optional:
            return None
        if not _is_int(v):
            want(prefix + key, v, "an integer")
        if v < 0 or v > INT_MAX:
            fail("schema", prefix + key, "%d is out of range" % v)
        return v

    def number(obj, prefix, key, lo, hi, optional=False):
        v = get(obj, key)
        if v is _Missing and optional:
            return None
        if not _is_num(v):
            want(prefix + key, v, "a number")
        if not lo <= v <= hi:
            fail("schema", prefix + key, "%g is outside [%g, %g]" % (v, lo, hi))
        return v

    def obj_field(key):
        v = get(root, key)
        if not isinstance(v, dict):
            want(key, v, "an object")
        return v

    def keys(where, obj, known):
        if strict:
            for k in obj:
                if k not in known:
                    fail("schema", where, "unknown field '%s' in format 1.0" % k)

    def name(where, s):
        if not name_ok(s):
            fail("schema", where, "'%s' is not a valid name" % s)

    if not isinstance(root, dict):
        want("", root, "a JSON object")
    fv = get(root, "format_version")
    if not isinstance(fv, str):
        want("format_version", fv, 'a string such as "1.0"')
    m = _FORMAT_RE.fullmatch(fv)
    if not m:
        fail("schema", "format_version", "'%s' is not MAJOR.MINOR" % fv)
    major, minor = int(m.group(1)), int(m.group(2))
    if major != 1:
        fail("version", "format_version", "manifest format %s is not supported" % fv)
    strict = minor <= 0
    keys("", root, KNOWN[""])
    name("model", string(root, "", "model"))
    if not semver_ok(string(root, "", "version")):
        fail("schema", "version", "not a semantic version")
    if time_parse(string(root, "", "created")) is None:
        fail("schema", "created", "expected an RFC 3339 UTC time such as 2026-01-31T12:00:00Z")

    variant = obj_field("variant")
    keys("variant", variant, KNOWN["variant"])
    hw = get(variant, "hardware")
    if not isinstance(hw, list):
        want("variant.hardware", hw, "an array of strings")
    if not hw:
        fail("schema", "variant.hardware", "names no hardware class")
    for i, h in enumerate(hw):
        if not isinstance(h, str):
            want("variant.hardware[%d]" % i, h, "a string")
        name("variant.hardware[%d]" % i, h)
        if h in hw[:i]:
            fail("duplicate", "variant.hardware", "names '%s' twice" % h)
    name("variant.runtime", string(variant, "variant.", "runtime"))

    files = get(root, "files")
    if not isinstance(files, list):
        want("files", files, "an array")
    if not files:
        fail("schema", "files", "lists no files")
    if len(files) > FILES_MAX:
        fail("too_large", "files", "lists %d files; the cap is %d" % (len(files), FILES_MAX))
    by_path = {}
    paths = []
    for i, f in enumerate(files):
        prefix = "files[%d]." % i
        if not isinstance(f, dict):
            want("files[%d]" % i, f, "an object")
        keys(prefix, f, KNOWN["files"])
        p = string(f, prefix, "path")
        size = uint(f, prefix, "size")
        hx = string(f, prefix, "blake2b")
        if not _HEX64_RE.fullmatch(hx):
            fail("schema", prefix, "blake2b must be 64 lower-case hex digits")
        why = path_problem(p)
        if why:
            fail("unsafe_path", prefix, "path '%s' %s" % (p, why))
        paths.append(p)
        by_path.setdefault(p, (size, bytes.fromhex(hx)))
    for p in sorted(paths, key=lambda s: s.encode("utf-8")):
        if paths.count(p) > 1:
            fail("duplicate", "files", "lists '%s' twice" % p)
    for p in paths:  # no file is also a directory of another (§3.1)
        parts = p.split("/")
        for k in range(1, len(parts)):
            d = "/".join(parts[:k])
            if d in by_path:
                fail("unsafe_path", "files",
                     "'%s' is listed as a file and is also a directory of '%s'" % (d, p))

    def listed(where, p):
        if p not in by_path:
            fail("schema", where, "'%s' is not listed in files" % p)

    listed("entry", string(root, "", "entry"))
    ev = obj_field("eval")
    keys("eval", ev, KNOWN["eval"])
    listed("eval.inputs", string(ev, "eval.", "inputs"))
    listed("eval.labels", string(ev, "eval.", "labels"))
    metric = string(ev, "eval.", "metric")
    n = uint(ev, "eval.", "n")
    if metric != "top1":
        fail("schema", "eval.metric", "'%s' is not a supported metric" % metric)
    if n == 0:
        fail("schema", "eval.n", "must be at least 1")

    thr = obj_field("thresholds")
    keys("thresholds", thr, KNOWN["thresholds"])
    number(thr, "thresholds.", "min_accuracy", 0, 1)
    number(thr, "thresholds.", "max_accuracy_drop", 0, 1)
    number(thr, "thresholds.", "latency_p99_ms", 1e-6, 3.6e6, optional=True)
    mem = uint(thr, "thresholds.", "memory_bytes", optional=True)
    if mem == 0:
        fail("schema", "thresholds.memory_bytes", "must be positive (omit it for no budget)")

    if not semver_ok(string(root, "", "min_agent_version")):
        fail("schema", "min_agent_version", "not a semantic version")
    meta = get(root, "metadata")
    if meta is not _Missing and not isinstance(meta, dict):
        want("metadata", meta, "an object")
    return root, by_path


# ---- manifest.sig (§6) ----

_SIGLINE_RE = re.compile(r"^ed25519 ([0-9a-f]{16}) ([A-Za-z0-9+/=]+)$")


def sigs_parse(data):
    """Returns [(key id, 64-byte signature)] in file order."""
    where = "manifest.sig"
    if len(data) > SIG_FILE_MAX:
        raise MfError("too_large", where, "is %d bytes; the cap is %d" % (len(data), SIG_FILE_MAX))
    if b"\x00" in data:
        raise MfError("parse", where, "contains a NUL byte")
    if not data:
        return []
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()
    out = []
    for no, raw in enumerate(lines, 1):
        if len(raw) >= 256:
            raise MfError("parse", where, "line %d is too long" % no)
        line = raw.decode("latin-1")
        if line.endswith("\r"):
            raise MfError("parse", where, "line %d ends with a carriage return" % no)
        if no == 1:
            if line == SIG_MAGIC:
                continue
            if line.startswith("modelfleet-signature v"):
                raise MfError("version", where, "signature format %r is not supported" % line)
            raise MfError("parse", where, "first line must be '%s'" % SIG_MAGIC)
        if line == "":
            continue
        if len(out) == SIG_MAX_COUNT:
            raise MfError("parse", where, "more than %d signatures" % SIG_MAX_COUNT)
        m = _SIGLINE_RE.fullmatch(line)
        sig = b64decode_canonical(m.group(2), 64) if m else None
        if sig is None:
            raise MfError("parse", where, "line %d: expected 'ed25519 <key-id> <base64>'" % no)
        out.append((m.group(1), sig))
    return out


def sigs_format(sigs):
    if not sigs:
        return b""
    text = SIG_MAGIC + "\n" + "".join("ed25519 %s %s\n" % (kid, base64.b64encode(s).decode())
                                      for kid, s in sigs)
    return text.encode("ascii")


def sigs_check(sigs, manifest_bytes, trusted):
    """§6.3. trusted: {key id: public key}. Returns the signer's key id."""
    if not sigs:
        raise MfError("unsigned", "manifest.sig", "has no signature")
    msg = SIG_CONTEXT + manifest_bytes
    good = None
    for kid, sig in sigs:
        pk = trusted.get(kid)
        if pk is None:
            continue
        if not ed25519_verify(pk, sig, msg):
            raise MfError("bad_signature", "manifest.sig",
                          "signature by key %s does not match manifest.json" % kid)
        good = kid
    if good is None:
        raise MfError("unknown_key", "manifest.sig", "signed by key %s, which is not trusted here" %
                      ", ".join(k for k, _ in sigs))
    return good


# ---- .npy headers (§8.1) ----


def npy_header(path):
    """Returns (descr, fortran_order, shape) after the §8.1 checks."""
    import ast

    with open(path, "rb") as f:
        head = f.read(NPY_HEAD_MAX + 12)
        size = os.fstat(f.fileno()).st_size
    if len(head) < 10 or head[:6] != b"\x93NUMPY":
        raise MfError("parse", path, "not a .npy file (bad magic)")
    if head[6] == 1:
        hlen, pre = int.from_bytes(head[8:10], "little"), 10
    elif head[6] in (2, 3) and len(head) >= 12:
        hlen, pre = int.from_bytes(head[8:12], "little"), 12
    else:
        raise MfError("version", path, ".npy format version %d is not supported" % head[6])
    if hlen > NPY_HEAD_MAX or pre + hlen > len(head):
        raise MfError("parse", path, ".npy header is truncated or too long")
    try:
        d = ast.literal_eval(head[pre:pre + hlen].decode("latin-1").strip())
    except (ValueError, SyntaxError):
        raise MfError("parse", path, "malformed .npy header")
    if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
        raise MfError("parse", path, "malformed .npy header")
    descr, fortran, shape = d["descr"], d["fortran_order"], d["shape"]
    if (not isinstance(fortran, bool) or not isinstance(shape, tuple) or len(shape) > 8 or
            not all(type(x) is int and x >= 0 for x in shape)):
        raise MfError("parse", path, "malformed .npy header")
    m = re.fullmatch(r"^([<|])([fiub])([1248])$", descr) if isinstance(descr, str) else None
    if not m:
        raise MfError("schema", path, ".npy dtype '%s' is not supported" % (descr,))
    count = 1
    for x in shape:
        count *= x
    if size != pre + hlen + count * int(m.group(3)):
        raise MfError("schema", path, "file size does not match its header")
    return descr, fortran, shape


# ---- tar writing (§2) ----


def _octal(value, digits):
    return ("%0*o" % (digits, value)).encode("ascii")


def ustar_header(path, size, mtime):
    """§2.4: the exact 512-byte header modelfleet writes."""
    b = path.encode("ascii")
    if len(b) <= 100:
        name, prefix = b, b""
    else:  # §2.5: first '/' whose remainder is at most 100 bytes
        cut = next((i for i, c in enumerate(b) if c == 0x2F and len(b) - i - 1 <= 100), None)
        if cut is None or cut == 0 or cut > 155:
            raise MfError("usage", path, "path needs a pax header; this packer does not write one")
        prefix, name = b[:cut], b[cut + 1:]
    if size >= USTAR_NUM_MAX or not 0 <= mtime < USTAR_NUM_MAX:
        raise MfError("usage", path, "size or mtime needs a pax header")
    h = bytearray(512)
    h[0:len(name)] = name
    h[100:108] = b"000644 \0"
    h[108:116] = b"000000 \0"
    h[116:124] = b"000000 \0"
    h[124:136] = _octal(size, 11) + b" "
    h[136:148] = _octal(mtime, 11) + b" "
    h[148:156] = b" " * 8
    h[156:157] = b"0"
    h[257:263] = b"ustar\0"
    h[263:265] = b"00"
    h[329:337] = b"000000 \0"
    h[337:345] = b"000000 \0"
    h[345:345 + len(prefix)] = prefix
    h[148:156] = _octal(sum(h), 6) + b"\0 "
    return bytes(h)


def write_tar_pinned(out, entries, mtime):
    """entries: [(path, bytes)] in archive order."""
    for path, data in entries:
        out.write(ustar_header(path, len(data), mtime))
        out.write(data)
        out.write(b"\0" * (-len(data) % 512))
    out.write(b"\0" * 1024)  # exactly two zero blocks, no record padding


def write_tar_tarfile(out, entries, mtime):
    """The same entries through the stdlib tarfile defaults (valid, not byte-identical)."""
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for path, data in entries:
            ti = tarfile.TarInfo(path)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, mtime
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = ""
            t.addfile(ti, io.BytesIO(data))


# ---- pack (§10) ----


def parse_size(s):
    m = re.fullmatch(r"^([0-9]+)([KMGT]?)(i?B)?$", s.strip())
    if not m:
        raise ValueError(s)
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m.group(2)]


def split_list(values):
    out = []
    for v in values or []:
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out


def cmd_pack(a):
    if a.min_accuracy is None:
        raise MfError("usage", None, "--min-accuracy is required")
    files = [("model/" + os.path.basename(a.model), a.model),
             ("eval/" + os.path.basename(a.eval_inputs), a.eval_inputs),
             ("eval/" + os.path.basename(a.eval_labels), a.eval_labels)]
    for spec in a.file or []:  # repeatable, values kept whole (commas allowed)
        pkgpath, eq, src = spec.partition("=")
        if not eq or not pkgpath or not src:
            raise MfError("usage", None, "--file '%s': expected PKGPATH=SOURCE" % spec)
        files.append((pkgpath, src))
    meta = {}
    for spec in a.meta or []:
        k, eq, v = spec.partition("=")
        if not eq or not k:
            raise MfError("usage", None, "--meta '%s': expected KEY=VALUE" % spec)
        meta[k] = v  # a repeated key keeps its first position (dict semantics)
    created = time_parse(a.created) if a.created else None
    if created is None:
        raise MfError("usage", None, "--created is required (YYYY-MM-DDTHH:MM:SSZ)")

    contents = {}
    file_objs = []
    for pkgpath, src in files:
        with open(src, "rb") as f:
            data = f.read()
        contents[pkgpath] = data
        file_objs.append({"path": pkgpath, "size": len(data),
                          "blake2b": blake2b256(data).hexdigest()})

    ldescr, _, lshape = npy_header(files[2][1])
    _, ifortran, ishape = npy_header(files[1][1])
    if len(lshape) != 1 or ldescr[1] not in "iu":
        raise MfError("schema", files[2][1], "labels must be a 1-D integer array")
    if len(ishape) < 1 or ishape[0] != lshape[0]:
        raise MfError("schema", files[1][1], "inputs and labels hold different numbers of items")
    if ifortran:
        raise MfError("schema", files[1][1], "inputs must be in C order")

    thresholds = {"min_accuracy": float(a.min_accuracy),
                  "max_accuracy_drop": float(a.max_accuracy_drop)}
    if a.latency_p99_ms and float(a.latency_p99_ms) > 0:
        thresholds["latency_p99_ms"] = float(a.latency_p99_ms)
    if a.memory and parse_size(a.memory) > 0:
        thresholds["memory_bytes"] = parse_size(a.memory)
    manifest = {
        "format_version": "1.0",
        "model": a.name,
        "version": a.version,
        "created": time_format(created),
        "variant": {"hardware": split_list(a.hardware), "runtime": a.runtime},
        "entry": files[0][0],
        "files": sorted(file_objs, key=lambda f: f["path"].encode("utf-8")),
        "eval": {"inputs": files[1][0], "labels": files[2][0], "metric": "top1",
                 "n": lshape[0]},
        "thresholds": thresholds,
        "min_agent_version": a.min_agent_version,
        "metadata": meta,
    }
    mbytes = (json_dump(manifest) + "\n").encode("utf-8")
    manifest_parse(mbytes)  # §10 step 4: what we write must be what a reader accepts

    sigs = []
    if a.key:
        seed, _, kid = load_secret_key(a.key)
        sigs.append((kid, ed25519_sign(seed, SIG_CONTEXT + mbytes)))
    entries = [("manifest.json", mbytes), ("manifest.sig", sigs_format(sigs))]
    entries += sorted(contents.items(), key=lambda kv: kv[0].encode("utf-8"))

    d = os.path.dirname(os.path.abspath(a.out))
    fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(a.out) + ".tmp.")
    try:
        with os.fdopen(fd, "wb") as out:
            (write_tar_tarfile if a.tar_style == "tarfile" else write_tar_pinned)(
                out, entries, created)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.rename(tmp, a.out)
    except BaseException:
        os.unlink(tmp)
        raise
    print("packed %s %s -> %s: %d files, %s" % (a.name, a.version, a.out, len(files),
                                               "signed by " + sigs[0][0] if sigs else "unsigned"))
    return 0


# ---- reading / verifying (§9) ----


def open_package(path):
    """Rows 1-4: returns a binary stream of the (decompressed) tar."""
    try:
        f = open(path, "rb")
        st = os.fstat(f.fileno())
    except OSError as e:
        raise MfError("io", path, "cannot open: %s" % e.strerror)
    import stat as _stat

    if not _stat.S_ISREG(st.st_mode):
        f.close()
        raise MfError("not_package", path, "not a regular file")
    if st.st_size == 0:
        f.close()
        raise MfError("not_package", path, "the file is empty")
    if f.read(4) == ZSTD_MAGIC:
        f.close()
        zstd = shutil.which("zstd")
        if not zstd:
            raise MfError("io", path, "zstd-compressed, and no zstd tool to read it")
        r = subprocess.run([zstd, "-q", "-d", "-c", path], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
        if r.returncode != 0:
            raise MfError("truncated", path, "zstd: %s" % r.stderr.decode(errors="replace").strip())
        return io.BytesIO(r.stdout)
    f.seek(0)
    return f


_REG_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)


def entry_type_problem(ti):
    """Row 8/14/27."""
    if ti.islnk():
        return "is a hard link"
    if ti.issym():
        return "is a symbolic link"
    if ti.ischr() or ti.isblk():
        return "is a device node"
    if ti.isfifo():
        return "is a fifo"
    if ti.isdir():
        return "is a directory entry"
    if ti.issparse():
        return "is a sparse file"
    if ti.type not in _REG_TYPES:
        return "has an unknown type"
    return None


def _read_exact(tf, ti, cap_chunks=1 << 20):
    f = tf.extractfile(ti)
    while True:
        b = f.read(cap_chunks)
        if not b:
            return
        yield b


def _tar_error(e, first):
    """Rows 6, 12, 24: a first header that cannot be read means 'not a package'."""
    msg = str(e)
    if not first and ("unexpected end" in msg or "truncated" in msg.lower()):
        return MfError("truncated", None, "the archive ends early (%s)" % msg)
    return MfError("not_package", None, ("not a tar archive (%s)" if first else
                                         "damaged archive: %s") % msg)


def verify(path, trusted, disk_budget=0):
    """Checks a package in §9 order. Returns (manifest dict, signer, payload bytes)."""
    stream = open_package(path)
    try:
        try:
            tf = tarfile.open(fileobj=stream, mode="r|")
        except tarfile.ReadError as e:
            if "empty file" in str(e):
                raise MfError("not_package", None, "the archive holds no entries")
            raise _tar_error(e, True)

        def next_member(first):
            try:
                return tf.next()
            except tarfile.ReadError as e:
                raise _tar_error(e, first)

        def small(index, want, cap):
            ti = next_member(index == 0)
            if ti is None:
                if index == 0:
                    raise MfError("not_package", None, "the archive holds no entries")
                raise MfError("layout", None, "the archive ends after manifest.json; "
                              "manifest.sig must be the second entry")
            if ti.name != want:
                raise MfError("layout", None, "entry %d is '%s'; %s must be entry %d" %
                              (index + 1, ti.name, want, index + 1))
            why = entry_type_problem(ti)
            if why:
                raise MfError("entry_type", want, why)
            if ti.size > cap:
                raise MfError("too_large", want, "is %d bytes; the cap is %d" % (ti.size, cap))
            try:
                data = b"".join(_read_exact(tf, ti))
            except tarfile.ReadError as e:
                raise _tar_error(e, False)
            if len(data) != ti.size:
                raise MfError("truncated", want, "the archive ends early")
            return data

        mbytes = small(0, "manifest.json", MANIFEST_MAX)
        sbytes = small(1, "manifest.sig", SIG_FILE_MAX)
        sigs = sigs_parse(sbytes)
        signer = sigs_check(sigs, mbytes, trusted) if trusted is not None else ""
        manifest, by_path = manifest_parse(mbytes)
        declared = sum(s for s, _ in by_path.values())
        if disk_budget and declared > disk_budget:
            raise MfError("disk_budget", None, "the manifest declares %d bytes; the budget is %d" %
                          (declared, disk_budget))
        seen = set()
        total = 0
        while True:
            ti = next_member(False)
            if ti is None:
                break
            name = ti.name
            if not name:
                raise MfError("unsafe_path", None, "an entry has no name")
            if name in ("manifest.json", "manifest.sig"):
                raise MfError("duplicate", name, "appears a second time")
            why = entry_type_problem(ti)
            if why:
                raise MfError("entry_type", name, why)
            why = path_problem(name)
            if why:
                raise MfError("unsafe_path", name, "entry path %s" % why)
            if name not in by_path:
                raise MfError("unlisted", name, "is not listed in the manifest")
            if name in seen:
                raise MfError("duplicate", name, "appears twice in the archive")
            size, digest = by_path[name]
            if ti.size != size:
                raise MfError("size_mismatch", name, "is %d bytes in the archive; the manifest "
                              "says %d" % (ti.size, size))
            h = blake2b256()
            got = 0
            try:
                for chunk in _read_exact(tf, ti):
                    h.update(chunk)
                    got += len(chunk)
            except tarfile.ReadError as e:
                raise MfError("truncated", name, "the archive ends early (%s)" % e)
            if got != size:
                raise MfError("truncated", name, "holds %d of its %d bytes" % (got, size))
            if h.digest() != digest:
                raise MfError("hash_mismatch", name, "content hash is %s..., the manifest says "
                              "%s... (altered or corrupted)" % (h.hexdigest()[:16],
                                                                digest.hex()[:16]))
            seen.add(name)
            total += size
        for p in sorted(by_path, key=lambda s: s.encode("utf-8")):
            if p not in seen:
                raise MfError("missing", p, "is listed in the manifest but not in the archive")
        return manifest, signer, total
    except MfError as e:
        e.where = path + (": " + e.where if e.where else "")
        raise
    finally:
        stream.close()


def cmd_verify(a):
    trusted = {}
    for p in a.pubkey:
        pk, kid = load_public_key(p)
        trusted[kid] = pk
    manifest, signer, total = verify(a.package, trusted, a.disk_budget)
    if not a.quiet:
        print("OK %s %s %s: signed by %s, %d files, %d bytes verified" %
              (a.package, manifest["model"], manifest["version"], signer,
               len(manifest["files"]), total))
    return 0


def cmd_entries(a):
    stream = open_package(a.package)
    with tarfile.open(fileobj=stream, mode="r|") as tf:
        for ti in tf:
            h = blake2b256()
            if ti.isreg():
                for chunk in _read_exact(tf, ti):
                    h.update(chunk)
            print("%s %s %d %s" % (ti.name, ti.type.decode(), ti.size, h.hexdigest()))
    return 0


def cmd_keyinfo(a):
    try:
        _, _, kid = load_secret_key(a.keyfile)
        kind = "secret"
    except MfError as e:
        if e.token == "key" and "first line" in e.what:
            _, kid = load_public_key(a.keyfile)
            kind = "public"
        else:
            raise
    print("%s key %s" % (kind, kid))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="mfpkg_py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("keyinfo")
    p.add_argument("keyfile")
    p = sub.add_parser("pack")
    p.add_argument("--name", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--hardware", action="append", required=True)
    p.add_argument("--runtime", default="onnx")
    p.add_argument("--model", required=True)
    p.add_argument("--eval-inputs", required=True)
    p.add_argument("--eval-labels", required=True)
    p.add_argument("--file", action="append")
    p.add_argument("--min-accuracy")
    p.add_argument("--max-accuracy-drop", default="0.01")
    p.add_argument("--latency-p99-ms")
    p.add_argument("--memory")
    p.add_argument("--min-agent-version", default="0.1.0")
    p.add_argument("--meta", action="append")
    p.add_argument("--created")
    p.add_argument("--key")
    p.add_argument("--out", required=True)
    p.add_argument("--tar-style", choices=("pinned", "tarfile"), default="pinned")
    p = sub.add_parser("verify")
    p.add_argument("--pubkey", action="append", required=True)
    p.add_argument("--disk-budget", type=parse_size, default=0)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("package")
    p = sub.add_parser("entries")
    p.add_argument("package")
    a = ap.parse_args(argv)
    if ED25519_BACKEND is None and a.cmd in ("pack", "verify", "keyinfo"):
        print("mfpkg_py: no Ed25519 module (install python3-cryptography or python3-nacl)",
              file=sys.stderr)
        return 77
    try:
        return {"keyinfo": cmd_keyinfo, "pack": cmd_pack, "verify": cmd_verify,
                "entries": cmd_entries}[a.cmd](a)
    except MfError as e:
        print("mfpkg_py %s: %s" % (a.cmd, e.line()), file=sys.stderr)
        return 2 if e.token == "usage" else 1
    except OSError as e:
        print("mfpkg_py %s: io: %s" % (a.cmd, e), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
