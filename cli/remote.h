/* remote.h — what the commands that talk to modelfleet-server share (push,
 * models, devices, fleet in cmd_remote.c; rollout in cmd_rollout.c): finding
 * the server and the token, reporting a failed request with a hint for the
 * usual causes, aligned tables for people and JSON field helpers. The URL and
 * token come from --url/--token, else MODELFLEET_URL / MODELFLEET_TOKEN, else
 * the config file ($XDG_CONFIG_HOME/modelfleet/config, keys `url` and
 * `token`), else the default URL and no token. The token is never printed. */
#ifndef MF_CLI_REMOTE_H
#define MF_CLI_REMOTE_H

#include <getopt.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

#include "cli/client.h"
#include "common/buf.h"

#define MF_REMOTE_DEFAULT_URL "http://127.0.0.1:8080"

/* Options every remote command takes. */
struct mf_remote_opts {
    const char *url;   /* --url, borrowed */
    const char *token; /* --token, borrowed */
    bool json;         /* --json */
};

/* An open connection and where its settings came from, for messages (never
 * the token itself). */
struct mf_remote {
    struct mf_client client;
    const char *cmd;        /* borrowed: "push", "rollout start", ... */
    char *config_path;      /* owned; NULL when no home directory is known */
    const char *token_from; /* "--token", "MODELFLEET_TOKEN", the config path, or NULL */
    const char *url_from;   /* "--url", "MODELFLEET_URL", the config path or "the default" */
};

/* getopt_long values of the shared options; a command's own start at 1100. */
enum { MF_REMOTE_OPT_URL = 1000, MF_REMOTE_OPT_TOKEN, MF_REMOTE_OPT_JSON };

/* The shared entries of a command's struct option table (with --help as 'h'). */
#define MF_REMOTE_LONGOPTS                                                                         \
    {"url", required_argument, NULL, MF_REMOTE_OPT_URL},                                           \
        {"token", required_argument, NULL, MF_REMOTE_OPT_TOKEN},                                   \
        {"json", no_argument, NULL, MF_REMOTE_OPT_JSON},                                           \
    {                                                                                              \
        "help", no_argument, NULL, 'h'                                                             \
    }

/* The end of every remote command's --help: where the server and the token
 * come from (_WHERE), what --json does in general (_JSON), the exit codes. */
#define MF_REMOTE_HELP_WHERE                                                                       \
    "\nserver: --url URL, else $MODELFLEET_URL, else 'url = ...' in the config file,\n"            \
    "        else " MF_REMOTE_DEFAULT_URL "\n"                                                     \
    "token:  --token TOKEN, else $MODELFLEET_TOKEN, else 'token = ...' in the config file\n"       \
    "config: $XDG_CONFIG_HOME/modelfleet/config (default ~/.config/modelfleet/config)\n"
#define MF_REMOTE_HELP_JSON "--json prints the server's JSON instead of a table.\n"
#define MF_REMOTE_HELP_EXIT                                                                        \
    "exit codes: 0 success, 1 failed (server unreachable or refused), 2 usage error\n"

/* Takes a shared option (c from getopt_long, optarg) into o; false if c is
 * not one. */
bool mf_remote_opt(int c, struct mf_remote_opts *o);

/* Resolves URL and token (flags > environment > config file) and prepares
 * r->client; cmd is the name in messages. Returns MF_EXIT_OK (close r with
 * mf_remote_close) or, having reported why, the exit code to return (r needs
 * no closing then). */
int mf_remote_open(struct mf_remote *r, const char *cmd, const struct mf_remote_opts *o);
/* Takes an open or a failed-to-open r. */
void mf_remote_close(struct mf_remote *r);

/* Reports a failed request on stderr, "modelfleet <cmd>: <diag>", with a hint
 * for an unreachable server, a missing or rejected token, or a token without
 * `role` (e.g. "viewer"). Returns MF_EXIT_FAIL. */
int mf_remote_failed(const struct mf_remote *r, const struct mf_client_resp *resp,
                     const struct mf_diag *diag, const char *role);

/* GET path / POST body (borrowed, a JSON object) to path. On success resp
 * holds the answer (free with mf_client_resp_free); on failure the failure is
 * reported (mf_remote_failed with role), resp is empty and the exit code is
 * returned. */
int mf_remote_get(struct mf_remote *r, const char *path, const char *role,
                  struct mf_client_resp *resp);
int mf_remote_post(struct mf_remote *r, const char *path, const json_t *body, const char *role,
                   struct mf_client_resp *resp);

/* Appends "&key=escaped(value)" to q ("?key=..." for the first). */
void mf_remote_query_add(struct mf_buf *q, const char *key, const char *value);

/* One page of a list: GETs path + query (+ "after" when given; query is as
 * it was after the call) like mf_remote_get, and fails (reported) unless the
 * answer has an array `key`. */
int mf_remote_get_page(struct mf_remote *r, const char *path, struct mf_buf *query,
                       const char *after, const char *key, const char *role,
                       struct mf_client_resp *resp);
/* Every page from `after` (NULL: the first) on, following "next" (an id or a
 * string) to the end, appending the elements of each page's array `key` to
 * all. A server whose pages do not advance is reported. Returns the exit
 * code. */
int mf_remote_get_all(struct mf_remote *r, const char *path, struct mf_buf *query,
                      const char *after, const char *key, const char *role, json_t *all);

/* Prints j indented, with a newline. */
void mf_remote_print_json(FILE *out, const json_t *j);

/* ---- JSON fields: a missing one prints as "-" ---- */

/* A string field, borrowed from o, or "-" when absent or empty. */
const char *mf_jstr(const json_t *o, const char *key);
/* An integer field, 0 when absent. */
long long mf_jll(const json_t *o, const char *key);
/* An integer field as text in buf, or "-" when it is not an integer. */
const char *mf_jint(char *buf, size_t size, const json_t *o, const char *key);

/* ---- aligned tables, kubectl style ---- */

struct mf_table {
    size_t ncol, nrow; /* set ncol; nrow counts the header */
    char **cell;       /* owned, nrow * ncol */
};

/* Adds a row of t->ncol strings (copied; NULL shows as "-"). */
void mf_table_row(struct mf_table *t, ...);
/* Prints the rows with columns three spaces apart, each line after indent. */
void mf_table_print(FILE *out, const struct mf_table *t, const char *indent);
/* Frees the cells; t can take new rows after. */
void mf_table_free(struct mf_table *t);

#endif
