/* config.h — modelfleet-agent's one config table (/etc/modelfleet/agent.conf
 * by default). A file of `key = value` lines (unknown keys are errors) sets
 * it; `--key value` / `--key=value` flags override the file.
 * mf_agent_config_check() validates what the table cannot: the device id and
 * hardware class are names, each runner is an executable, the trusted keys
 * load, the broker address parses, the state directory is usable. */
#ifndef MF_AGENT_CONFIG_H
#define MF_AGENT_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "common/config.h"
#include "common/err.h"
#include "packaging/key.h"

#define MF_AGENT_DEFAULT_CONFIG "/etc/modelfleet/agent.conf"

struct mf_agent_config {
    char *device_id; /* a name (mf_pkg_name_ok); also the MQTT username and client id */
    char *hw_class;  /* a name: which packages fit this device */
    /* "runtime=/path/to/runner" lines, e.g. runners = onnx=/usr/libexec/modelfleet/runner-opencv */
    struct mf_strlist runners;
    char *state_dir;                /* state.json, models/, downloads/, spool/ */
    struct mf_strlist trusted_keys; /* .pub files: package and desired-state signers */

    char *server_url;      /* "http://host:port" for package downloads; "" = offline only */
    char *credential_file; /* file holding the device credential (mfd_...), mode 0600 */

    char *broker;               /* "host:port"; "" = no MQTT (offline / local use only) */
    char *broker_cafile;        /* CA file: TLS to the broker when set */
    char *broker_password_file; /* MQTT password (username is device_id); "" = none */
    int64_t keepalive;          /* seconds, MQTT keepalive */
    int64_t reconnect_min_ms;   /* jittered exponential backoff: first delay ... */
    int64_t reconnect_max_ms;   /* ... and cap */
    int64_t retry_min_s;        /* a failed or pending attempt is retried after this ... */
    int64_t retry_max_s;        /* ... doubling up to this */

    uint64_t disk_budget;   /* bytes for models/ + downloads/; 0 = none */
    uint64_t memory_budget; /* bytes a model may use at peak (gate + runner limit); 0 = none */
    int64_t keep_versions;  /* slots kept per model (>= 2: current and previous) */

    uint64_t download_rate;   /* bytes/s cap; 0 = unlimited */
    int64_t download_retries; /* in a row without progress */
    int64_t download_timeout; /* seconds without a byte before a transfer is cut */
    int64_t download_backoff_ms;
    int64_t download_backoff_max_ms;

    int64_t runner_timeout; /* seconds for one runner run */
    uint64_t runner_memory; /* address-space limit for a runner; 0 = 2 x memory_budget (address
                               space runs ahead of RSS), none without a budget */
    int64_t benchmark_warmup;
    int64_t benchmark_threads; /* 0 = the runner picks */

    char *hook;           /* after activation: hook MODEL MODEL_FILE VERSION SLOT_DIR; "" = none */
    int64_t hook_timeout; /* seconds */

    uint64_t spool_max_bytes;
    int64_t spool_max_messages;

    char *log_level; /* debug|info|warn|error */
};

extern const struct mf_cfg_key mf_agent_config_table[];

/* Defaults, then the file named by `--config FILE` (default
 * MF_AGENT_DEFAULT_CONFIG when `--config` is absent and that file exists),
 * then every `--key value` / `--key=value` flag of argv[first..argc) ('-' in
 * a key reads as '_'): mf_cfg_load_args(). Stops at the first argument that
 * does not start with "--" and stores its index in *rest (the command's own
 * arguments start there); *rest == argc when there is none. With rest ==
 * NULL every argument must be a flag. An unknown flag is MF_ERR_USAGE.
 * On error the config is freed. */
MF_MUST_CHECK enum mf_err mf_agent_config_load(struct mf_agent_config *c, int argc, char **argv,
                                               int first, int *rest, struct mf_diag *diag);

/* Semantic checks (MF_ERR_SCHEMA with the key alone in diag->where, the
 * value in the sentence): device_id and hw_class are set and are names;
 * every runner line is "runtime=path" (blanks around the "=" ignored)
 * with a valid runtime name, an absolute path to an executable file, no
 * runtime twice; at least one trusted key, each loading; broker "host:port"
 * (port 1-65535) when set; broker_cafile readable and broker_password_file a
 * valid secret file (mf_cfg_secret) when set; server_url http:// or
 * https:// when set, and then a credential_file that is a valid secret file;
 * state_dir absolute and an existing writable directory or creatable under
 * one; reconnect_min_ms <= reconnect_max_ms; download_backoff_ms <=
 * download_backoff_max_ms; hook, when set, an absolute path to an executable
 * file; log_level debug|info|warn|error. Nothing is created or changed. */
MF_MUST_CHECK enum mf_err mf_agent_config_check(const struct mf_agent_config *c,
                                                struct mf_diag *diag);

/* The runner for a runtime (borrowed from the config), or NULL. */
const char *mf_agent_config_runner(const struct mf_agent_config *c, const char *runtime);

/* Loads the trusted keys into a new keyring *out (written only on success;
 * the caller releases it with mf_keyring_free(*out) and then free(*out):
 * mf_keyring_free frees the keys, not the struct). No key is MF_ERR_SCHEMA;
 * a key that does not load gives the loader's code, diag->where
 * "trusted_keys: <path>". */
MF_MUST_CHECK enum mf_err mf_agent_config_keyring(const struct mf_agent_config *c,
                                                  struct mf_keyring **out, struct mf_diag *diag);

void mf_agent_config_free(struct mf_agent_config *c);

#endif
