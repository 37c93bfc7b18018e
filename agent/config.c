/* config.c — modelfleet-agent's config table, its loader (the shared
 * mf_cfg_load_args: defaults, file, flags) and the checks a table cannot
 * express. Every refusal of mf_agent_config_check() is MF_ERR_SCHEMA with the
 * key in diag->where and a sentence naming the offending value. */
#include "agent/config.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/mem.h"
#include "packaging/manifest.h"

#define AO(f) offsetof(struct mf_agent_config, f)

const struct mf_cfg_key mf_agent_config_table[] = {
    {"device_id", MF_CFG_STR, AO(device_id), NULL, 0, 0,
     "this device's name (1-64 of [A-Za-z0-9._-]); also its MQTT username"},
    {"hw_class", MF_CFG_STR, AO(hw_class), NULL, 0, 0,
     "hardware class, e.g. rpi4 or jetson-orin: which packages fit this device"},
    {"runners", MF_CFG_MULTI, AO(runners), NULL, 0, 0,
     "runtime=/absolute/path/to/runner, one line per runtime"},
    {"state_dir", MF_CFG_STR, AO(state_dir), "/var/lib/modelfleet", 0, 0,
     "directory for state.json, models/, downloads/ and spool/"},
    {"trusted_keys", MF_CFG_LIST, AO(trusted_keys), NULL, 0, 0,
     "public key files (.pub) of package and desired-state signers, comma-separated"},
    {"server_url", MF_CFG_STR, AO(server_url), "", 0, 0,
     "http(s)://host:port of the server for package downloads; empty = offline only"},
    {"credential_file", MF_CFG_STR, AO(credential_file), "", 0, 0,
     "file holding the device credential (mfd_...), mode 0600; needed with server_url"},
    {"broker", MF_CFG_STR, AO(broker), "", 0, 0,
     "MQTT broker host:port; empty = no MQTT (offline / local use only)"},
    {"broker_cafile", MF_CFG_STR, AO(broker_cafile), "", 0, 0,
     "CA certificate file: TLS to the broker when set"},
    {"broker_password_file", MF_CFG_STR, AO(broker_password_file), "", 0, 0,
     "file holding the MQTT password (the username is device_id), mode 0600; empty = none"},
    {"keepalive", MF_CFG_INT, AO(keepalive), "60", 5, 3600, "MQTT keepalive, seconds"},
    {"reconnect_min_ms", MF_CFG_INT, AO(reconnect_min_ms), "1000", 10, 3600000,
     "first delay of the jittered exponential reconnect backoff, ms"},
    {"reconnect_max_ms", MF_CFG_INT, AO(reconnect_max_ms), "300000", 10, 86400000,
     "longest reconnect delay, ms"},
    {"retry_min_s", MF_CFG_INT, AO(retry_min_s), "30", 1, 86400,
     "first wait before a desired state is tried again after a failed attempt, s"},
    {"retry_max_s", MF_CFG_INT, AO(retry_max_s), "600", 1, 86400,
     "longest wait between attempts (the wait doubles from retry_min_s), s"},
    {"disk_budget", MF_CFG_SIZE, AO(disk_budget), "0", 0, 0,
     "bytes for models/ and downloads/ (K/M/G suffixes); 0 = no budget"},
    {"memory_budget", MF_CFG_SIZE, AO(memory_budget), "0", 0, 0,
     "peak bytes a model may use in the benchmark (gate and runner limit); 0 = none"},
    {"keep_versions", MF_CFG_INT, AO(keep_versions), "3", 2, 100,
     "versions kept on disk per model (>= 2: current and previous)"},
    {"download_rate", MF_CFG_SIZE, AO(download_rate), "0", 0, 0,
     "download bandwidth cap, bytes/s; 0 = unlimited"},
    {"download_retries", MF_CFG_INT, AO(download_retries), "8", 0, 1000,
     "download attempts in a row without progress before giving up"},
    {"download_timeout", MF_CFG_INT, AO(download_timeout), "60", 1, 3600,
     "seconds without a byte before a transfer is cut"},
    {"download_backoff_ms", MF_CFG_INT, AO(download_backoff_ms), "1000", 10, 3600000,
     "first delay between download attempts, ms (jittered, doubling)"},
    {"download_backoff_max_ms", MF_CFG_INT, AO(download_backoff_max_ms), "60000", 10, 86400000,
     "longest delay between download attempts, ms"},
    {"runner_timeout", MF_CFG_INT, AO(runner_timeout), "300", 1, 86400,
     "seconds one runner run may take before it is killed"},
    {"runner_memory", MF_CFG_SIZE, AO(runner_memory), "0", 0, 0,
     "address-space limit of a runner; 0 = twice memory_budget (none without one)"},
    {"benchmark_warmup", MF_CFG_INT, AO(benchmark_warmup), "3", 0, 1000,
     "warm-up inferences excluded from the benchmark figures"},
    {"benchmark_threads", MF_CFG_INT, AO(benchmark_threads), "0", 0, 1024,
     "threads a runner may use; 0 = the runner picks"},
    {"hook", MF_CFG_STR, AO(hook), "", 0, 0,
     "executable run after activation as: hook MODEL MODEL_FILE VERSION SLOT_DIR"},
    {"hook_timeout", MF_CFG_INT, AO(hook_timeout), "60", 1, 3600,
     "seconds the hook may take before it is killed"},
    {"spool_max_bytes", MF_CFG_SIZE, AO(spool_max_bytes), "4M", 4096, 1073741824.0,
     "disk for events and reports kept while the broker is unreachable"},
    {"spool_max_messages", MF_CFG_INT, AO(spool_max_messages), "10000", 1, 10000000,
     "messages kept while the broker is unreachable (the oldest are dropped)"},
    {"log_level", MF_CFG_STR, AO(log_level), "info", 0, 0, "debug, info, warn or error"},
    {NULL, 0, 0, NULL, 0, 0, NULL},
};

