/* desired.h — the desired state: what one device should run, published by the
 * server retained on mf/v1/d/<device>/desired (docs/protocol.md).
 *
 *   modelfleet-desired v1\n
 *   ed25519 <key-id> <base64 of the 64-byte signature>\n
 *   {"device":"pi-0042","seq":17,"issued":"...","models":[...]}
 *
 * The signature is Ed25519 over MF_DESIRED_CONTEXT followed by the exact JSON
 * bytes (the third line to the end), so neither a manifest signature nor any
 * other message can stand in for it. A device accepts a desired state only if
 * the signature verifies with a trusted key (checked before the JSON is
 * parsed), the device id is its own and seq is above the last one it applied. */
#ifndef MF_TELEMETRY_DESIRED_H
#define MF_TELEMETRY_DESIRED_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/hash.h"
#include "packaging/key.h"

#define MF_DESIRED_MAGIC   "modelfleet-desired v1"
#define MF_DESIRED_CONTEXT "modelfleet-desired-v1\n"
#define MF_DESIRED_MAX     (64u * 1024) /* a whole message, bytes */
#define MF_DESIRED_MODELS  64           /* models in one desired state */

struct mf_desired_model {
    char *name;                /* model name (mf_pkg_name_ok) */
    char *version;             /* semantic version */
    char package[MF_HASH_HEX]; /* the package id: BLAKE2b-256 of the signed blob */
    uint64_t size;             /* the blob's bytes */
};

struct mf_desired {
    char *device;                    /* device id */
    uint64_t seq;                    /* grows by at least 1 with every new desired state */
    int64_t issued;                  /* server time, seconds since the epoch (informational) */
    int64_t rollout;                 /* rollout id, 0 = none */
    struct mf_desired_model *models; /* sorted by name, unique */
    size_t n_models;                 /* models not listed are left as they are */
};

/* Parses and validates the JSON part. On success *out is owned by the caller
 * (mf_desired_free); diag->where names the field. Unknown fields are refused. */
MF_MUST_CHECK enum mf_err mf_desired_parse(const uint8_t *json, size_t len, struct mf_desired **out,
                                           struct mf_diag *diag);

/* Canonical JSON of d (caller frees); models sorted by name. */
char *mf_desired_format(const struct mf_desired *d, size_t *len);

/* The signed message for d (caller frees): magic, signature line, JSON. */
char *mf_desired_sign(const struct mf_desired *d, const struct mf_key_secret *k, size_t *len);

/* Opens a message received for `device`: size cap, layout, signature by a
 * trusted key (before parsing), JSON, device id, then seq > last_seq.
 * Errors: MF_ERR_TOO_LARGE, MF_ERR_LAYOUT, MF_ERR_UNKNOWN_KEY,
 * MF_ERR_BAD_SIGNATURE, MF_ERR_PARSE / MF_ERR_SCHEMA, MF_ERR_WRONG_TARGET,
 * MF_ERR_STALE. On success *out is the caller's and signer (may be NULL) gets
 * the key id. */
MF_MUST_CHECK enum mf_err mf_desired_open(const uint8_t *msg, size_t len,
                                          const struct mf_keyring *trust, const char *device,
                                          uint64_t last_seq, struct mf_desired **out,
                                          char signer[MF_KEY_ID_LEN + 1], struct mf_diag *diag);

void mf_desired_free(struct mf_desired *d);

#endif
