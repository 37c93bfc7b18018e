/* test_agent_config.c — agent/config: the table's defaults, file and flag
 * order, the command's rest index, every semantic refusal with its key, the
 * runner lookup, the keyring and the secret-file rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/config.h"
#include "common/fs.h"
#include "common/mem.h"
#include "packaging/key.h"
#include "unit_tmp.h"

struct fx {
    char *dir;
    char *empty;   /* an empty config file */
    char *runner;  /* an executable */
    char *noexec;  /* a plain file */
    char *pub;     /* a public key that loads */
    char *pub2;    /* another one */
    char *garbage; /* a .pub that does not */
    char *cred;    /* a 0600 credential */
    char *cred644; /* a world-readable one */
    struct mf_key_secret key, key2;
};

static void write_mode(const char *path, const char *text, size_t n, mode_t mode)
{
    assert_int_equal(mf_fs_write_file(path, text, n, mode, NULL), MF_OK);
    assert_int_equal(chmod(path, mode), 0); /* whatever the umask said */
}

static void write_text(const char *path, const char *text, mode_t mode)
{
    write_mode(path, text, strlen(text), mode);
}

static char *keypair(struct fx *f, const char *name, struct mf_key_secret *k, uint8_t seed_byte)
{
    uint8_t seed[crypto_sign_SEEDBYTES];
    char *prefix = mf_xasprintf("%s/%s", f->dir, name);

    memset(seed, seed_byte, sizeof seed);
    mf_key_from_seed(k, seed);
    assert_int_equal(mf_key_write_pair(k, prefix, NULL), MF_OK);
    char *pub = mf_xasprintf("%s.pub", prefix);
    free(prefix);
    return pub;
}

static int setup(void **state)
{
    struct fx *f = mf_xcalloc(1, sizeof *f);

    f->dir = unit_tmpdir("agent-config");
    f->empty = mf_xasprintf("%s/empty.conf", f->dir);
    write_text(f->empty, "", 0644);
    f->runner = mf_xasprintf("%s/runner", f->dir);
    write_text(f->runner, "#!/bin/sh\nexit 0\n", 0755);
    f->noexec = mf_xasprintf("%s/noexec", f->dir);
    write_text(f->noexec, "#!/bin/sh\nexit 0\n", 0644);
    f->pub = keypair(f, "trust", &f->key, 3);
    f->pub2 = keypair(f, "trust2", &f->key2, 4);
    f->garbage = mf_xasprintf("%s/garbage.pub", f->dir);
    write_text(f->garbage, "modelfleet-public-key v1\nkey-id: 00\n", 0644);
    f->cred = mf_xasprintf("%s/cred", f->dir);
    write_text(f->cred, "mfd_0123456789abcdef\n", 0600);
    f->cred644 = mf_xasprintf("%s/cred644", f->dir);
    write_text(f->cred644, "mfd_0123456789abcdef\n", 0644);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;

    unit_tmpdir_free(f->dir);
    free(f->empty);
    free(f->runner);
    free(f->noexec);
    free(f->pub);
    free(f->pub2);
    free(f->garbage);
    free(f->cred);
    free(f->cred644);
    free(f);
    return 0;
}

static enum mf_err load(struct mf_agent_config *c, struct mf_diag *d, int argc, char **argv,
                        int *rest)
{
    memset(c, 0, sizeof *c);
    memset(d, 0, sizeof *d);
    return mf_agent_config_load(c, argc, argv, 1, rest, d);
}

