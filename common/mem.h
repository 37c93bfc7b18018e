/* mem.h — allocation that never returns NULL: on failure the process aborts
 * with a message (an edge daemon cannot do anything useful without memory). */
#ifndef MF_MEM_H
#define MF_MEM_H

#include <stddef.h>

#include "err.h"

void *mf_xmalloc(size_t size);
void *mf_xcalloc(size_t n, size_t size);
void *mf_xrealloc(void *ptr, size_t size);
/* realloc for arrays: n * size, aborting on overflow. */
void *mf_xreallocarray(void *ptr, size_t n, size_t size);
char *mf_xstrdup(const char *s);
char *mf_xstrndup(const char *s, size_t n);
/* printf into a new string; caller frees. */
char *mf_xasprintf(const char *fmt, ...) MF_PRINTF(1, 2);

#endif
