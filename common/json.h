/* json.h — JSON from the network: a size- and depth-capped parse that names
 * what is wrong ("line 1 column 9: ..."), and a check that an object carries
 * only the fields a request may have. jansson's own depth limit (2048) is far
 * above what any modelfleet message needs, so depth is checked first, on the
 * raw bytes, before jansson allocates anything. */
#ifndef MF_JSON_H
#define MF_JSON_H

#include <jansson.h>
#include <stddef.h>

#include "err.h"

/* Parses exactly one JSON object or array from data[0..len) (a bare scalar
 * and duplicate object keys are refused). On success *out is owned by the caller (json_decref).
 * Errors: MF_ERR_PARSE (malformed, or nested deeper than max_depth), with the reason and position
 * in diag->what. */
MF_MUST_CHECK enum mf_err mf_json_parse(const void *data, size_t len, size_t max_depth,
                                        json_t **out, struct mf_diag *diag);

/* Nesting depth of the JSON text (arrays and objects; strings are skipped),
 * stopping early once it passes `stop`. Malformed text gets a best-effort answer. */
size_t mf_json_depth(const void *data, size_t len, size_t stop);

/* MF_ERR_SCHEMA naming the first key of obj not in the NULL-terminated
 * `allowed` list, or the reason obj is not an object. */
MF_MUST_CHECK enum mf_err mf_json_only(const json_t *obj, const char *const *allowed,
                                       struct mf_diag *diag);

/* Replaces, in place, every byte of s that is not part of a valid UTF-8
 * sequence with '?', so text cut from network input (paths, archive entry
 * names) can go into a JSON string. Returns s. */
char *mf_utf8_sanitize(char *s);

#endif
