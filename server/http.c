/* http.c — libmicrohttpd glue: one mf_http_req per request, routed on the
 * first call (headers only: auth and size caps are judged before any body
 * byte is read), fed body chunks, handled once the body is complete. */
#include "server/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/fs.h"
#include "common/json.h"
#include "common/log.h"
#include "common/mem.h"
#include "packaging/manifest.h"
#include "server/store.h"

/* A client that keeps sending after its request was refused is cut off here. */
#define HTTP_DISCARD_MAX (4u << 20)

struct http__daemon {
    int inflight; /* requests begun and not completed (atomic) */
    struct mf_server *srv;
    const struct mf_route *routes;
    size_t n_routes;
};

/* ---- responses ---------------------------------------------------------- */

static void http__set(struct mf_http_req *req, unsigned status, struct MHD_Response *resp)
{
    if (req->resp)
        MHD_destroy_response(req->resp);
    req->resp = resp;
    req->status = status;
}

void mf_http_json_text(struct mf_http_req *req, unsigned status, const char *text, size_t len)
{
    char *copy = mf_xmalloc(len + 1);
    memcpy(copy, text, len);
    copy[len] = '\n';
    struct MHD_Response *r = MHD_create_response_from_buffer(len + 1, copy, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    http__set(req, status, r);
}

void mf_http_json(struct mf_http_req *req, unsigned status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text) { /* a value jansson refused: a bug, answered, not a crash */
        static const char fallback[] =
            "{\"error\":\"internal\",\"message\":\"the server could not encode its answer\"}";
        mf_log(MF_LOG_ERROR, "cannot encode a JSON response (status %u)", status);
        mf_http_json_text(req, 500, fallback, sizeof fallback - 1);
        return;
    }
    mf_http_json_text(req, status, text, strlen(text));
    free(text);
}

void mf_http_empty(struct mf_http_req *req, unsigned status)
{
    http__set(req, status, MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT));
}

static void http__verror(struct mf_http_req *req, unsigned status, const char *code,
                         const char *fmt, va_list ap) MF_PRINTF(4, 0);

static void http__verror(struct mf_http_req *req, unsigned status, const char *code,
                         const char *fmt, va_list ap)
{
    char msg[MF_DIAG_STR_MAX];
    vsnprintf(msg, sizeof msg, fmt, ap);
    mf_utf8_sanitize(msg); /* it may quote a path or name cut from the request */
    req->log_error = code;
    mf_http_json(req, status, json_pack("{s:s, s:s}", "error", code, "message", msg));
}

void mf_http_error(struct mf_http_req *req, unsigned status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    http__verror(req, status, code, fmt, ap);
    va_end(ap);
}

void mf_http_error_diag(struct mf_http_req *req, const struct mf_diag *diag)
{
    char msg[MF_DIAG_STR_MAX];
    mf_diag_str(diag, msg, sizeof msg);
    switch (diag->err) {
    case MF_ERR_UNAVAILABLE:
        mf_http_error(req, 503, "database_unavailable",
                      "the database cannot be reached; retry shortly");
        mf_http_header(req, MHD_HTTP_HEADER_RETRY_AFTER, "1");
        mf_log(MF_LOG_WARN, "database unavailable: %s", msg);
        break;
    case MF_ERR_CONFLICT:
    case MF_ERR_EXISTS:
        mf_http_error(req, 409, "conflict", "%s", diag->what);
        break;
    case MF_ERR_NOT_FOUND:
        mf_http_error(req, 404, "not_found", "%s", diag->what);
        break;
    case MF_ERR_USAGE:
        mf_http_error(req, 400, "bad_request", "%s", msg);
        break;
    case MF_ERR_PARSE:
    case MF_ERR_SCHEMA:
        mf_http_error(req, 400, "invalid_json", "%s", msg);
        break;
    case MF_ERR_AUTH:
        mf_http_error(req, 401, "unauthorized", "%s", diag->what);
        mf_http_header(req, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"modelfleet\"");
        break;
    case MF_ERR_FORBIDDEN:
        mf_http_error(req, 403, "forbidden", "%s", diag->what);
        break;
    case MF_ERR_TOO_LARGE:
        mf_http_error(req, 413, "payload_too_large", "%s", diag->what);
        break;
    default:
        mf_log(MF_LOG_ERROR, "internal error: %s (%s)", msg, mf_errname(diag->err));
        mf_http_error(req, 500, "internal", "internal error; the server log has the details");
        break;
    }
}

