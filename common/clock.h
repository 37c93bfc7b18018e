/* clock.h — wall-clock and monotonic time, and RFC 3339 UTC timestamps
 * ("2026-11-22T02:46:13Z") as used in manifests and messages. */
#ifndef MF_CLOCK_H
#define MF_CLOCK_H

#include <stdint.h>

#include "err.h"

#define MF_RFC3339_LEN 21 /* "YYYY-MM-DDTHH:MM:SSZ" + NUL */

int64_t mf_clock_now(void);     /* seconds since the epoch */
int64_t mf_clock_mono_ns(void); /* monotonic nanoseconds */
/* A uniform random draw in [d/2, d]: the jitter of every backoff (downloads,
 * broker reconnects), so a fleet that lost its server does not return in
 * lockstep. */
uint64_t mf_clock_jitter(uint64_t d);
void mf_time_format(int64_t t, char out[MF_RFC3339_LEN]);
/* Accepts exactly "YYYY-MM-DDTHH:MM:SSZ", from 1970 on, no leap second (so
 * formatting the result gives the same text back). */
MF_MUST_CHECK enum mf_err mf_time_parse(const char *s, int64_t *out);

#endif