static void test_defaults(void **state)
{
    struct fx *f = *state;
    struct mf_agent_config c;
    struct mf_diag d;
    char *argv[] = {"modelfleet-agent", "--config", f->empty, NULL};
    int rest = -1;

    assert_int_equal(load(&c, &d, 3, argv, &rest), MF_OK);
    assert_int_equal(rest, 3);
    assert_null(c.device_id);
    assert_null(c.hw_class);
    assert_int_equal(c.runners.n, 0);
    assert_int_equal(c.trusted_keys.n, 0);
    assert_string_equal(c.state_dir, "/var/lib/modelfleet");
    assert_string_equal(c.server_url, "");
    assert_string_equal(c.credential_file, "");
    assert_string_equal(c.broker, "");
    assert_string_equal(c.broker_cafile, "");
    assert_string_equal(c.broker_password_file, "");
    assert_int_equal(c.keepalive, 60);
    assert_int_equal(c.reconnect_min_ms, 1000);
    assert_int_equal(c.reconnect_max_ms, 300000);
    assert_int_equal(c.retry_min_s, 30);
    assert_int_equal(c.retry_max_s, 600);
    assert_int_equal(c.disk_budget, 0);
    assert_int_equal(c.memory_budget, 0);
    assert_int_equal(c.keep_versions, 3);
    assert_int_equal(c.download_rate, 0);
    assert_int_equal(c.download_retries, 8);
    assert_int_equal(c.download_timeout, 60);
    assert_int_equal(c.download_backoff_ms, 1000);
    assert_int_equal(c.download_backoff_max_ms, 60000);
    assert_int_equal(c.runner_timeout, 300);
    assert_int_equal(c.runner_memory, 0);
    assert_int_equal(c.benchmark_warmup, 3);
    assert_int_equal(c.benchmark_threads, 0);
    assert_string_equal(c.hook, "");
    assert_int_equal(c.hook_timeout, 60);
    assert_int_equal(c.spool_max_bytes, 4 * 1024 * 1024);
    assert_int_equal(c.spool_max_messages, 10000);
    assert_string_equal(c.log_level, "info");
    /* every key of the table has a help line */
    size_t n = 0;
    for (const struct mf_cfg_key *k = mf_agent_config_table; k->name; k++, n++)
        assert_true(k->help && *k->help);
    assert_int_equal(n, 32); /* one key per field of the struct */
    mf_agent_config_free(&c);
    mf_agent_config_free(&c); /* twice is harmless */
    mf_agent_config_free(NULL);
}

static void test_file_and_flags(void **state)
{
    struct fx *f = *state;
    struct mf_agent_config c;
    struct mf_diag d;
    char *conf = mf_xasprintf("%s/agent.conf", f->dir);
    char *text = mf_xasprintf("# the device\n"
                              "device_id = pi-0042\n"
                              "hw_class = rpi4\n"
                              "runners = onnx=%s\n"
                              "trusted_keys = %s, %s\n"
                              "keepalive = 30\n"
                              "disk_budget = 2G\n"
                              "log_level = warn\n",
                              f->runner, f->pub, f->pub2);
    write_text(conf, text, 0644);

    /* flags win over the file wherever they stand; '-' reads as '_' */
    char *argv[] = {
        "modelfleet-agent", "--keepalive",          "90", "--config", conf, "--device-id=flag-dev",
        "--runners",        "tflite=/usr/bin/true", NULL};
    assert_int_equal(load(&c, &d, 8, argv, NULL), MF_OK);
    assert_string_equal(c.device_id, "flag-dev");
    assert_string_equal(c.hw_class, "rpi4");
    assert_int_equal(c.keepalive, 90);
    assert_int_equal(c.disk_budget, UINT64_C(2) << 30);
    assert_string_equal(c.log_level, "warn");
    assert_int_equal(c.trusted_keys.n, 2);
    assert_string_equal(c.trusted_keys.v[1], f->pub2);
    assert_int_equal(c.runners.n, 2);        /* MULTI: the flag adds a line */
    assert_int_equal(c.runner_timeout, 300); /* untouched keys keep their default */
    mf_agent_config_free(&c);

    /* --config=FILE, and a bad value in the file names its line */
    char *a2[] = {"modelfleet-agent", NULL, NULL};
    a2[1] = mf_xasprintf("--config=%s", conf);
    assert_int_equal(load(&c, &d, 2, a2, NULL), MF_OK);
    assert_int_equal(c.keepalive, 30);
    mf_agent_config_free(&c);
    write_text(conf, "keepalive = 4\n", 0644);
    assert_int_equal(load(&c, &d, 2, a2, NULL), MF_ERR_PARSE);
    assert_non_null(strstr(d.where, ":1"));
    assert_null(c.state_dir); /* freed on error */
    write_text(conf, "keep_versions = 1\n", 0644);
    assert_int_equal(load(&c, &d, 2, a2, NULL), MF_ERR_PARSE);
    write_text(conf, "runner = onnx=/x\n", 0644);
    assert_int_equal(load(&c, &d, 2, a2, NULL), MF_ERR_SCHEMA);
    assert_non_null(strstr(d.what, "unknown key 'runner'"));
    free(a2[1]);

    /* a missing --config file is an error (the default file is optional) */
    char *missing = mf_xasprintf("%s/nope.conf", f->dir);
    char *a3[] = {"modelfleet-agent", "--config", missing, NULL};
    assert_int_equal(load(&c, &d, 3, a3, NULL), MF_ERR_IO);
    assert_null(c.state_dir);
    free(missing);
    free(text);
    free(conf);
}

