/* migrations.h — the schema migrations compiled into the server, in order
 * (generated from schema/NNNN_name.sql by server/embed_schema.cmake). */
#ifndef MF_SERVER_MIGRATIONS_H
#define MF_SERVER_MIGRATIONS_H

struct mf_migration {
    int version;      /* NNNN */
    const char *name; /* "NNNN_name" */
    const char *sql;  /* the whole file */
};

extern const struct mf_migration mf_migrations[];
extern const unsigned mf_migrations_count;

#endif
