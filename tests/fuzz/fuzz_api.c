/* fuzz_api.c — libFuzzer target for what an HTTP request reaches before the
 * database: the capped JSON parser (mf_json_parse at depth 32, then
 * mf_json_only) gets the whole input; the first line (up to '\n') is a
 * header value for the Range parser, the Bearer parser, the secret and role
 * checks and the host:port splitter, with the blob size for Range read from
 * the second line (decimal) or, without one, the input's length. Whatever
 * parses must keep its promises; any broken one aborts. */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define FUZZ_TARGET "fuzz_api"
#include "common/err.h"
#include "common/hash.h"
#include "common/json.h"
#include "fuzz_check.h"
#include "server/auth.h"
#include "server/config.h"
#include "server/range.h"

#define FUZZ_DEPTH 32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const allowed[] = {"name", "role", "max_uses", "expires_in", NULL};

/* Nesting of arrays and objects in a parsed value (a scalar is 0). */
static size_t value_depth(const json_t *v)
{
    size_t max = 0, d;
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++)
            if ((d = value_depth(json_array_get(v, i))) > max)
                max = d;
        return max + 1;
    }
    if (json_is_object(v)) {
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)v, key, val)
        {
            if ((d = value_depth(val)) > max)
                max = d;
        }
        return max + 1;
    }
    return 0;
}

static void fuzz_json(const uint8_t *data, size_t size)
{
    struct mf_diag diag = {0};
    json_t *v = NULL, *again = NULL;
    enum mf_err err = mf_json_parse(data, size, FUZZ_DEPTH, &v, &diag);
    size_t raw_depth = mf_json_depth(data, size, FUZZ_DEPTH);

    check_diag("mf_json_parse", err, &diag);
    if (err != MF_OK) {
        if (err != MF_ERR_PARSE)
            fail("mf_json_parse returned %s, not parse", mf_errname(err));
        if (v)
            fail("mf_json_parse failed but wrote its out-parameter");
        if (!diag.what[0])
            fail("mf_json_parse failed without saying why");
        return;
    }
    if (!v)
        fail("mf_json_parse succeeded without a value");

    /* Valid JSON: the raw-byte depth is exactly the tree's depth. */
    size_t depth = value_depth(v);
    if (depth > FUZZ_DEPTH || raw_depth != depth)
        fail("parsed a value %zu deep, mf_json_depth says %zu (cap %d)", depth, raw_depth,
             FUZZ_DEPTH);
    /* The cap is exact: one level less refuses the same text. */
    if (depth > 0) {
        memset(&diag, 0, sizeof diag);
        err = mf_json_parse(data, size, depth - 1, &again, &diag);
        check_diag("mf_json_parse (cap - 1)", err, &diag);
        if (err != MF_ERR_PARSE || again)
            fail("a %zu-deep value passed a cap of %zu", depth, depth - 1);
    }

    /* What jansson writes back parses again, as deep and as equal. */
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text)
        fail("json_dumps failed on a parsed value");
    memset(&diag, 0, sizeof diag);
    err = mf_json_parse(text, strlen(text), FUZZ_DEPTH, &again, &diag);
    if (err != MF_OK)
        fail("re-parsing %s failed: %s", text, diag.what);
    if (!json_equal(v, again) || mf_json_depth(text, strlen(text), 1000) != depth)
        fail("re-parsed value differs: %s", text);
    json_decref(again);
    free(text);

    /* mf_json_only agrees with a plain walk over the keys. */
    bool want_ok = json_is_object(v);
    const char *first_bad = NULL, *key;
    json_t *val;
    if (want_ok) {
        json_object_foreach(v, key, val)
        {
            size_t i = 0;
            while (allowed[i] && strcmp(allowed[i], key) != 0)
                i++;
            if (!allowed[i]) {
                want_ok = false;
                first_bad = key;
                break;
            }
        }
    }
    memset(&diag, 0, sizeof diag);
    err = mf_json_only(v, allowed, &diag);
    check_diag("mf_json_only", err, &diag);
    if ((err == MF_OK) != want_ok || (err != MF_OK && err != MF_ERR_SCHEMA))
        fail("mf_json_only returned %s for a value it should %s", mf_errname(err),
             want_ok ? "accept" : "refuse");
    if (first_bad && strncmp(diag.where, first_bad, sizeof diag.where - 1) != 0)
        fail("mf_json_only named '%s', not the unknown key '%s'", diag.where, first_bad);
    json_decref(v);
}

/* A reference for mf_range_parse on headers whose numbers have at most 19
 * significant digits (so they fit with room to spare); *big says when one has
 * more, and then only the invariants are checked. */
static bool ref_num(const char **p, uint64_t *v, bool *big)
{
    const char *s = *p;
    uint64_t n = 0;
    int sig = 0;
    if (*s < '0' || *s > '9')
        return false;
    for (; *s >= '0' && *s <= '9'; s++) {
        if (sig || *s != '0')
            sig++;
        if (sig >= 20)
            *big = true;
        else
            n = n * 10 + (uint64_t)(*s - '0');
    }
    *p = s;
    *v = n;
    return true;
}

