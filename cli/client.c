/* client.c — libcurl behind mf_client: one easy handle reused for every
 * request, bodies collected into a capped mf_buf, uploads streamed from a
 * file descriptor, JSON request bodies sent from memory. The token lives only
 * in the Authorization header string, which is wiped before it is freed. */
#include "client.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/mem.h"

#define API_PREFIX "/api/v1"

/* What one transfer collects. */
struct xfer {
    struct mf_buf body;
    bool too_large;
    int fd; /* upload source, or -1 */
    uint64_t size;
    mf_client_progress_fn progress;
    void *arg;
    bool cancelled;
};

enum mf_err mf_client_init(struct mf_client *c, const char *url, const char *token,
                           struct mf_diag *diag)
{
    static bool global_done;
    memset(c, 0, sizeof *c);
    size_t scheme = strncasecmp(url, "http://", 7) == 0    ? 7
                    : strncasecmp(url, "https://", 8) == 0 ? 8
                                                           : 0;
    if (!scheme)
        return mf_diag_set(diag, MF_ERR_USAGE, "",
                           "server URL '%s' must start with http:// or https://", url);
    size_t n = strlen(url);
    while (n > scheme && url[n - 1] == '/')
        n--;
    size_t plen = strlen(API_PREFIX);
    if (n >= scheme + plen && strncmp(url + n - plen, API_PREFIX, plen) == 0)
        n -= plen;
    while (n > scheme && url[n - 1] == '/')
        n--;
    if (n == scheme || strpbrk(url, " \t\r\n"))
        return mf_diag_set(diag, MF_ERR_USAGE, "", "server URL '%s' has no host", url);
    if (token && strpbrk(token, "\r\n"))
        return mf_diag_set(diag, MF_ERR_USAGE, "", "the API token contains a line break");
    if (!global_done) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return mf_diag_set(diag, MF_ERR_IO, "", "libcurl initialisation failed");
        global_done = true;
    }
    CURL *curl = curl_easy_init();
    if (!curl)
        return mf_diag_set(diag, MF_ERR_IO, "", "libcurl initialisation failed");
    c->curl = curl;
    c->server = mf_xstrndup(url, n);
    c->base = mf_xasprintf("%s%s", c->server, API_PREFIX);
    if (token && *token)
        c->auth = mf_xasprintf("Authorization: Bearer %s", token);
    return MF_OK;
}

void mf_client_free(struct mf_client *c)
{
    if (!c)
        return;
    if (c->curl)
        curl_easy_cleanup(c->curl);
    if (c->auth) {
        sodium_memzero(c->auth, strlen(c->auth));
        free(c->auth);
    }
    free(c->server);
    free(c->base);
    memset(c, 0, sizeof *c);
}

void mf_client_resp_free(struct mf_client_resp *resp)
{
    if (!resp)
        return;
    json_decref(resp->body);
    resp->body = NULL;
    resp->status = 0;
}

char *mf_client_escape(const char *s)
{
    char *e = curl_easy_escape(NULL, s, 0);
    if (!e)
        abort(); /* only allocation failure */
    char *out = mf_xstrdup(e);
    curl_free(e);
    return out;
}

/* ---- callbacks ---- */

static size_t client__write(char *p, size_t size, size_t n, void *arg)
{
    struct xfer *x = arg;
    if (mf_buf_append(&x->body, p, size * n) != MF_OK) {
        x->too_large = true;
        return 0; /* CURLE_WRITE_ERROR */
    }
    return size * n;
}

static size_t client__read(char *p, size_t size, size_t n, void *arg)
{
    struct xfer *x = arg;
    for (;;) {
        ssize_t r = read(x->fd, p, size * n);
        if (r < 0 && errno == EINTR)
            continue;
        return r < 0 ? CURL_READFUNC_ABORT : (size_t)r;
    }
}

static int client__seek(void *arg, curl_off_t off, int origin)
{
    struct xfer *x = arg;
    return lseek(x->fd, (off_t)off, origin) < 0 ? CURL_SEEKFUNC_FAIL : CURL_SEEKFUNC_OK;
}

static int client__xferinfo(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                            curl_off_t ulnow)
{
    struct xfer *x = arg;
    if (x->progress && x->progress(x->arg, (uint64_t)ulnow, x->size) != 0) {
        x->cancelled = true;
        return 1;
    }
    return 0;
}

