/* http.h — the HTTP shell of the server (libmicrohttpd): routing, bearer
 * auth, capped request bodies (JSON buffered, packages streamed to a temp
 * file), and the JSON / file / error responses handlers build. A handler
 * runs once, on the worker thread that received the request, after the whole
 * body arrived; it sets exactly one response with the mf_http_* helpers. */
#ifndef MF_SERVER_HTTP_H
#define MF_SERVER_HTTP_H

#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/hash.h"
#include "server/auth.h"
#include "server/server.h"

struct MHD_Connection;
struct MHD_Response;
struct mf_http_req;

enum mf_http_body {
    MF_BODY_NONE,   /* a body is read and dropped (at most max_json_body) */
    MF_BODY_JSON,   /* buffered, at most max_json_body, parsed into req->json */
    MF_BODY_STREAM, /* written to a temp file, at most max_upload, hashed */
};

#define MF_ROUTE_PARAMS 2
#define MF_ROUTE_QUERY  8

struct mf_route {
    const char *method;  /* "GET" also answers HEAD */
    const char *pattern; /* "/api/v1/models/{}/versions/{}" */
    unsigned allow;      /* enum mf_role set; 0 = no authentication */
    enum mf_http_body body;
    void (*handler)(struct mf_http_req *req);
    const char *query[MF_ROUTE_QUERY]; /* allowed query parameters, NULL-terminated */
};

struct mf_http_req {
    struct mf_server *srv;
    struct mf_db *db; /* this thread's connection */
    struct MHD_Connection *conn;
    const struct mf_route *route;
    const char *method;
    char *param[MF_ROUTE_PARAMS]; /* path parameters, decoded */
    struct mf_principal who;
    json_t *json; /* MF_BODY_JSON: the parsed body */
    /* MF_BODY_STREAM: */
    char *upload_path; /* temp file; removed when the request ends unless taken */
    int upload_fd;
    uint64_t upload_size;
    struct mf_hash upload_hash;
    /* internal */
    struct mf_buf body;
    uint64_t discarded;
    struct MHD_Response *resp;
    unsigned status;
    const char *log_error;
};

/* Starts the daemon on cfg.listen with cfg.http_threads workers. */
MF_MUST_CHECK enum mf_err mf_http_start(struct mf_server *srv, const struct mf_route *routes,
                                        size_t n_routes, struct mf_diag *diag);
/* Stops accepting connections and waits up to `seconds` for the requests in
 * flight to finish (idle keep-alive connections do not count). */
void mf_http_drain(struct mf_server *srv, int seconds);
void mf_http_stop(struct mf_server *srv);

/* Forgets every verified credential (all threads): call after revoking one. */
void mf_http_auth_invalidate(void);

/* Responses (each replaces any earlier one). */
void mf_http_json(struct mf_http_req *req, unsigned status, json_t *body); /* steals body */
void mf_http_json_text(struct mf_http_req *req, unsigned status, const char *text, size_t len);
void mf_http_empty(struct mf_http_req *req, unsigned status);
void mf_http_error(struct mf_http_req *req, unsigned status, const char *code, const char *fmt, ...)
    MF_PRINTF(4, 5);
/* The error for a failed store call: 503 for MF_ERR_UNAVAILABLE, 409 for
 * MF_ERR_CONFLICT, 404 for MF_ERR_NOT_FOUND, 400 for MF_ERR_USAGE/SCHEMA/PARSE,
 * 500 (logged) otherwise. */
void mf_http_error_diag(struct mf_http_req *req, const struct mf_diag *diag);
/* Serves [off, off+len) of fd (taken: closed when sent). */
void mf_http_file(struct mf_http_req *req, unsigned status, int fd, uint64_t off, uint64_t len);
void mf_http_header(struct mf_http_req *req, const char *name, const char *value);

/* Request accessors. */
const char *mf_http_query(const struct mf_http_req *req, const char *name);

/* Pagination: the `limit` query parameter (1 .. MF_HTTP_LIMIT_MAX, default
 * MF_HTTP_LIMIT_DEFAULT); false (a 400 set) when malformed. */
#define MF_HTTP_LIMIT_DEFAULT 100
#define MF_HTTP_LIMIT_MAX     1000
bool mf_http_query_limit(struct mf_http_req *req, int *limit);
/* An optional name-shaped query parameter (mf_pkg_name_ok); false (a 400
 * set) when malformed. */
bool mf_http_query_name(struct mf_http_req *req, const char *key, const char **out);
const char *mf_http_header_in(const struct mf_http_req *req, const char *name);

#endif