void mf_http_file(struct mf_http_req *req, unsigned status, int fd, uint64_t off, uint64_t len)
{
    struct MHD_Response *r = MHD_create_response_from_fd_at_offset64(len, fd, off);
    if (!r) {
        close(fd);
        mf_http_error(req, 500, "internal", "cannot serve the file");
        return;
    }
    http__set(req, status, r);
}

void mf_http_header(struct mf_http_req *req, const char *name, const char *value)
{
    if (req->resp)
        MHD_add_response_header(req->resp, name, value);
}

const char *mf_http_query(const struct mf_http_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *mf_http_header_in(const struct mf_http_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

/* ---- authentication cache ------------------------------------------------ */

/* Each worker thread remembers the credentials it verified in the last
 * HTTP_AUTH_TTL_NS, so a client's next request costs no extra statement. A
 * revocation through this server (token revoke, device decommission) bumps
 * http__auth_gen and empties every cache at once; one made directly in the
 * database takes effect within the TTL. */
#define HTTP_AUTH_SLOTS  32
#define HTTP_AUTH_TTL_NS (2LL * 1000 * 1000 * 1000)

struct http__auth_slot {
    uint8_t key[MF_HASH_BYTES]; /* BLAKE2b-256 of the Authorization header */
    struct mf_principal who;
    int64_t until;
    unsigned gen;
};

static __thread struct http__auth_slot http__auth[HTTP_AUTH_SLOTS];
static __thread unsigned http__auth_next;
static unsigned http__auth_gen = 1;

void mf_http_auth_invalidate(void)
{
    __atomic_add_fetch(&http__auth_gen, 1, __ATOMIC_SEQ_CST);
}

static enum mf_err http__authenticate(struct mf_http_req *req, struct mf_diag *diag)
{
    const char *header = mf_http_header_in(req, MHD_HTTP_HEADER_AUTHORIZATION);
    unsigned gen = __atomic_load_n(&http__auth_gen, __ATOMIC_SEQ_CST);
    int64_t now = mf_clock_mono_ns();
    uint8_t key[MF_HASH_BYTES];

    if (!header)
        return mf_store_authenticate(req->db, NULL, &req->who, diag);
    mf_hash_bytes(key, header, strlen(header));
    for (size_t i = 0; i < HTTP_AUTH_SLOTS; i++) {
        struct http__auth_slot *s = &http__auth[i];
        if (s->gen == gen && s->until > now && memcmp(s->key, key, sizeof key) == 0) {
            req->who = s->who;
            return MF_OK;
        }
    }
    enum mf_err rc = mf_store_authenticate(req->db, header, &req->who, diag);
    if (rc == MF_OK) {
        struct http__auth_slot *s = &http__auth[http__auth_next++ % HTTP_AUTH_SLOTS];
        memcpy(s->key, key, sizeof key);
        s->who = req->who;
        s->until = now + HTTP_AUTH_TTL_NS;
        s->gen = gen;
    }
    return rc;
}

/* ---- routing ------------------------------------------------------------ */

/* Matches "/a/{}/b" against a path; fills param[] (malloc'd) on success. */
static int http__match(const char *pat, const char *url, char *param[MF_ROUTE_PARAMS])
{
    char *got[MF_ROUTE_PARAMS] = {NULL};
    size_t n = 0;

    while (*pat && *url) {
        if (strncmp(pat, "{}", 2) == 0) {
            size_t l = strcspn(url, "/");
            if (l == 0 || n == MF_ROUTE_PARAMS)
                goto no;
            got[n++] = mf_xstrndup(url, l);
            url += l;
            pat += 2;
        } else if (*pat == *url) {
            pat++;
            url++;
        } else {
            goto no;
        }
    }
    if (*pat || *url)
        goto no;
    memcpy(param, got, sizeof got);
    return 1;
no:
    for (size_t i = 0; i < n; i++)
        free(got[i]);
    return 0;
}

static int http__method_ok(const struct mf_route *r, const char *method)
{
    return strcmp(r->method, method) == 0 ||
           (strcmp(r->method, "GET") == 0 && strcmp(method, "HEAD") == 0);
}

struct http__qcheck {
    const struct mf_route *route;
    const char *bad;
};

static enum MHD_Result http__query_iter(void *cls, enum MHD_ValueKind kind, const char *key,
                                        const char *value)
{
    struct http__qcheck *q = cls;
    (void)kind;
    (void)value;
    for (size_t i = 0; i < MF_ROUTE_QUERY && q->route->query[i]; i++)
        if (strcmp(q->route->query[i], key) == 0)
            return MHD_YES;
    q->bad = key;
    return MHD_NO;
}

/* First call: route, authenticate, judge the declared size. May set a response. */
static void http__begin(const struct http__daemon *d, struct mf_http_req *req, const char *url)
{
    const struct mf_server_config *cfg = &req->srv->cfg;

    char allow[64] = "";
    for (size_t i = 0; i < d->n_routes; i++) {
        char *param[MF_ROUTE_PARAMS] = {NULL};
        if (!http__match(d->routes[i].pattern, url, param))
            continue;
        if (!req->route && http__method_ok(&d->routes[i], req->method)) {
            for (size_t j = 0; j < MF_ROUTE_PARAMS; j++) {
                free(req->param[j]);
                req->param[j] = param[j];
            }
            req->route = &d->routes[i];
            continue;
        }
        size_t n = strlen(allow);
        snprintf(allow + n, sizeof allow - n, "%s%s%s", n ? ", " : "", d->routes[i].method,
                 strcmp(d->routes[i].method, "GET") == 0 ? ", HEAD" : "");
        for (size_t j = 0; j < MF_ROUTE_PARAMS; j++)
            free(param[j]);
    }
    if (!req->route) {
        if (allow[0]) {
            mf_http_error(req, 405, "method_not_allowed", "%s is not allowed on %s", req->method,
                          url);
            mf_http_header(req, MHD_HTTP_HEADER_ALLOW, allow);
        } else {
            mf_http_error(req, 404, "not_found", "no such endpoint: %s", url);
        }
        return;
    }

    if (req->route->allow) {
        struct mf_diag diag = {0};
        if (http__authenticate(req, &diag) != MF_OK) {
            mf_http_error_diag(req, &diag);
            return;
        }
        if (!(req->who.role & req->route->allow)) {
            const char *role = mf_role_name(req->who.role);
            mf_http_error(req, 403, "forbidden", "a%s %s credential may not %s %s",
                          strchr("aeiou", role[0]) ? "n" : "", role, req->method, url);
            return;
        }
    }

    struct http__qcheck q = {req->route, NULL};
    MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, http__query_iter, &q);
    if (q.bad) {
        mf_http_error(req, 400, "bad_request", "unknown query parameter \"%.64s\"", q.bad);
        return;
    }

    const char *cl = mf_http_header_in(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
    uint64_t cap = req->route->body == MF_BODY_STREAM ? cfg->max_upload : cfg->max_json_body;
    if (cl && strtoull(cl, NULL, 10) > cap) {
        mf_http_error(req, 413, "payload_too_large",
                      "the body (%s bytes) is over this server's limit of %llu bytes", cl,
                      (unsigned long long)cap);
        return;
    }
    if (req->route->body == MF_BODY_STREAM) {
        struct mf_diag diag = {0};
        if (mf_blobs_temp(&req->srv->blobs, &req->upload_path, &req->upload_fd, &diag) != MF_OK) {
            mf_http_error_diag(req, &diag);
            return;
        }
        mf_hash_init(&req->upload_hash);
    }
}

/* A body chunk. Returns 0 to cut the connection. */
static int http__body(struct mf_http_req *req, const char *data, size_t size)
{
    if (req->resp) { /* already refused: drop what the client still sends */
        req->discarded += size;
        return req->discarded <= HTTP_DISCARD_MAX;
    }
    if (req->route->body == MF_BODY_STREAM) {
        if (req->upload_size + size > req->srv->cfg.max_upload) {
            mf_http_error(req, 413, "payload_too_large",
                          "the upload is over this server's limit of %llu bytes",
                          (unsigned long long)req->srv->cfg.max_upload);
            return 1;
        }
        if (mf_fs_write_all(req->upload_fd, data, size) != MF_OK) {
            mf_log(MF_LOG_ERROR, "cannot write upload %s: %s", req->upload_path, strerror(errno));
            mf_http_error(req, 507, "insufficient_storage", "the server cannot store the upload");
            return 1;
        }
        mf_hash_update(&req->upload_hash, data, size);
        req->upload_size += size;
        return 1;
    }
    if (mf_buf_append(&req->body, data, size) != MF_OK)
        mf_http_error(req, 413, "payload_too_large",
                      "the body is over this server's limit of %zu bytes", req->body.max);
    return 1;
}

static enum MHD_Result http__send(struct mf_http_req *req, const char *url)
{
    enum MHD_Result rc = MHD_queue_response(req->conn, req->status, req->resp);
    enum mf_log_level lvl =
        req->status >= 500 ? MF_LOG_WARN
        : (strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0) && !req->log_error
            ? MF_LOG_DEBUG
            : MF_LOG_INFO;
    mf_log(lvl, "http method=%s path=%s status=%u who=%s%s%s", req->method, url, req->status,
           req->who.role ? req->who.name : "-", req->log_error ? " error=" : "",
           req->log_error ? req->log_error : "");
    MHD_destroy_response(req->resp);
    req->resp = NULL;
    return rc;
}

/* Closes and removes the request's temp upload, if it still has one. */
static void http__drop_upload(struct mf_http_req *req)
{
    if (req->upload_fd >= 0)
        close(req->upload_fd);
    req->upload_fd = -1;
    if (req->upload_path) {
        unlink(req->upload_path);
        free(req->upload_path);
        req->upload_path = NULL;
    }
}

static enum MHD_Result http__access(void *cls, struct MHD_Connection *conn, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_data_size,
                                    void **con_cls)
{
    const struct http__daemon *d = cls;
    struct mf_http_req *req = *con_cls;
    (void)version;

    if (!req) {
        req = mf_xcalloc(1, sizeof *req);
        req->srv = d->srv;
        req->db = mf_server_db(req->srv);
        req->conn = conn;
        req->method = method;
        req->upload_fd = -1;
        mf_buf_init(&req->body, req->srv->cfg.max_json_body);
        __atomic_add_fetch(&((struct http__daemon *)cls)->inflight, 1, __ATOMIC_SEQ_CST);
        *con_cls = req;
        http__begin(d, req, url);
        if (req->resp)
            return http__send(req, url);
        return MHD_YES;
    }
    if (*upload_data_size) {
        int keep = http__body(req, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return keep ? MHD_YES : MHD_NO;
    }
    if (!req->resp && req->route->body == MF_BODY_JSON) {
        struct mf_diag diag = {0};
        if (mf_json_parse(req->body.data ? (const char *)req->body.data : "", req->body.len,
                          (size_t)req->srv->cfg.max_json_depth, &req->json, &diag) != MF_OK)
            mf_http_error(req, 400, "invalid_json", "the body is not valid JSON: %s", diag.what);
    }
    if (!req->resp)
        req->route->handler(req);
    if (!req->resp)
        mf_http_error(req, 500, "internal", "no response");
    /* An upload the handler did not store is gone before the client hears
     * back, so no answer ever leaves a temp file behind it. */
    http__drop_upload(req);
    return http__send(req, url);
}

static void http__completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                            enum MHD_RequestTerminationCode toe)
{
    struct mf_http_req *req = *con_cls;
    (void)conn;
    if (!req)
        return;
    __atomic_sub_fetch(&((struct http__daemon *)cls)->inflight, 1, __ATOMIC_SEQ_CST);
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && req->upload_path)
        mf_log(MF_LOG_INFO, "upload aborted after %llu bytes (code %d)",
               (unsigned long long)req->upload_size, (int)toe);
    http__drop_upload(req);
    for (size_t i = 0; i < MF_ROUTE_PARAMS; i++)
        free(req->param[i]);
    if (req->resp)
        MHD_destroy_response(req->resp);
    json_decref(req->json);
    mf_buf_free(&req->body);
    free(req);
    *con_cls = NULL;
}

/* Percent-decoding of the path and query values, in place, as libmicrohttpd's
 * own, except that "%00" stays as it is: a decoded NUL would silently cut a
 * C string ("dev-1%00' OR ..." read as "dev-1"); kept, it fails validation. */
static int http__hex(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

static size_t http__unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    char *r = s, *w = s;
    (void)cls;
    (void)conn;
    while (*r) {
        int hi, lo;
        if (r[0] == '%' && (hi = http__hex(r[1])) >= 0 && (lo = http__hex(r[2])) >= 0 &&
            (hi | lo) != 0) {
            *w++ = (char)(hi * 16 + lo);
            r += 3;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
    return (size_t)(w - s);
}

static void http__logger(void *cls, const char *fmt, va_list ap) MF_PRINTF(2, 0);

static void http__logger(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    (void)cls;
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    mf_log(MF_LOG_DEBUG, "httpd: %s", msg);
}

enum mf_err mf_http_start(struct mf_server *srv, const struct mf_route *routes, size_t n_routes,
                          struct mf_diag *diag)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST}, *ai = NULL;
    char *host = NULL, portbuf[8];
    int port;
    enum mf_err rc = MF_OK;

    if (mf_split_hostport(srv->cfg.listen, &host, &port) != MF_OK)
        return mf_diag_set(diag, MF_ERR_USAGE, "listen", "\"%s\" is not host:port",
                           srv->cfg.listen);
    snprintf(portbuf, sizeof portbuf, "%d", port);
    if (getaddrinfo(host, portbuf, &hints, &ai) != 0) {
        rc = mf_diag_set(diag, MF_ERR_USAGE, "listen", "\"%s\" is not a numeric address", host);
        goto out;
    }
    struct http__daemon *d = mf_xcalloc(1, sizeof *d);
    d->srv = srv;
    d->routes = routes;
    d->n_routes = n_routes;
    unsigned flags =
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG | MHD_USE_POLL | MHD_USE_ITC;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    srv->mhd = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, http__access, d, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_THREAD_POOL_SIZE, mf_server_http_threads(&srv->cfg), MHD_OPTION_NOTIFY_COMPLETED,
        http__completed, d, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)1000, MHD_OPTION_EXTERNAL_LOGGER, http__logger, NULL,
        MHD_OPTION_UNESCAPE_CALLBACK, http__unescape, NULL, MHD_OPTION_END);
    if (!srv->mhd) {
        rc = mf_diag_set(diag, MF_ERR_IO, "listen", "cannot listen on %s (in use?)",
                         srv->cfg.listen);
        free(d);
    } else {
        srv->http = d;
    }
