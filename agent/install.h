/* install.h — model slots under <state_dir>/models/<name>/:
 *
 *   <version>-<hash>/     one immutable slot per package content; <hash> is the
 *                         first 16 hex digits of BLAKE2b-256 of the manifest
 *                         bytes (content identity: re-signing keeps the slot)
 *     manifest.json       the exact signed bytes, written last: the slot's
 *     manifest.sig        "complete" marker (payload paths cannot use these names)
 *     model/..., eval/... the payload, as the package lists it
 *   current -> <slot>     relative symlinks, each replaced atomically
 *   previous -> <slot>    (symlink to a temp name, rename over, fsync the dir)
 *   .staging-<hash>/      extraction in progress; a slot appears only by rename
 *
 * Invariants: a slot directory is only ever created complete (payload and
 * marker fsync'd, then renamed into place); `current`, once it exists, is
 * never missing and always names a slot; current and previous are never
 * deleted by pruning. Activation writes `previous` before `current`, so
 * re-running an interrupted activation converges. Rollback swaps the two
 * links in one renameat2(RENAME_EXCHANGE). */
#ifndef MF_AGENT_INSTALL_H
#define MF_AGENT_INSTALL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/state.h"
#include "common/config.h"
#include "common/err.h"
#include "common/hash.h"
#include "packaging/key.h"
#include "packaging/manifest.h"

#define MF_INSTALL_MODELS_DIR "models"
#define MF_INSTALL_HASH_LEN   16 /* hex digits of the manifest hash in a slot name */
#define MF_INSTALL_SLOT_MAX   MF_STATE_SLOT_MAX

/* Test hook for crash tests: when not NULL, called with a static name at each
 * point where a power cut is interesting, and a test that forked a child
 * _exit()s or SIGKILLs it there. NULL in production. The points:
 *   unpack:before-extract  unpack:extracted (payload fsync'd, no marker)
 *   unpack:marker (staging complete)  unpack:renamed (slot in place)
 *   link:temp (temp symlink made, not yet renamed over; once per link set)
 *   activate:previous  activate:current  rollback:swapped
 *   prune:renamed (a slot moved to .staging-rm-*, not yet deleted)
 *   state:temp-written (state.c: temp file written, not yet renamed) */
extern void (*mf_install_crash_hook)(const char *point);

struct mf_install_result {
    char model[MF_NAME_MAX + 1];
    char version[MF_SEMVER_MAX];
    char slot[MF_INSTALL_SLOT_MAX];
    char manifest_hash[MF_HASH_HEX]; /* full BLAKE2b-256 of manifest.json, hex */
    char signer[MF_KEY_ID_LEN + 1];  /* the trusted key that verified */
    bool reused;                     /* the slot already existed, complete */
    bool rebuilt;                    /* an incomplete slot of that name was replaced */
    uint64_t payload_bytes;
    struct mf_manifest *manifest; /* owned: mf_install_result_free */
};

void mf_install_result_free(struct mf_install_result *r);

/* True for "<semver>-<16 lowercase hex>" (at most MF_INSTALL_SLOT_MAX - 1). */
bool mf_install_slot_ok(const char *slot);

/* Verifies the package (signature by `trust`, agent version, every payload
 * hash) and makes its slot: extracted into models/<name>/.staging-<hash>,
 * marked complete, renamed to models/<name>/<version>-<hash>. If that slot
 * exists and is complete (files re-hashed), it is reused without extracting;
 * an incomplete one is rebuilt and swapped in atomically. Leftover staging
 * directories of the model are removed first. disk_budget (0 = none): the
 * sizes of all existing slots plus the new payload must fit, else
 * MF_ERR_DISK_BUDGET before anything is written. agent_version may be NULL.
 * On success *out is the caller's (mf_install_result_free). */
MF_MUST_CHECK enum mf_err mf_install_unpack(const char *pkg_path, const struct mf_keyring *trust,
                                            const char *state_dir, uint64_t disk_budget,
                                            const char *agent_version,
                                            struct mf_install_result *out, struct mf_diag *diag);

/* Makes `slot` (complete, checked) current; the old current becomes previous.
 * Activating the current slot again is a no-op. */
MF_MUST_CHECK enum mf_err mf_install_activate(const char *state_dir, const char *name,
                                              const char *slot, struct mf_diag *diag);

/* Swaps current and previous (previous must be a complete slot).
 * MF_ERR_NOT_FOUND when there is no previous. new_current (may be NULL) gets
 * the slot now current. */
MF_MUST_CHECK enum mf_err mf_install_rollback(const char *state_dir, const char *name,
                                              char new_current[MF_INSTALL_SLOT_MAX],
                                              struct mf_diag *diag);

/* Deletes the oldest slots (by install time) until at most `keep` (>= 1)
 * remain, never current or previous. Call it after activation: a slot just
 * unpacked but not yet active counts like any other. *removed (may be NULL)
 * gets how many slots were deleted. */
MF_MUST_CHECK enum mf_err mf_install_prune(const char *state_dir, const char *name, unsigned keep,
                                           unsigned *removed, struct mf_diag *diag);

/* Bytes the slots of every model take (file sizes). */
uint64_t mf_install_usage(const char *state_dir);

/* Deletes one slot that is neither current nor previous (a refused
 * candidate): MF_ERR_CONFLICT for current or previous; a missing slot is
 * MF_OK. */
MF_MUST_CHECK enum mf_err mf_install_discard(const char *state_dir, const char *name,
                                             const char *slot, struct mf_diag *diag);

/* The slot `current` / `previous` names. MF_ERR_NOT_FOUND when the link does
 * not exist; MF_ERR_PARSE when it does not name a slot. */
MF_MUST_CHECK enum mf_err mf_install_current(const char *state_dir, const char *name,
                                             char slot[MF_INSTALL_SLOT_MAX], struct mf_diag *diag);
MF_MUST_CHECK enum mf_err mf_install_previous(const char *state_dir, const char *name,
                                              char slot[MF_INSTALL_SLOT_MAX], struct mf_diag *diag);

/* "<state_dir>/models/<name>/<slot>" (caller frees). */
char *mf_install_slot_path(const char *state_dir, const char *name, const char *slot);

/* Checks that the slot directory is complete: manifest.json present, hashing
 * to the slot name's hash, its version the name's version, every listed file
 * a regular file of the listed size — and, with rehash, of the listed hash.
 * MF_ERR_MISSING / MF_ERR_SIZE_MISMATCH / MF_ERR_HASH_MISMATCH / ... with the
 * reason. */
MF_MUST_CHECK enum mf_err mf_install_check_slot(const char *slot_path, bool rehash,
                                                struct mf_diag *diag);

/* What mf_install_recover found. Strings are paths relative to state_dir. */
struct mf_install_recovery {
    struct mf_strlist cleaned; /* staging dirs, temp links, temp state files removed */
    struct mf_strlist broken;  /* "<model>: <reason>" where current is not a complete slot */
};
void mf_install_recovery_free(struct mf_install_recovery *r);

/* On start: removes every models/<name>/.staging-* and temp link, and the
 * temp files of an interrupted state save; then checks each model's current
 * (quick check) and reports those that are not complete. *out is the caller's
 * (mf_install_recovery_free), filled even on error. */
MF_MUST_CHECK enum mf_err mf_install_recover(const char *state_dir, struct mf_install_recovery *out,
                                             struct mf_diag *diag);

#endif
