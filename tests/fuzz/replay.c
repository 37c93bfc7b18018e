/* replay.c — the main() of a fuzz target built without libFuzzer: runs
 * LLVMFuzzerTestOneInput once on every file named, or found (recursively, in
 * name order) in a directory named, on the command line. Each input is an
 * exact-size heap copy so the sanitizers see any overread. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Provided by the sanitizer runtimes when they are linked in. */
void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

static const char *current; /* the input being run, for crash messages */

static void replay__say_input(void)
{
    if (current) {
        static const char msg[] = "replay: the failing input is ";
        ssize_t rc = write(STDERR_FILENO, msg, sizeof msg - 1);
        rc += write(STDERR_FILENO, current, strlen(current));
        rc += write(STDERR_FILENO, "\n", 1);
        (void)rc;
    }
}

static void replay__on_signal(int sig)
{
    replay__say_input();
    signal(sig, SIG_DFL);
    raise(sig);
}

static int replay__file(const char *path, size_t *count)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    size_t size = (size_t)st.st_size, got = 0;
    uint8_t *data = malloc(size ? size : 1);
    if (!data)
        abort();
    while (got < size) {
        ssize_t n = read(fd, data + got, size - got);
        if (n <= 0) {
            fprintf(stderr, "replay: %s: %s\n", path, n < 0 ? strerror(errno) : "file shrank");
            free(data);
            close(fd);
            return -1;
        }
        got += (size_t)n;
    }
    close(fd);
    current = path;
    LLVMFuzzerTestOneInput(data, size);
    current = NULL;
    free(data);
    (*count)++;
    return 0;
}

static int replay__path(const char *path, size_t *count)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode))
        return replay__file(path, count);
    struct dirent **names = NULL;
    int n = scandir(path, &names, NULL, alphasort), rc = 0;
    if (n < 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    for (int i = 0; i < n; i++) {
        const char *name = names[i]->d_name;
        if (name[0] != '.' && rc == 0) { /* skips ".", ".." and hidden files */
            size_t len = strlen(path) + strlen(name) + 2;
            char *child = malloc(len);
            if (!child)
                abort();
            snprintf(child, len, "%s/%s", path, name);
            rc = replay__path(child, count);
            free(child);
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    size_t count = 0;
    if (argc < 2) {
        fprintf(stderr,
                "usage: %s FILE|DIR...\n"
                "Runs the fuzz target once on each file (directories recursively).\n",
                argv[0]);
        return 2;
    }
    /* abort() from a target's own checks; the sanitizers report the rest
     * (and keep their own fault handlers) when they are linked in. */
    signal(SIGABRT, replay__on_signal);
    if (__sanitizer_set_death_callback) {
        __sanitizer_set_death_callback(replay__say_input);
    } else {
        signal(SIGSEGV, replay__on_signal);
        signal(SIGBUS, replay__on_signal);
        signal(SIGFPE, replay__on_signal);
    }
    for (int i = 1; i < argc; i++)
        if (replay__path(argv[i], &count) != 0)
            return 1;
    printf("replayed %zu inputs\n", count);
    if (count == 0) {
        fprintf(stderr, "replay: no inputs found\n");
        return 1;
    }
    return 0;
}