out:
    if (ai)
        freeaddrinfo(ai);
    free(host);
    return rc;
}

void mf_http_drain(struct mf_server *srv, int seconds)
{
    if (!srv->mhd)
        return;
    MHD_socket ls = MHD_quiesce_daemon(srv->mhd);
    if (ls != MHD_INVALID_SOCKET)
        close(ls);
    struct http__daemon *d = srv->http;
    for (int i = 0; i < seconds * 10; i++) {
        if (__atomic_load_n(&d->inflight, __ATOMIC_SEQ_CST) == 0)
            return;
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    mf_log(MF_LOG_WARN, "shutdown: cutting connections still open after %ds", seconds);
}

void mf_http_stop(struct mf_server *srv)
{
    if (srv->mhd)
        MHD_stop_daemon(srv->mhd);
    srv->mhd = NULL;
    free(srv->http);
    srv->http = NULL;
}

bool mf_http_query_limit(struct mf_http_req *req, int *limit)
{
    const char *s = mf_http_query(req, "limit");
    char *end;
    long v;

    *limit = MF_HTTP_LIMIT_DEFAULT;
    if (!s)
        return true;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < 1 || v > MF_HTTP_LIMIT_MAX) {
        mf_http_error(req, 400, "bad_request", "limit must be an integer from 1 to %d",
                      MF_HTTP_LIMIT_MAX);
        return false;
    }
    *limit = (int)v;
    return true;
}

bool mf_http_query_name(struct mf_http_req *req, const char *key, const char **out)
{
    *out = mf_http_query(req, key);
    if (*out && !mf_pkg_name_ok(*out)) {
        mf_http_error(req, 400, "bad_request",
                      "%s must be 1-64 characters of [A-Za-z0-9._-] starting with a letter or "
                      "digit",
                      key);
        return false;
    }
    return true;
}
