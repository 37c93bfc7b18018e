/* client.h — a small HTTP client (libcurl) for the server's JSON API: a base
 * URL (the client appends /api/v1) and an optional bearer token, which is
 * sent only as an Authorization header and never appears in a message.
 * Response bodies are capped; redirects are not followed (a redirect could
 * carry the token to another host). */
#ifndef MF_CLIENT_H
#define MF_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

#define MF_CLIENT_MAX_BODY  (32u << 20) /* largest response body accepted */
#define MF_CLIENT_CONNECT_S 10          /* connect timeout, seconds */
#define MF_CLIENT_GET_S     120         /* total timeout of a GET or JSON POST, seconds */
/* Uploads have no total timeout; they fail below LOW_SPEED bytes/s for LOW_TIME s
 * (long enough for the server to verify a large package after the last byte). */
#define MF_CLIENT_LOW_SPEED 1024
#define MF_CLIENT_LOW_TIME  120

struct mf_client {
    char *server; /* owned: "http://host:port" as given, for messages */
    char *base;   /* owned: server + "/api/v1" */
    char *auth;   /* owned: "Authorization: Bearer ..." or NULL; wiped on free */
    void *curl;   /* CURL *, reused across requests (keep-alive) */
};

/* A response as received. status is 0 when no HTTP response arrived. */
struct mf_client_resp {
    long status;
    json_t *body; /* owned: the parsed JSON body, or NULL (empty or not JSON) */
};

/* Called while an upload runs: bytes sent so far of total. Returns nonzero to
 * abort the transfer. */
typedef int (*mf_client_progress_fn)(void *arg, uint64_t sent, uint64_t total);

/* url: "http://host[:port]" (a trailing "/" or "/api/v1" is accepted); token
 * may be NULL (requests go out without Authorization). MF_ERR_USAGE for a URL
 * that is not http(s). */
MF_MUST_CHECK enum mf_err mf_client_init(struct mf_client *c, const char *url, const char *token,
                                         struct mf_diag *diag);
/* Takes a zeroed or initialised client. */
void mf_client_free(struct mf_client *c);
/* GET base+path (path starts with "/", query already escaped). MF_OK only for
 * a 2xx response with a JSON body; otherwise diag says why: MF_ERR_IO for a
 * transport failure ("cannot reach ..."), and for an HTTP error the server's
 * JSON error as "server refused: 409 conflict: <message> (existing ...)" with
 * MF_ERR_AUTH for 401, MF_ERR_FORBIDDEN for 403, MF_ERR_NOT_FOUND for 404,
 * MF_ERR_CONFLICT for 409, MF_ERR_TOO_LARGE for 413, MF_ERR_UNAVAILABLE for
 * 503, MF_ERR_IO otherwise (so MF_ERR_IO with status 0 is a transport
 * failure). resp is filled in every case (free with mf_client_resp_free). */
MF_MUST_CHECK enum mf_err mf_client_get(struct mf_client *c, const char *path,
                                        struct mf_client_resp *resp, struct mf_diag *diag);

/* POST body (borrowed: a JSON object or array) to base+path as
 * application/json. Same results and timeout as mf_client_get. */
MF_MUST_CHECK enum mf_err mf_client_post_json(struct mf_client *c, const char *path,
                                              const json_t *body, struct mf_client_resp *resp,
                                              struct mf_diag *diag);

/* POST the file at `file` to base+path as application/octet-stream with its
 * Content-Length, streamed from disk; progress (may be NULL) is called as
 * bytes go out. Same results as mf_client_get. The file is opened and checked
 * (a readable, non-empty regular file) before any connection is made:
 * MF_ERR_IO / MF_ERR_NOT_FOUND with status 0 otherwise. */
MF_MUST_CHECK enum mf_err mf_client_post_file(struct mf_client *c, const char *path,
                                              const char *file, mf_client_progress_fn progress,
                                              void *arg, struct mf_client_resp *resp,
                                              struct mf_diag *diag);

void mf_client_resp_free(struct mf_client_resp *resp);

/* Percent-escapes s for a path segment or query value; caller frees. */
char *mf_client_escape(const char *s);

#endif
