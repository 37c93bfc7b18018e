/* hostile_gen.c — `mf-hostile-gen DIR`: writes every hostile package of the
 * catalogue (tests/support/hostile.c) into DIR, with trusted.pub, for people
 * to try by hand and for fuzzers to start from. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/fs.h"
#include "common/mem.h"
#include "packaging/key.h"
#include "tests/support/hostile.h"

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: mf-hostile-gen DIR\n");
        return 2;
    }
    struct hostile_ctx c;
    mkdir(argv[1], 0755);
    /* The absolute-path case points into DIR, so DIR must be absolute. */
    char *dir = realpath(argv[1], NULL);
    if (!dir) {
        perror(argv[1]);
        return 1;
    }
    argv[1] = dir;
    for (size_t i = 0; i <= hostile_ncases; i++) {
        const char *name = i < hostile_ncases ? hostile_cases[i].name : "valid";
        char *path = mf_xasprintf("%s/%s.mfpkg", argv[1], name);
        hostile_ctx_init(&c, argv[1], path);
        if (i < hostile_ncases)
            hostile_cases[i].build(&c);
        else
            hostile_build_valid(&c);
        free(path);
    }
    char *pub = mf_key_pub_format(&c.trusted.pub);
    char *pubpath = mf_xasprintf("%s/trusted.pub", argv[1]);
    struct mf_diag diag;
    if (mf_fs_write_file(pubpath, pub, strlen(pub), 0644, &diag) != MF_OK)
        return 1;
    printf("wrote %zu packages and trusted.pub to %s\n", hostile_ncases + 1, argv[1]);
    free(pub);
    free(pubpath);
    free(dir);
    return 0;
}