enum mf_err mf_agent_config_load(struct mf_agent_config *c, int argc, char **argv, int first,
                                 int *rest, struct mf_diag *diag)
{
    return mf_cfg_load_args(mf_agent_config_table, c, argc, argv, first, MF_AGENT_DEFAULT_CONFIG,
                            rest, diag);
}

void mf_agent_config_free(struct mf_agent_config *c)
{
    if (c)
        mf_cfg_free(mf_agent_config_table, c);
}

static bool is_set(const char *s)
{
    return s && *s;
}

/* Re-frames a lower layer's refusal as MF_ERR_SCHEMA of config key `key`,
 * keeping its place and sentence: where = key, what = "old where: old what". */
static enum mf_err check__reframe(struct mf_diag *diag, const char *key)
{
    char where[MF_DIAG_WHERE], what[MF_DIAG_WHAT];

    if (!diag)
        return MF_ERR_SCHEMA;
    memcpy(where, diag->where, sizeof where);
    memcpy(what, diag->what, sizeof what);
    where[sizeof where - 1] = what[sizeof what - 1] = '\0';
    if (where[0])
        return mf_diag_set(diag, MF_ERR_SCHEMA, key, "%s: %s", where, what);
    return mf_diag_set(diag, MF_ERR_SCHEMA, key, "%s", what);
}

/* "runtime=path", blanks around the runtime and before the path skipped
 * (a config file already trims the line); false without "=". */
static bool runner__split(const char *line, const char **rt, size_t *rt_len, const char **path)
{
    const char *eq = strchr(line, '='), *e;

    if (!eq)
        return false;
    for (*rt = line; *rt < eq && (**rt == ' ' || **rt == '\t'); (*rt)++)
        ;
    for (e = eq; e > *rt && (e[-1] == ' ' || e[-1] == '\t'); e--)
        ;
    *rt_len = (size_t)(e - *rt);
    for (*path = eq + 1; **path == ' ' || **path == '\t'; (*path)++)
        ;
    return true;
}

const char *mf_agent_config_runner(const struct mf_agent_config *c, const char *runtime)
{
    const char *rt, *path;
    size_t n;

    for (size_t i = 0; i < c->runners.n; i++)
        if (runner__split(c->runners.v[i], &rt, &n, &path) && n == strlen(runtime) &&
            memcmp(rt, runtime, n) == 0)
            return path;
    return NULL;
}

