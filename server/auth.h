/* auth.h — secrets and roles. A secret is a prefix ("mft_" API token,
 * "mfd_" device credential) and 32 random bytes in unpadded base64url; only
 * its BLAKE2b-256 hash is stored, so a database dump reveals no usable
 * secret. Roles are ordered viewer < operator < admin; `enroll` and `device`
 * stand apart and reach only the routes that name them. */
#ifndef MF_SERVER_AUTH_H
#define MF_SERVER_AUTH_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "common/hash.h"

#define MF_SECRET_API    "mft_"
#define MF_SECRET_DEVICE "mfd_"
#define MF_SECRET_LEN    (4 + 43) /* prefix + base64url of 32 bytes */

enum mf_role {
    MF_ROLE_NONE = 0,
    MF_ROLE_VIEWER = 1 << 0,
    MF_ROLE_OPERATOR = 1 << 1,
    MF_ROLE_ADMIN = 1 << 2,
    MF_ROLE_ENROLL = 1 << 3,
    MF_ROLE_DEVICE = 1 << 4,
};

/* Role sets for routes. */
#define MF_ALLOW_VIEWER   (MF_ROLE_VIEWER | MF_ROLE_OPERATOR | MF_ROLE_ADMIN)
#define MF_ALLOW_OPERATOR (MF_ROLE_OPERATOR | MF_ROLE_ADMIN)
#define MF_ALLOW_ADMIN    (MF_ROLE_ADMIN)

/* Who is calling (filled by the store from a secret's hash). */
struct mf_principal {
    enum mf_role role;
    int64_t token_id; /* api_tokens.id, 0 for a device */
    char name[129];   /* token name, or the device id */
};

/* A new secret with `prefix` (MF_SECRET_API / MF_SECRET_DEVICE) and its hash. */
void mf_secret_new(const char *prefix, char out[MF_SECRET_LEN + 1], uint8_t hash[MF_HASH_BYTES]);

/* Hashes a presented secret after checking its shape; *device tells which
 * table it belongs to. MF_ERR_AUTH for anything that is not a secret. */
MF_MUST_CHECK enum mf_err mf_secret_hash(const char *secret, uint8_t hash[MF_HASH_BYTES],
                                         bool *device);

/* The secret of an `Authorization: Bearer <secret>` header value (borrowed,
 * points into header). MF_ERR_AUTH when absent or another scheme. */
MF_MUST_CHECK enum mf_err mf_auth_bearer(const char *header, const char **secret);

const char *mf_role_name(enum mf_role role);
/* "admin|operator|viewer|enroll" → role; MF_ERR_USAGE otherwise. */
MF_MUST_CHECK enum mf_err mf_role_parse(const char *name, enum mf_role *out);

#endif
