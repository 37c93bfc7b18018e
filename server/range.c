/* range.c — parsing one `bytes=` range against a known size. */
#include "server/range.h"

#include "common/encode.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

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
        if (!mf_dec_u64(&h, &b) || *h)
            return MF_RANGE_NONE;
        if (b == 0 || size == 0)
            return MF_RANGE_UNSATISFIABLE;
        if (b > size)
            b = size;
        *start = size - b;
        *len = b;
        return MF_RANGE_PARTIAL;
    }
    if (!mf_dec_u64(&h, &a) || *h != '-')
        return MF_RANGE_NONE;
    h++;
    if (*h == '\0') {
        b = UINT64_MAX;
    } else if (!mf_dec_u64(&h, &b) || *h || b < a) {
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