static void test_rest(void **state)
{
    struct fx *f = *state;
    struct mf_agent_config c;
    struct mf_diag d;
    int rest = -1;

    char *a1[] = {"modelfleet-agent", "--config", f->empty, "--device-id", "x",
                  "status",           "--json",   NULL};
    assert_int_equal(load(&c, &d, 7, a1, &rest), MF_OK);
    assert_int_equal(rest, 5);
    assert_string_equal(a1[rest], "status");
    assert_string_equal(c.device_id, "x");
    mf_agent_config_free(&c);

    /* a value that looks like a command is still the flag's value */
    char *a2[] = {"modelfleet-agent", "--config", f->empty, "--hw-class", "install", NULL};
    rest = -1;
    assert_int_equal(load(&c, &d, 5, a2, &rest), MF_OK);
    assert_int_equal(rest, 5); /* no command: argc */
    assert_string_equal(c.hw_class, "install");
    mf_agent_config_free(&c);

    /* bad flags before the command are usage errors; rest is not written */
    char *a3[] = {"modelfleet-agent", "--config", f->empty, "--colour", "blue", "status", NULL};
    rest = -1;
    assert_int_equal(load(&c, &d, 6, a3, &rest), MF_ERR_USAGE);
    assert_int_equal(rest, -1);
    assert_non_null(strstr(d.what, "colour"));
    assert_null(c.state_dir);
    char *a4[] = {"modelfleet-agent", "--config", f->empty, "--keepalive", NULL};
    assert_int_equal(load(&c, &d, 4, a4, &rest), MF_ERR_USAGE);
    char *a5[] = {"modelfleet-agent", "--config", f->empty, "--keepalive=99999", "status", NULL};
    assert_int_equal(load(&c, &d, 5, a5, &rest), MF_ERR_PARSE);
    assert_int_equal(rest, -1);

    /* without rest, a command is an unexpected argument */
    assert_int_equal(load(&c, &d, 7, a1, NULL), MF_ERR_USAGE);
    assert_string_equal(d.what, "unexpected argument");
}

/* Loads flags only: a valid base configuration (minus the key `skip`), plus
 * `extra` ("key=value" strings, NULL-terminated), then checks it. */
static enum mf_err check_with(struct fx *f, const char *skip, const char *const *extra,
                              struct mf_diag *d)
{
    char *state_dir = mf_xasprintf("%s/state", f->dir);
    const char *base[][2] = {
        {"device_id", "pi-0042"}, {"hw_class", "rpi4"},     {"runners", NULL}, /* onnx=<runner> */
        {"trusted_keys", f->pub}, {"state_dir", state_dir},
    };
    char *runner_line = mf_xasprintf("onnx=%s", f->runner);
    char *argv[40];
    int argc = 0;
    struct mf_agent_config c;
    enum mf_err rc;

