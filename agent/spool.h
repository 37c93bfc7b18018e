/* spool.h — the agent's outbox: events and reports wait here, on disk, until
 * the broker acknowledges them (QoS 1 PUBACK), so a broker outage or a crash
 * loses nothing and the server gets them in the order they were produced.
 *
 *   <dir>/<20-digit msg number>.<kind>   one message each ("event" / "report"),
 *                                        written atomically (temp, fsync,
 *                                        rename, fsync dir)
 *   <dir>/meta                           "next <n>\ndropped <d>\nfloor <f>\n",
 *                                        atomic; every number below `floor`
 *                                        was acked or counted as dropped
 *
 * Bounded by a byte and a message cap: when a push would exceed either, the
 * oldest messages are deleted and `dropped` grows by as many (reported in the
 * state message, so the loss itself is visible). Message numbers start at 1,
 * grow by one per push and never repeat, across restarts: the number is the
 * message's "msg" field (telemetry/devmsg.h) and the receiver's dedup key.
 * One thread owns a spool; it is not locked. The directory is the spool's
 * alone: anything else found in it is deleted at open. */
#ifndef MF_AGENT_SPOOL_H
#define MF_AGENT_SPOOL_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "telemetry/devmsg.h"

#define MF_SPOOL_META "meta"

struct mf_spool; /* opaque */

struct mf_spool_limits {
    uint64_t max_bytes;    /* sum of the payload sizes kept, > 0 */
    uint64_t max_messages; /* > 0 */
};

/* Opens (creating dir, mode 0700, if missing) and scans the spool: removes
 * temp files of an interrupted write, skips and deletes files whose names or
 * sizes are not valid (logging each), and reads meta. A message-named file
 * that is empty, over MF_DEVMSG_MAX or not a regular file is a lost message
 * and counted as dropped. A meta file that is missing or corrupt is rebuilt
 * from the files (next = highest number + 1, dropped = 0: logged).
 * Messages over the limits (they may have shrunk) are dropped now, counted.
 * A zero limit is MF_ERR_USAGE. On success *out is the caller's
 * (mf_spool_close). */
MF_MUST_CHECK enum mf_err mf_spool_open(const char *dir, const struct mf_spool_limits *limits,
                                        struct mf_spool **out, struct mf_diag *diag);
void mf_spool_close(struct mf_spool *sp);

/* The number the next pushed message will get. Call it to fill "msg" before
 * formatting the payload, then push with that number. */
uint64_t mf_spool_next(const struct mf_spool *sp);

/* Stores a message numbered mf_spool_next() (MF_ERR_USAGE if `msg` is not
 * that number; kind is MF_DEVMSG_EVENT or MF_DEVMSG_REPORT; an empty payload
 * is MF_ERR_USAGE). A payload larger than max_bytes or MF_DEVMSG_MAX is
 * MF_ERR_TOO_LARGE (nothing stored, the number is still used up and counted
 * as dropped). Drops oldest messages to make room.
 * On MF_ERR_IO nothing is stored and the number is not used up. */
MF_MUST_CHECK enum mf_err mf_spool_push(struct mf_spool *sp, uint64_t msg, enum mf_devmsg_kind kind,
                                        const void *payload, size_t len, struct mf_diag *diag);

/* Pending messages, oldest first: index 0 .. mf_spool_count()-1. */
size_t mf_spool_count(const struct mf_spool *sp);
uint64_t mf_spool_bytes(const struct mf_spool *sp);
/* The number of pending message i (i < mf_spool_count(), else abort). */
uint64_t mf_spool_number(const struct mf_spool *sp, size_t i);
uint64_t mf_spool_dropped(const struct mf_spool *sp);

/* Reads pending message i (0 = oldest): its number, kind and payload
 * (malloc'd, caller frees). i >= mf_spool_count() is MF_ERR_NOT_FOUND. A
 * file that vanished is MF_ERR_NOT_FOUND; one that no longer reads or changed
 * size is MF_ERR_IO (the caller may ack it to skip it). */
MF_MUST_CHECK enum mf_err mf_spool_get(const struct mf_spool *sp, size_t i, uint64_t *msg,
                                       enum mf_devmsg_kind *kind, uint8_t **payload, size_t *len,
                                       struct mf_diag *diag);

/* Reads message `msg` straight from the files in dir, without opening the
 * spool: for a reader (the daemon) while another process owns the spool.
 * Only complete files are ever under a message's name, so what it reads is
 * whole; MF_ERR_NOT_FOUND when the message is gone (acked or dropped). */
MF_MUST_CHECK enum mf_err mf_spool_peek(const char *dir, uint64_t msg, enum mf_devmsg_kind *kind,
                                        uint8_t **payload, size_t *len, struct mf_diag *diag);

/* Deletes message `msg` (acknowledged by the broker). Unknown numbers are a
 * no-op (an ack can arrive twice). */
MF_MUST_CHECK enum mf_err mf_spool_ack(struct mf_spool *sp, uint64_t msg, struct mf_diag *diag);

/* Test hook (NULL in production): called at each crash point of push and
 * ack ("push:temp-written", "push:committed", "push:meta-written",
 * "push:dropping", "ack:meta-written") so a test can _exit() there. */
extern void (*mf_spool_crash_hook)(const char *point);

#endif