/* ---- the response ---- */

/* Appends ", key <value>" for the string fields an error may carry, unless
 * the message already says it. */
static void client__extra(char *out, size_t size, const json_t *body, const char *key)
{
    const char *v = json_string_value(json_object_get(body, key));
    const char *msg = json_string_value(json_object_get(body, "message"));
    size_t len = strlen(out);
    if (v && *v && !(msg && strstr(msg, v)) && len < size)
        snprintf(out + len, size - len, "%s%s %s", strchr(out, '(') ? ", " : " (", key, v);
}

static enum mf_err client__refused(const struct mf_client *c, const struct mf_client_resp *resp,
                                   struct mf_diag *diag)
{
    enum mf_err err;
    switch (resp->status) {
    case 401:
        err = MF_ERR_AUTH;
        break;
    case 403:
        err = MF_ERR_FORBIDDEN;
        break;
    case 404:
        err = MF_ERR_NOT_FOUND;
        break;
    case 409:
        err = MF_ERR_CONFLICT;
        break;
    case 413:
        err = MF_ERR_TOO_LARGE;
        break;
    case 503:
        err = MF_ERR_UNAVAILABLE;
        break;
    default:
        err = MF_ERR_IO;
    }
    const char *code = json_string_value(json_object_get(resp->body, "error"));
    const char *msg = json_string_value(json_object_get(resp->body, "message"));
    if (!code)
        return mf_diag_set(diag, err, "",
                           "server refused: HTTP %ld without a JSON error (is %s a modelfleet "
                           "server?)",
                           resp->status, c->server);
    char extra[MF_DIAG_WHAT / 2] = "";
    client__extra(extra, sizeof extra, resp->body, "existing");
    client__extra(extra, sizeof extra, resp->body, "reason");
    client__extra(extra, sizeof extra, resp->body, "where");
    if (*extra)
        strncat(extra, ")", sizeof extra - strlen(extra) - 1);
    return mf_diag_set(diag, err, "", "server refused: %ld %s: %s%s", resp->status, code,
                       msg ? msg : "(no message)", extra);
}

/* Runs the prepared handle and turns what came back into resp + an error. */
static enum mf_err client__perform(struct mf_client *c, struct xfer *x, const char *url,
                                   struct curl_slist *hdr, struct mf_client_resp *resp,
                                   struct mf_diag *diag)
{
    CURL *curl = c->curl;
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, (long)MF_CLIENT_CONNECT_S);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "modelfleet/" MF_VERSION);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, client__write);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);

    CURLcode rc = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    /* The handle outlives this frame: drop its pointers into it. */
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, NULL);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, NULL);
    resp->status = status;
    resp->body = x->body.len ? json_loadb((const char *)x->body.data, x->body.len, 0, NULL) : NULL;
    if (x->too_large)
        return mf_diag_set(diag, MF_ERR_TOO_LARGE, "",
                           "the server's response is larger than %u bytes", MF_CLIENT_MAX_BODY);
    if (x->cancelled)
        return mf_diag_set(diag, MF_ERR_IO, "", "cancelled");
    /* A server may answer an upload early (401, 413) and close before taking
     * the body: curl then reports a send error, but the answer is what counts. */
    if (rc != CURLE_OK && !(status >= 400 && resp->body))
        return mf_diag_set(diag, MF_ERR_IO, "", "cannot reach %s: %s", c->server,
                           *errbuf ? errbuf : curl_easy_strerror(rc));
    if (status < 200 || status > 299)
        return client__refused(c, resp, diag);
    if (!resp->body)
        return mf_diag_set(diag, MF_ERR_PARSE, "",
                           "the server answered %ld without a JSON body (is %s a modelfleet "
                           "server?)",
                           status, c->server);
    return MF_OK;
}

/* content_type: of the request body, or NULL for none. */
static struct curl_slist *client__headers(const struct mf_client *c, const char *content_type)
{
    struct curl_slist *h = curl_slist_append(NULL, "Accept: application/json");
    if (content_type) {
        char *line = mf_xasprintf("Content-Type: %s", content_type);
        h = curl_slist_append(h, line);
        free(line);
    }
    if (c->auth)
        h = curl_slist_append(h, c->auth);
    if (!h)
        abort();
    return h;
}

