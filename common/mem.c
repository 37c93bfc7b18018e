/* mem.c — aborting allocators. */
#include "mem.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void mem__die(size_t size)
{
    fprintf(stderr, "modelfleet: out of memory allocating %zu bytes\n", size);
    abort();
}

void *mf_xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (!p)
        mem__die(size);
    return p;
}

void *mf_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        mem__die(n * size);
    return p;
}

void *mf_xrealloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size ? size : 1);
    if (!p)
        mem__die(size);
    return p;
}

void *mf_xreallocarray(void *ptr, size_t n, size_t size)
{
    if (size && n > (size_t)-1 / size)
        mem__die((size_t)-1);
    return mf_xrealloc(ptr, n * size);
}

char *mf_xstrdup(const char *s)
{
    return mf_xstrndup(s, strlen(s));
}

char *mf_xstrndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *p = mf_xmalloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

char *mf_xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        mem__die(0);
    char *p = mf_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}
