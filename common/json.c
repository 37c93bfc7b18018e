/* json.c — capped JSON parsing for network input. */
#include "json.h"

#include <string.h>

size_t mf_json_depth(const void *data, size_t len, size_t stop)
{
    const unsigned char *p = data;
    size_t depth = 0, max = 0;
    int in_string = 0, escaped = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = p[i];
        if (in_string) {
            if (escaped)
                escaped = 0;
            else if (c == '\\')
                escaped = 1;
            else if (c == '"')
                in_string = 0;
            continue;
        }
        if (c == '"') {
            in_string = 1;
        } else if (c == '[' || c == '{') {
            if (++depth > max) {
                max = depth;
                if (max > stop)
                    return max;
            }
        } else if ((c == ']' || c == '}') && depth > 0) {
            depth--;
        }
    }
    return max;
}

enum mf_err mf_json_parse(const void *data, size_t len, size_t max_depth, json_t **out,
                          struct mf_diag *diag)
{
    json_error_t jerr;
    json_t *v;

    if (mf_json_depth(data, len, max_depth) > max_depth)
        return mf_diag_set(diag, MF_ERR_PARSE, "", "JSON nested deeper than %zu levels", max_depth);
    v = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!v) {
        if (len == 0)
            return mf_diag_set(diag, MF_ERR_PARSE, "", "empty body where JSON was expected");
        return mf_diag_set(diag, MF_ERR_PARSE, "", "line %d column %d: %s", jerr.line, jerr.column,
                           jerr.text);
    }
    *out = v;
    return MF_OK;
}

enum mf_err mf_json_only(const json_t *obj, const char *const *allowed, struct mf_diag *diag)
{
    const char *key;
    json_t *val;

    if (!json_is_object(obj))
        return mf_diag_set(diag, MF_ERR_SCHEMA, "", "the body must be a JSON object");
    json_object_foreach((json_t *)obj, key, val)
    {
        size_t i = 0;
        while (allowed[i] && strcmp(allowed[i], key) != 0)
            i++;
        if (!allowed[i])
            return mf_diag_set(diag, MF_ERR_SCHEMA, key, "unknown field \"%.64s\"", key);
    }
    return MF_OK;
}

/* Length of the valid UTF-8 sequence at p (1-4), or 0. */
static size_t json__utf8_len(const unsigned char *p)
{
    size_t n;
    unsigned min;
    unsigned cp;

    if (p[0] < 0x80)
        return 1;
    if ((p[0] & 0xe0) == 0xc0)
        n = 2, cp = p[0] & 0x1f, min = 0x80;
    else if ((p[0] & 0xf0) == 0xe0)
        n = 3, cp = p[0] & 0x0f, min = 0x800;
    else if ((p[0] & 0xf8) == 0xf0)
        n = 4, cp = p[0] & 0x07, min = 0x10000;
    else
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

char *mf_utf8_sanitize(char *s)
{
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        size_t n = json__utf8_len(p);
        if (n == 0) {
            *p++ = '?';
            continue;
        }
        p += n;
    }
    return s;
}
