/* range.h — the HTTP Range header of a blob download (RFC 9110 §14), pure.
 * One byte range is served as 206; several ranges, another unit or a
 * malformed value are ignored (a plain 200 with the whole body, as the RFC
 * allows); a range that starts past the end is 416. */
#ifndef MF_SERVER_RANGE_H
#define MF_SERVER_RANGE_H

#include <stdint.h>

enum mf_range {
    MF_RANGE_NONE,          /* serve the whole blob */
    MF_RANGE_PARTIAL,       /* serve [*start, *start + *len) as 206 */
    MF_RANGE_UNSATISFIABLE, /* 416, Content-Range "bytes \*\/SIZE" */
};

/* header may be NULL. *start and *len are set only for MF_RANGE_PARTIAL. */
enum mf_range mf_range_parse(const char *header, uint64_t size, uint64_t *start, uint64_t *len);

#endif