    argv[argc++] = mf_xstrdup("modelfleet-agent");
    argv[argc++] = mf_xasprintf("--config=%s", f->empty);
    for (size_t i = 0; i < sizeof base / sizeof base[0]; i++)
        if (!skip || strcmp(skip, base[i][0]) != 0)
            argv[argc++] =
                mf_xasprintf("--%s=%s", base[i][0], base[i][1] ? base[i][1] : runner_line);
    for (size_t i = 0; extra && extra[i]; i++)
        argv[argc++] = mf_xasprintf("--%s", extra[i]);
    argv[argc] = NULL;
    assert_true(argc < 40);
    if (load(&c, d, argc, argv, NULL) != MF_OK)
        fail_msg("load: %s: %s", d->where, d->what);
    rc = mf_agent_config_check(&c, d);
    mf_agent_config_free(&c);
    for (int i = 0; i < argc; i++)
        free(argv[i]);
    free(runner_line);
    free(state_dir);
    return rc;
}

static void test_check_ok(void **state)
{
    struct fx *f = *state;
    struct mf_diag d = {0};

    assert_int_equal(check_with(f, NULL, NULL, &d), MF_OK);

    char *s1 = mf_xasprintf("credential_file=%s", f->cred);
    char *s2 = mf_xasprintf("runners= tflite = %s", f->runner); /* blanks are fine */
    char *s3 = mf_xasprintf("broker_password_file=%s", f->cred);
    char *s4 = mf_xasprintf("hook=%s", f->runner);
    char *s5 = mf_xasprintf("trusted_keys=%s", f->pub2);
    char *s6 = mf_xasprintf("state_dir=%s/not/yet/there", f->dir); /* creatable */
    const char *full[] = {"server_url=https://fleet.example.org:8443",
                          s1,
                          s2,
                          "broker=[::1]:1883",
                          s3,
                          s4,
                          s5,
                          s6,
                          "reconnect_min_ms=300000",
                          "log_level=debug",
                          NULL};
    if (check_with(f, NULL, full, &d) != MF_OK)
        fail_msg("%s: %s", d.where, d.what);
    const char *brokers[] = {"broker=localhost:1883", NULL};
    assert_int_equal(check_with(f, NULL, brokers, &d), MF_OK);
    struct stat st;
    char *nd = mf_xasprintf("%s/not", f->dir);
    assert_int_not_equal(stat(nd, &st), 0); /* the check created nothing */
    free(nd);
    free(s1);
    free(s2);
    free(s3);
    free(s4);
    free(s5);
    free(s6);
}

static void expect_refused(struct fx *f, const char *skip, const char *const *extra,
                           const char *where, const char *what_part)
{
    struct mf_diag d = {0};
    enum mf_err rc = check_with(f, skip, extra, &d);

    if (rc != MF_ERR_SCHEMA)
        fail_msg("%s / %s: got %s (%s: %s)", skip ? skip : "-", extra ? extra[0] : "-",
                 mf_strerror(rc), d.where, d.what);
    assert_int_equal(d.err, MF_ERR_SCHEMA);
    if (strcmp(d.where, where) != 0)
        fail_msg("where '%s', expected '%s' (%s)", d.where, where, d.what);
    if (what_part && !strstr(d.what, what_part))
        fail_msg("'%s' does not say '%s'", d.what, what_part);
}

#define E(...) ((const char *const[]){__VA_ARGS__, NULL})