static bool is_executable_file(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

static enum mf_err check_runners(const struct mf_agent_config *c, struct mf_diag *diag)
{
    enum mf_err rc = MF_OK;
    char *name = NULL;

    for (size_t i = 0; i < c->runners.n && rc == MF_OK; i++) {
        const char *line = c->runners.v[i], *rt, *path, *rt2, *path2;
        size_t n, n2;

        if (!runner__split(line, &rt, &n, &path)) {
            rc = mf_diag_set(diag, MF_ERR_SCHEMA, "runners",
                             "'%s' is not runtime=/path/to/runner (e.g. onnx=/usr/libexec/"
                             "modelfleet/runner-opencv)",
                             line);
            break;
        }
        name = mf_xstrndup(rt, n);
        if (!mf_pkg_name_ok(name))
            rc = mf_diag_set(diag, MF_ERR_SCHEMA, "runners",
                             "'%s' is not a runtime name (1-64 of [A-Za-z0-9._-], starting with "
                             "a letter or digit)",
                             name);
        else if (path[0] != '/')
            rc = mf_diag_set(diag, MF_ERR_SCHEMA, "runners",
                             "runner %s: '%s' is not an absolute path", name, path);
        else if (!is_executable_file(path))
            rc = mf_diag_set(diag, MF_ERR_SCHEMA, "runners",
                             "runner %s: %s is not an executable file", name, path);
        for (size_t j = 0; j < i && rc == MF_OK; j++)
            if (runner__split(c->runners.v[j], &rt2, &n2, &path2) && n2 == n &&
                memcmp(rt, rt2, n) == 0)
                rc = mf_diag_set(diag, MF_ERR_SCHEMA, "runners",
                                 "runtime %s has two runners (%s and %s); keep one", name, path2,
                                 path);
        free(name);
        name = NULL;
    }
    return rc;
}

/* "host:port" or "[v6]:port" with a port in 1..65535. */
static bool hostport_ok(const char *s)
{
    char *host = NULL;
    int port = 0;
    bool ok = mf_split_hostport(s, &host, &port) == MF_OK && port >= 1;
    free(host);
    return ok;
}

/* http:// or https://, a host, no blanks or control characters. */
static bool url_ok(const char *s)
{
    const char *host;

    if (strncmp(s, "http://", 7) == 0)
        host = s + 7;
    else if (strncmp(s, "https://", 8) == 0)
        host = s + 8;
    else
        return false;
    if (!*host || *host == '/' || *host == ':')
        return false;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return false;
    return true;
}

/* A secret file must read as one (checked the way the daemon reads it). */
static enum mf_err check_secret_file(const char *key, const char *path, struct mf_diag *diag)
{
    char *secret = NULL;

    if (mf_cfg_secret(path, &secret, diag) != MF_OK)
        return check__reframe(diag, key);
    if (secret) {
        sodium_memzero(secret, strlen(secret));
        free(secret);
    }
    return MF_OK;
}

/* An existing writable directory, or a path whose nearest existing ancestor
 * is one (the daemon creates the rest). */
static enum mf_err check_state_dir(const char *dir, struct mf_diag *diag)
{
    struct stat st;
    char *p = NULL, *slash;
    enum mf_err rc = MF_OK;

    if (!is_set(dir) || dir[0] != '/')
        return mf_diag_set(diag, MF_ERR_SCHEMA, "state_dir", "'%s' is not an absolute path",
                           dir ? dir : "");
    p = mf_xstrdup(dir);
    for (;;) {
        if (stat(p, &st) == 0) {
            if (!S_ISDIR(st.st_mode))
                rc = mf_diag_set(diag, MF_ERR_SCHEMA, "state_dir", "%s: %s is not a directory", dir,
                                 p);
            else if (access(p, W_OK | X_OK) != 0)
                rc = mf_diag_errno(diag, errno, "state_dir", "%s: %s is not writable", dir, p);
            break;
        }
        if (errno != ENOENT && errno != ENOTDIR) {
            rc = mf_diag_errno(diag, errno, "state_dir", "%s: cannot look at %s", dir, p);
            break;
        }
        slash = strrchr(p, '/');
        if (slash == p) { /* "/" itself cannot be missing; stat it next */
            p[1] = '\0';
        } else {
            *slash = '\0';
        }
    }
    free(p);
    if (rc != MF_OK) {
        rc = MF_ERR_SCHEMA; /* a wrong value, whatever errno said */
        if (diag)
            diag->err = rc;
    }
    return rc;
}

/* A set value that is a name (mf_pkg_name_ok). */
static enum mf_err check_name(const char *key, const char *v, const char *what,
                              struct mf_diag *diag)
{
    if (!is_set(v))
        return mf_diag_set(diag, MF_ERR_SCHEMA, key, "is not set");
    if (!mf_pkg_name_ok(v))
        return mf_diag_set(diag, MF_ERR_SCHEMA, key,
                           "'%s' is not a %s name (1-64 of [A-Za-z0-9._-], starting with a letter "
                           "or digit)",
                           v, what);
    return MF_OK;
}

enum mf_err mf_agent_config_check(const struct mf_agent_config *c, struct mf_diag *diag)
{
    struct mf_keyring ring = {0};
    enum mf_log_level lvl;
    enum mf_err rc;

    if ((rc = check_name("device_id", c->device_id, "device", diag)) != MF_OK ||
        (rc = check_name("hw_class", c->hw_class, "hardware class", diag)) != MF_OK)
        return rc;
    if ((rc = check_runners(c, diag)) != MF_OK)
        return rc;
    if (c->trusted_keys.n == 0)
        return mf_diag_set(diag, MF_ERR_SCHEMA, "trusted_keys",
                           "lists no key: the agent could trust no package or desired state");
    for (size_t i = 0; i < c->trusted_keys.n; i++) {
        rc = mf_keyring_load(&ring, c->trusted_keys.v[i], diag);
        if (rc != MF_OK) {
            mf_keyring_free(&ring);
            return check__reframe(diag, "trusted_keys");
        }
    }
    mf_keyring_free(&ring);
    if (is_set(c->broker) && !hostport_ok(c->broker))
        return mf_diag_set(diag, MF_ERR_SCHEMA, "broker",
                           "'%s' is not host:port (e.g. mqtt.example.org:8883 or [::1]:1883)",
                           c->broker);
    if (is_set(c->broker_cafile) && access(c->broker_cafile, R_OK) != 0)
        return mf_diag_set(diag, MF_ERR_SCHEMA, "broker_cafile", "cannot read %s: %s",
                           c->broker_cafile, strerror(errno));
    if (is_set(c->broker_password_file) &&
        (rc = check_secret_file("broker_password_file", c->broker_password_file, diag)) != MF_OK)
        return rc;
    if (is_set(c->server_url)) {
        if (!url_ok(c->server_url))
            return mf_diag_set(diag, MF_ERR_SCHEMA, "server_url",
                               "'%s' is not an http:// or https:// URL", c->server_url);
        if (!is_set(c->credential_file))
            return mf_diag_set(diag, MF_ERR_SCHEMA, "credential_file",
                               "is not set, and server_url needs the device credential");
        if ((rc = check_secret_file("credential_file", c->credential_file, diag)) != MF_OK)
            return rc;
    }
    if ((rc = check_state_dir(c->state_dir, diag)) != MF_OK)
        return rc;
    if (c->retry_min_s > c->retry_max_s)
        return mf_diag_set(diag, MF_ERR_SCHEMA, "retry_min_s", "%lld is above retry_max_s (%lld)",
                           (long long)c->retry_min_s, (long long)c->retry_max_s);
    if (c->reconnect_min_ms > c->reconnect_max_ms)
        return mf_diag_set(diag, MF_ERR_SCHEMA, "reconnect_min_ms",
                           "%lld is above reconnect_max_ms (%lld)", (long long)c->reconnect_min_ms,
                           (long long)c->reconnect_max_ms);
    if (c->download_backoff_ms > c->download_backoff_max_ms)
        return mf_diag_set(diag, MF_ERR_SCHEMA, "download_backoff_ms",
                           "%lld is above download_backoff_max_ms (%lld)",
                           (long long)c->download_backoff_ms,
                           (long long)c->download_backoff_max_ms);
    if (is_set(c->hook) && (c->hook[0] != '/' || !is_executable_file(c->hook)))
        return mf_diag_set(diag, MF_ERR_SCHEMA, "hook",
                           "%s is not an absolute path to an executable file", c->hook);
    if (!c->log_level || mf_log_parse_level(c->log_level, &lvl) != MF_OK)
        return mf_diag_set(diag, MF_ERR_SCHEMA, "log_level", "'%s' is not debug|info|warn|error",
                           c->log_level ? c->log_level : "");
    return MF_OK;
}

enum mf_err mf_agent_config_keyring(const struct mf_agent_config *c, struct mf_keyring **out,
                                    struct mf_diag *diag)
{
    struct mf_keyring ring = {0};
    enum mf_err rc;

    if (c->trusted_keys.n == 0)
        return mf_diag_set(diag, MF_ERR_SCHEMA, "trusted_keys",
                           "lists no key: the agent could trust no package or desired state");
    for (size_t i = 0; i < c->trusted_keys.n; i++) {
        rc = mf_keyring_load(&ring, c->trusted_keys.v[i], diag);
        if (rc != MF_OK) {
            mf_keyring_free(&ring);
            mf_diag_prefix(diag, "trusted_keys");
            return rc;
        }
    }
    *out = mf_xmalloc(sizeof **out);
    **out = ring;
    return MF_OK;
}
