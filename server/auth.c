/* auth.c — secret generation, hashing and Bearer parsing. */
#include "server/auth.h"

#include <sodium.h>
#include <string.h>
#include <strings.h>

void mf_secret_new(const char *prefix, char out[MF_SECRET_LEN + 1], uint8_t hash[MF_HASH_BYTES])
{
    uint8_t raw[32];

    randombytes_buf(raw, sizeof raw);
    memcpy(out, prefix, 4);
    sodium_bin2base64(out + 4, MF_SECRET_LEN + 1 - 4, raw, sizeof raw,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
    mf_hash_bytes(hash, out, MF_SECRET_LEN);
}

enum mf_err mf_secret_hash(const char *secret, uint8_t hash[MF_HASH_BYTES], bool *device)
{
    if (strlen(secret) != MF_SECRET_LEN)
        return MF_ERR_AUTH;
    if (strncmp(secret, MF_SECRET_API, 4) == 0)
        *device = false;
    else if (strncmp(secret, MF_SECRET_DEVICE, 4) == 0)
        *device = true;
    else
        return MF_ERR_AUTH;
    for (size_t i = 4; i < MF_SECRET_LEN; i++) {
        char c = secret[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return MF_ERR_AUTH;
    }
    mf_hash_bytes(hash, secret, MF_SECRET_LEN);
    return MF_OK;
}

enum mf_err mf_auth_bearer(const char *header, const char **secret)
{
    if (!header || strncasecmp(header, "Bearer ", 7) != 0)
        return MF_ERR_AUTH;
    header += 7;
    while (*header == ' ')
        header++;
    if (!*header)
        return MF_ERR_AUTH;
    *secret = header;
    return MF_OK;
}

static const struct {
    enum mf_role role;
    const char *name;
} auth__roles[] = {
    {MF_ROLE_VIEWER, "viewer"}, {MF_ROLE_OPERATOR, "operator"}, {MF_ROLE_ADMIN, "admin"},
    {MF_ROLE_ENROLL, "enroll"}, {MF_ROLE_DEVICE, "device"},
};

const char *mf_role_name(enum mf_role role)
{
    for (size_t i = 0; i < sizeof auth__roles / sizeof auth__roles[0]; i++)
        if (auth__roles[i].role == role)
            return auth__roles[i].name;
    return "none";
}

enum mf_err mf_role_parse(const char *name, enum mf_role *out)
{
    for (size_t i = 0; i < sizeof auth__roles / sizeof auth__roles[0]; i++)
        if (auth__roles[i].role != MF_ROLE_DEVICE && strcmp(auth__roles[i].name, name) == 0) {
            *out = auth__roles[i].role;
            return MF_OK;
        }
    return MF_ERR_USAGE;
}