static void test_check_refusals(void **state)
{
    struct fx *f = *state;
    char *s;

    expect_refused(f, "device_id", NULL, "device_id", "is not set");
    expect_refused(f, NULL, E("device_id=-bad"), "device_id", "'-bad' is not a device name");
    expect_refused(f, NULL, E("device_id=a/b"), "device_id", NULL);
    expect_refused(f, NULL, E("device_id=d+"), "device_id", NULL);
    expect_refused(f, "hw_class", NULL, "hw_class", "is not set");
    expect_refused(f, NULL, E("hw_class=rpi 4"), "hw_class", NULL);

    expect_refused(f, NULL, E("runners=onnx"), "runners", "is not runtime=/path/to/runner");
    expect_refused(f, NULL, E("runners=tflite=bin/runner"), "runners",
                   "runner tflite: 'bin/runner' is not an absolute path");
    expect_refused(f, NULL, E("runners==/usr/bin/true"), "runners", "is not a runtime name");
    expect_refused(f, NULL, E("runners=on/nx=/usr/bin/true"), "runners", "is not a runtime name");
    s = mf_xasprintf("runners=tflite=%s", f->noexec);
    char *want = mf_xasprintf("runner tflite: %s is not an executable file", f->noexec);
    expect_refused(f, NULL, E(s), "runners", want);
    free(s);
    free(want);
    s = mf_xasprintf("runners=tflite=%s", f->dir); /* a directory */
    expect_refused(f, NULL, E(s), "runners", "is not an executable file");
    free(s);
    expect_refused(f, NULL, E("runners=tflite=/nonexistent/runner"), "runners",
                   "is not an executable file");
    s = mf_xasprintf("runners=onnx = %s", f->runner);
    expect_refused(f, NULL, E(s), "runners", "runtime onnx has two runners");
    free(s);

    expect_refused(f, "trusted_keys", NULL, "trusted_keys", "lists no key");
    s = mf_xasprintf("trusted_keys=%s", f->garbage);
    expect_refused(f, NULL, E(s), "trusted_keys", f->garbage);
    free(s);
    s = mf_xasprintf("trusted_keys=%s/missing.pub", f->dir);
    expect_refused(f, NULL, E(s), "trusted_keys", "missing.pub");
    free(s);
    s = mf_xasprintf("trusted_keys=%s", f->cred); /* a file that is no key at all */
    expect_refused(f, NULL, E(s), "trusted_keys", NULL);
    free(s);

    static const char *const bad_brokers[] = {
        "broker=mqtt://h:1883", "broker=host",     "broker=host:0", "broker=host:65536",
        "broker=:1883",         "broker=::1:1883", "broker=h o:1",  "broker=host:18x3",
    };
    for (size_t i = 0; i < sizeof bad_brokers / sizeof bad_brokers[0]; i++)
        expect_refused(f, NULL, E(bad_brokers[i]), "broker", "is not host:port");
    s = mf_xasprintf("broker_cafile=%s/no-ca.pem", f->dir);
    expect_refused(f, NULL, E(s), "broker_cafile", "no-ca.pem");
    free(s);
    s = mf_xasprintf("broker_password_file=%s", f->cred644);
    expect_refused(f, NULL, E(s), "broker_password_file", "chmod 600");
    free(s);

    s = mf_xasprintf("credential_file=%s", f->cred);
    static const char *const bad_urls[] = {
        "server_url=ftp://h/",  "server_url=http://",       "server_url=127.0.0.1:8080",
        "server_url=http:///x", "server_url=http://a b:80", "server_url=HTTP://h",
    };
    for (size_t i = 0; i < sizeof bad_urls / sizeof bad_urls[0]; i++)
        expect_refused(f, NULL, E(bad_urls[i], s), "server_url", "is not an http");
    free(s);
    expect_refused(f, NULL, E("server_url=http://127.0.0.1:8080"), "credential_file", "is not set");
    s = mf_xasprintf("credential_file=%s/no-cred", f->dir);
    expect_refused(f, NULL, E("server_url=http://127.0.0.1:8080", s), "credential_file", "no-cred");
    free(s);
    s = mf_xasprintf("credential_file=%s", f->cred644);
    expect_refused(f, NULL, E("server_url=http://127.0.0.1:8080", s), "credential_file",
                   "mode 0644");
    free(s);
    s = mf_xasprintf("credential_file=%s", f->empty); /* empty and 0644 */
    expect_refused(f, NULL, E("server_url=http://127.0.0.1:8080", s), "credential_file", NULL);
    free(s);

    expect_refused(f, NULL, E("state_dir=var/lib/modelfleet"), "state_dir",
                   "is not an absolute path");
    s = mf_xasprintf("state_dir=%s/sub", f->runner); /* under a file */
    expect_refused(f, NULL, E(s), "state_dir", "is not a directory");
    free(s);

    expect_refused(f, NULL, E("reconnect_min_ms=5000", "reconnect_max_ms=1000"), "reconnect_min_ms",
                   "5000 is above reconnect_max_ms (1000)");
    expect_refused(f, NULL, E("download_backoff_ms=5000", "download_backoff_max_ms=1000"),
                   "download_backoff_ms", "above download_backoff_max_ms");
    expect_refused(f, NULL, E("retry_min_s=60", "retry_max_s=10"), "retry_min_s",
                   "60 is above retry_max_s (10)");
    s = mf_xasprintf("hook=%s", f->noexec);
    expect_refused(f, NULL, E(s), "hook", "executable");
    free(s);
    expect_refused(f, NULL, E("hook=reload-service"), "hook", "absolute path");
    expect_refused(f, NULL, E("log_level=verbose"), "log_level", "'verbose'");
}

