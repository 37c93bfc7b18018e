/* encode.c — hex/base64 via libsodium. */
#include "encode.h"

#include <sodium.h>
#include <string.h>

void mf_hex_encode(char *out, const uint8_t *in, size_t n)
{
    sodium_bin2hex(out, 2 * n + 1, in, n);
}

enum mf_err mf_hex_decode(uint8_t *out, size_t n, const char *hex)
{
    size_t len = strlen(hex), got = 0;
    const char *end = NULL;
    if (len != 2 * n)
        return MF_ERR_PARSE;
    if (sodium_hex2bin(out, n, hex, len, NULL, &got, &end) != 0 || got != n || *end)
        return MF_ERR_PARSE;
    return MF_OK;
}

size_t mf_base64_encoded_size(size_t n)
{
    return sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
}

void mf_base64_encode(char *out, size_t out_size, const uint8_t *in, size_t n)
{
    sodium_bin2base64(out, out_size, in, n, sodium_base64_VARIANT_ORIGINAL);
}

enum mf_err mf_base64_decode(uint8_t *out, size_t cap, size_t *n, const char *b64)
{
    const char *end = NULL;
    size_t got = 0;
    if (sodium_base642bin(out, cap, b64, strlen(b64), NULL, &got, &end,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        *end)
        return MF_ERR_PARSE;
    *n = got;
    return MF_OK;
}

bool mf_dec_u64(const char **p, uint64_t *out)
{
    const char *s = *p;
    uint64_t v = 0;

    if (*s < '0' || *s > '9')
        return false;
    while (*s >= '0' && *s <= '9') {
        uint64_t d = (uint64_t)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
        s++;
    }
    *p = s;
    *out = v;
    return true;
}