/* Wipes the copies of the Authorization header curl_slist made. */
static void client__headers_free(struct curl_slist *h)
{
    for (struct curl_slist *p = h; p; p = p->next)
        sodium_memzero(p->data, strlen(p->data));
    curl_slist_free_all(h);
}

/* Sends the request the caller set up on the handle (curl_easy_reset, then the
 * method's options) to base+path and frees what it made for it. */
static enum mf_err client__request(struct mf_client *c, struct xfer *x, const char *path,
                                   const char *content_type, struct mf_client_resp *resp,
                                   struct mf_diag *diag)
{
    mf_buf_init(&x->body, MF_CLIENT_MAX_BODY);
    char *url = mf_xasprintf("%s%s", c->base, path);
    struct curl_slist *hdr = client__headers(c, content_type);
    enum mf_err err = client__perform(c, x, url, hdr, resp, diag);
    client__headers_free(hdr);
    mf_buf_free(&x->body);
    free(url);
    return err;
}

enum mf_err mf_client_get(struct mf_client *c, const char *path, struct mf_client_resp *resp,
                          struct mf_diag *diag)
{
    struct xfer x = {.fd = -1};
    memset(resp, 0, sizeof *resp);
    curl_easy_reset(c->curl);
    curl_easy_setopt(c->curl, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(c->curl, CURLOPT_TIMEOUT, (long)MF_CLIENT_GET_S);
    return client__request(c, &x, path, NULL, resp, diag);
}

enum mf_err mf_client_post_json(struct mf_client *c, const char *path, const json_t *body,
                                struct mf_client_resp *resp, struct mf_diag *diag)
{
    struct xfer x = {.fd = -1};
    memset(resp, 0, sizeof *resp);
    char *data = json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(17));
    MF_ASSERT(data != NULL); /* body is an object or an array */
    CURL *curl = c->curl;
    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_POST, 1L);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, data);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(data));
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, (long)MF_CLIENT_GET_S);
    enum mf_err err = client__request(c, &x, path, "application/json", resp, diag);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, NULL); /* the handle outlives data */
    free(data);
    return err;
}

enum mf_err mf_client_post_file(struct mf_client *c, const char *path, const char *file,
                                mf_client_progress_fn progress, void *arg,
                                struct mf_client_resp *resp, struct mf_diag *diag)
{
    struct xfer x = {.fd = -1, .progress = progress, .arg = arg};
    struct stat st;
    enum mf_err err;
    memset(resp, 0, sizeof *resp);
    x.fd = open(file, O_RDONLY | O_CLOEXEC);
    if (x.fd < 0)
        return mf_diag_errno(diag, errno, file, "cannot open");
    if (fstat(x.fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(x.fd);
        return mf_diag_set(diag, MF_ERR_IO, file, "not a regular file");
    }
    if (st.st_size == 0) {
        close(x.fd);
        return mf_diag_set(diag, MF_ERR_NOT_PACKAGE, file, "empty file");
    }
    /* A directory opened O_RDONLY was caught above; this catches an unreadable
     * file system or a file that vanished behind a FUSE mount. */
    char probe;
    if (pread(x.fd, &probe, 1, 0) != 1) {
        err = mf_diag_errno(diag, errno, file, "cannot read");
        close(x.fd);
        return err;
    }
    x.size = (uint64_t)st.st_size;
    CURL *curl = c->curl;
    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_POST, 1L);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)st.st_size);
    curl_easy_setopt(curl, CURLOPT_READFUNCTION, client__read);
    curl_easy_setopt(curl, CURLOPT_READDATA, &x);
    curl_easy_setopt(curl, CURLOPT_SEEKFUNCTION, client__seek);
    curl_easy_setopt(curl, CURLOPT_SEEKDATA, &x);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, (long)MF_CLIENT_LOW_SPEED);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, (long)MF_CLIENT_LOW_TIME);
    if (progress) {
        curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, client__xferinfo);
        curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &x);
    }
    err = client__request(c, &x, path, "application/octet-stream", resp, diag);
    close(x.fd);
    return err;
}