static void test_runner_lookup(void **state)
{
    struct mf_agent_config c;
    struct mf_diag d;
    struct fx *f = *state;
    char *argv[] = {"modelfleet-agent",
                    "--config",
                    f->empty,
                    "--runners",
                    "onnx=/opt/r/onnx",
                    "--runners",
                    " tflite = /opt/r/tflite",
                    NULL};

    assert_int_equal(load(&c, &d, 7, argv, NULL), MF_OK);
    assert_string_equal(mf_agent_config_runner(&c, "onnx"), "/opt/r/onnx");
    assert_string_equal(mf_agent_config_runner(&c, "tflite"), "/opt/r/tflite");
    assert_null(mf_agent_config_runner(&c, "onn"));
    assert_null(mf_agent_config_runner(&c, "onnxx"));
    assert_null(mf_agent_config_runner(&c, "tensorrt"));
    assert_null(mf_agent_config_runner(&c, ""));
    mf_agent_config_free(&c);
    memset(&c, 0, sizeof c);
    assert_null(mf_agent_config_runner(&c, "onnx")); /* no runners at all */
}

static void test_keyring(void **state)
{
    struct fx *f = *state;
    struct mf_agent_config c;
    struct mf_diag d;
    struct mf_keyring *ring = NULL, untouched;
    char *keys = mf_xasprintf("--trusted-keys=%s,%s", f->pub, f->pub2);
    char *a1[] = {"modelfleet-agent", "--config", f->empty, keys, NULL};

    assert_int_equal(load(&c, &d, 4, a1, NULL), MF_OK);
    assert_int_equal(mf_agent_config_keyring(&c, &ring, &d), MF_OK);
    assert_non_null(ring);
    assert_int_equal(ring->n, 2);
    assert_non_null(mf_keyring_find(ring, f->key.pub.id));
    assert_non_null(mf_keyring_find(ring, f->key2.pub.id));
    mf_keyring_free(ring);
    free(ring);
    ring = &untouched;
    mf_agent_config_free(&c);
    free(keys);

    char *a2[] = {"modelfleet-agent", "--config", f->empty, NULL};
    assert_int_equal(load(&c, &d, 3, a2, NULL), MF_OK);
    assert_int_equal(mf_agent_config_keyring(&c, &ring, &d), MF_ERR_SCHEMA);
    assert_string_equal(d.where, "trusted_keys");
    assert_ptr_equal(ring, &untouched); /* not written on error */
    mf_agent_config_free(&c);

    keys = mf_xasprintf("--trusted-keys=%s,%s", f->pub, f->garbage);
    char *a3[] = {"modelfleet-agent", "--config", f->empty, keys, NULL};
    assert_int_equal(load(&c, &d, 4, a3, NULL), MF_OK);
    assert_int_equal(mf_agent_config_keyring(&c, &ring, &d), MF_ERR_KEY);
    assert_int_equal(strncmp(d.where, "trusted_keys: ", 14), 0);
    assert_non_null(strstr(d.where, "garbage.pub"));
    assert_ptr_equal(ring, &untouched);
    mf_agent_config_free(&c);
    free(keys);
}

static enum mf_err secret_of(struct fx *f, const void *data, size_t n, mode_t mode, char **out,
                             struct mf_diag *d)
{
    char *path = mf_xasprintf("%s/secret", f->dir);
    enum mf_err rc;

    unlink(path);
    write_mode(path, data, n, mode);
    *out = NULL;
    memset(d, 0, sizeof *d);
    rc = mf_cfg_secret(path, out, d);
    free(path);
    return rc;
}