static enum mf_range ref_range(const char *h, uint64_t size, uint64_t *start, uint64_t *len,
                               bool *big)
{
    uint64_t a, b = UINT64_MAX;
    if (strncmp(h, "bytes=", 6) != 0 || strchr(h, ','))
        return MF_RANGE_NONE;
    h += 6;
    h += strspn(h, " ");
    if (*h == '-') {
        h++;
        if (!ref_num(&h, &b, big) || *h)
            return MF_RANGE_NONE;
        if (b == 0 || size == 0)
            return MF_RANGE_UNSATISFIABLE;
        *len = b < size ? b : size;
        *start = size - *len;
        return MF_RANGE_PARTIAL;
    }
    if (!ref_num(&h, &a, big) || *h++ != '-')
        return MF_RANGE_NONE;
    if (*h && (!ref_num(&h, &b, big) || *h || b < a))
        return MF_RANGE_NONE;
    if (a >= size)
        return MF_RANGE_UNSATISFIABLE;
    *start = a;
    *len = (b < size - 1 ? b : size - 1) - a + 1;
    return MF_RANGE_PARTIAL;
}

static void fuzz_range(const char *line, uint64_t size)
{
    const uint64_t unset = UINT64_C(0x5eed5eed5eed5eed);
    uint64_t start = unset, len = unset, rstart = 0, rlen = 0;
    bool big = false;
    enum mf_range r = mf_range_parse(line, size, &start, &len);

    switch (r) {
    case MF_RANGE_PARTIAL:
        if (start >= size || len == 0 || len > size - start)
            fail("Range '%s' of %llu bytes gave [%llu, +%llu)", line, (unsigned long long)size,
                 (unsigned long long)start, (unsigned long long)len);
        break;
    case MF_RANGE_NONE:
    case MF_RANGE_UNSATISFIABLE:
        if (start != unset || len != unset)
            fail("Range '%s' returned %d but wrote start/len", line, (int)r);
        break;
    default:
        fail("Range '%s' returned %d", line, (int)r);
    }
    if (!line)
        return;
    enum mf_range want = ref_range(line, size, &rstart, &rlen, &big);
    if (big)
        return;
    if (r != want || (r == MF_RANGE_PARTIAL && (start != rstart || len != rlen)))
        fail("Range '%s' of %llu bytes: got %d [%llu +%llu], the reference says %d [%llu +%llu]",
             line, (unsigned long long)size, (int)r, (unsigned long long)start,
             (unsigned long long)len, (int)want, (unsigned long long)rstart,
             (unsigned long long)rlen);
}

static void fuzz_auth(const char *line)
{
    const char *secret = NULL;
    uint8_t hash[MF_HASH_BYTES], want[MF_HASH_BYTES];
    bool device = false;
    enum mf_role role = MF_ROLE_NONE;
    enum mf_err err;

    err = mf_auth_bearer(line, &secret);
    if (err == MF_OK) {
        if (!secret || secret < line + 7 || secret > line + strlen(line) || !*secret ||
            *secret == ' ' || strncasecmp(line, "bearer ", 7) != 0)
            fail("mf_auth_bearer accepted '%s' with secret '%s'", line, secret ? secret : "");
    } else if (err != MF_ERR_AUTH || secret) {
        fail("mf_auth_bearer refused '%s' with %s or wrote its out-parameter", line,
             mf_errname(err));
    }

    err = mf_secret_hash(line, hash, &device);
    if (err == MF_OK) {
        if (strlen(line) != MF_SECRET_LEN ||
            strncmp(line, device ? MF_SECRET_DEVICE : MF_SECRET_API, 4) != 0 ||
            strspn(line + 4, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") !=
                MF_SECRET_LEN - 4)
            fail("mf_secret_hash accepted '%s' (device %d)", line, (int)device);
        mf_hash_bytes(want, line, MF_SECRET_LEN);
        if (memcmp(hash, want, sizeof hash) != 0)
            fail("mf_secret_hash of '%s' is not BLAKE2b of the secret", line);
    } else if (err != MF_ERR_AUTH) {
        fail("mf_secret_hash refused '%s' with %s", line, mf_errname(err));
    }

    err = mf_role_parse(line, &role);
    if (err == MF_OK && (role == MF_ROLE_DEVICE || strcmp(mf_role_name(role), line) != 0))
        fail("mf_role_parse('%s') gave %s", line, mf_role_name(role));
    if (err != MF_OK && (err != MF_ERR_USAGE || role != MF_ROLE_NONE))
        fail("mf_role_parse('%s') refused with %s or wrote its out-parameter", line,
             mf_errname(err));
}

static void fuzz_hostport(const char *line)
{
    char *host = NULL;
    int port = -1;
    enum mf_err err = mf_split_hostport(line, &host, &port);
    if (err != MF_OK) {
        if (err != MF_ERR_USAGE || host || port != -1)
            fail("split_hostport('%s') refused with %s or wrote its out-parameters", line,
                 mf_errname(err));
        return;
    }
    if (!host || port < 0 || port > 65535 || strlen(host) >= strlen(line))
        fail("split_hostport('%s') gave host '%s' port %d", line, host ? host : "(null)", port);
    free(host);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_json(data, size);

    /* The first line as a NUL-terminated header value (an embedded NUL ends it,
     * as it would a header); the second line, if any, is the blob size. */
    const uint8_t *nl = memchr(data, '\n', size);
    size_t n = nl ? (size_t)(nl - data) : size;
    char *line = malloc(n + 1);
    if (!line)
        abort();
    memcpy(line, data, n);
    line[n] = '\0';
    uint64_t blob_size = size;
    if (nl) {
        size_t rest = size - n - 1;
        char num[32] = "";
        memcpy(num, nl + 1, rest < sizeof num - 1 ? rest : sizeof num - 1);
        errno = 0;
        unsigned long long v = strtoull(num, NULL, 10); /* saturates at UINT64_MAX */
        blob_size = (uint64_t)v;
    }

    fuzz_range(size ? line : NULL, blob_size);
    fuzz_auth(line);
    fuzz_hostport(line);
    free(line);
    return 0;
}
