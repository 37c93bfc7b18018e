/* cmd_keygen.c — `modelfleet keygen --out PREFIX`. */
#include <getopt.h>
#include <sodium.h>
#include <stdio.h>

#include "cli/cli.h"
#include "packaging/key.h"

int mf_cli_keygen(int argc, char **argv)
{
    static const struct option opts[] = {
        {"out", required_argument, NULL, 'o'}, {"help", no_argument, NULL, 'h'}, {0}};
    const char *prefix = NULL;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o':
            prefix = optarg;
            break;
        case 'h':
            printf("usage: modelfleet keygen --out PREFIX\n\n"
                   "Creates an Ed25519 key pair: PREFIX.key (secret, mode 0600) and PREFIX.pub.\n"
                   "Prints the key id. Refuses to overwrite an existing PREFIX.key.\n");
            return MF_EXIT_OK;
        default:
            return mf_cli_usage_error("keygen", "unknown option");
        }
    }
    if (!prefix || optind != argc)
        return mf_cli_usage_error("keygen", "expected --out PREFIX and nothing else");
    struct mf_key_secret k;
    struct mf_diag diag = {0};
    mf_key_generate(&k);
    enum mf_err err = mf_key_write_pair(&k, prefix, &diag);
    sodium_memzero(&k.sk, sizeof k.sk);
    if (err != MF_OK)
        return mf_cli_fail("keygen", &diag);
    printf("key id      %s\nsecret key  %s.key (keep it private)\npublic key  %s.pub\n", k.pub.id,
           prefix, prefix);
    return MF_EXIT_OK;
}