static void test_secret(void **state)
{
    struct fx *f = *state;
    struct mf_diag d;
    char *out = NULL, big[300];

    assert_int_equal(secret_of(f, "mfd_abc\n", 8, 0600, &out, &d), MF_OK);
    assert_string_equal(out, "mfd_abc");
    free(out);
    assert_int_equal(secret_of(f, "mfd_abc", 7, 0400, &out, &d), MF_OK);
    assert_string_equal(out, "mfd_abc");
    free(out);
    assert_int_equal(secret_of(f, "pw\r\n", 4, 0600, &out, &d), MF_OK);
    assert_string_equal(out, "pw");
    free(out);
    assert_int_equal(secret_of(f, " spaced pw ", 11, 0600, &out, &d), MF_OK);
    assert_string_equal(out, " spaced pw "); /* kept as written */
    free(out);

    /* one newline only, one line only, no NUL, not empty */
    assert_int_equal(secret_of(f, "abc\n\n", 5, 0600, &out, &d), MF_ERR_SCHEMA);
    assert_null(out);
    assert_int_equal(secret_of(f, "abc\ndef\n", 8, 0600, &out, &d), MF_ERR_SCHEMA);
    assert_non_null(strstr(d.what, "one line"));
    assert_int_equal(secret_of(f, "ab\0cd", 5, 0600, &out, &d), MF_ERR_SCHEMA);
    assert_int_equal(secret_of(f, "ab\rcd", 5, 0600, &out, &d), MF_ERR_SCHEMA);
    assert_int_equal(secret_of(f, "", 0, 0600, &out, &d), MF_ERR_SCHEMA);
    assert_non_null(strstr(d.what, "empty"));
    assert_int_equal(secret_of(f, "\n", 1, 0600, &out, &d), MF_ERR_SCHEMA);
    assert_null(out);

    /* 256 bytes is the cap, newline excluded */
    memset(big, 'k', sizeof big);
    big[256] = '\n';
    assert_int_equal(secret_of(f, big, 257, 0600, &out, &d), MF_OK);
    assert_int_equal(strlen(out), 256);
    free(out);
    assert_int_equal(secret_of(f, big, 256, 0600, &out, &d), MF_OK);
    free(out);
    memset(big, 'k', sizeof big);
    assert_int_equal(secret_of(f, big, 257, 0600, &out, &d), MF_ERR_TOO_LARGE);
    assert_null(out);
    assert_int_equal(secret_of(f, big, sizeof big, 0600, &out, &d), MF_ERR_TOO_LARGE);

    /* only the owner may read it */
    static const mode_t loose[] = {0644, 0640, 0604, 0620, 0602, 0610, 0601};
    for (size_t i = 0; i < sizeof loose / sizeof loose[0]; i++) {
        assert_int_equal(secret_of(f, "mfd_abc\n", 8, loose[i], &out, &d), MF_ERR_SCHEMA);
        assert_null(out);
        assert_non_null(strstr(d.what, "chmod 600"));
        assert_non_null(strstr(d.where, "/secret"));
    }

    /* missing file, a directory, unset */
    char *missing = mf_xasprintf("%s/none", f->dir);
    assert_int_equal(mf_cfg_secret(missing, &out, &d), MF_ERR_IO);
    assert_null(out);
    free(missing);
    assert_int_equal(mf_cfg_secret(f->dir, &out, &d), MF_ERR_SCHEMA);
    out = (char *)"untouched";
    assert_int_equal(mf_cfg_secret(NULL, &out, &d), MF_OK);
    assert_null(out);
    out = (char *)"untouched";
    assert_int_equal(mf_cfg_secret("", &out, &d), MF_OK);
    assert_null(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),       cmocka_unit_test(test_file_and_flags),
        cmocka_unit_test(test_rest),           cmocka_unit_test(test_check_ok),
        cmocka_unit_test(test_check_refusals), cmocka_unit_test(test_runner_lookup),
        cmocka_unit_test(test_keyring),        cmocka_unit_test(test_secret),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
