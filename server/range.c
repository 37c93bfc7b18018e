/* range.c — parsing one `bytes=` range against a known size. */
#include "server/range.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

/* Reads decimal digits at *p into *v; false when none or on overflow. */
static bool range__num(const char **p, uint64_t *v)
{
    const char *s = *p;
    uint64_t n = 0;

    if (*s < '0' || *s > '9')
        return false;
    while (*s >= '0' && *s <= '9') {
        uint64_t digit = (uint64_t)(*s - '0');
        if (n > (UINT64_MAX - digit) / 10)
            return false;
        n = n * 10 + digit;
        s++;
    }
    *p = s;
    *v = n;
    return true;
}

enum mf_range mf_range_parse(const char *h, uint64_t size, uint64_t *start, uint64_t *len)
{
    uint64_t a, b;

    if (!h || strncasecmp(h, "bytes=", 6) != 0 || strchr(h, ','))
        return MF_RANGE_NONE;
    h += 6;
    while (*h == ' ')
        h++;
    if (*h == '-') { /* suffix: the last N bytes */
        h++;
        if (!range__num(&h, &b) || *h)
            return MF_RANGE_NONE;
        if (b == 0 || size == 0)
            return MF_RANGE_UNSATISFIABLE;
        if (b > size)
            b = size;
        *start = size - b;
        *len = b;
        return MF_RANGE_PARTIAL;
    }
    if (!range__num(&h, &a) || *h != '-')
        return MF_RANGE_NONE;
    h++;
    if (*h == '\0') {
        b = UINT64_MAX;
    } else if (!range__num(&h, &b) || *h || b < a) {
        return MF_RANGE_NONE;
    }
    if (a >= size)
        return MF_RANGE_UNSATISFIABLE;
    if (b >= size)
        b = size - 1;
    *start = a;
    *len = b - a + 1;
    return MF_RANGE_PARTIAL;
}
