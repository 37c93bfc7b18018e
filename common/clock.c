/* clock.c — time helpers; timegm-free so parsing is exact and portable. */
#include "clock.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

int64_t mf_clock_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec;
}

int64_t mf_clock_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void mf_time_format(int64_t t, char out[MF_RFC3339_LEN])
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, MF_RFC3339_LEN, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian), after H. Hinnant. */
static int64_t clock__days(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

enum mf_err mf_time_parse(const char *s, int64_t *out)
{
    unsigned y, mo, d, h, mi, sec;
    int n = 0;
    static const unsigned mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (strlen(s) != MF_RFC3339_LEN - 1)
        return MF_ERR_PARSE;
    if (sscanf(s, "%4u-%2u-%2uT%2u:%2u:%2uZ%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 ||
        n != MF_RFC3339_LEN - 1)
        return MF_ERR_PARSE;
    for (int i = 0; i < MF_RFC3339_LEN - 1; i++) {
        int digit = s[i] >= '0' && s[i] <= '9';
        int sep = i == 4 || i == 7 || i == 10 || i == 13 || i == 16 || i == 19;
        if (digit == sep)
            return MF_ERR_PARSE;
    }
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 ||
        sec > 59)
        return MF_ERR_PARSE;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo == 2 && d == 29 && !leap)
        return MF_ERR_PARSE;
    *out = clock__days(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec;
    return MF_OK;
}

uint64_t mf_clock_jitter(uint64_t d)
{
    uint64_t half = d / 2;
    uint64_t span = d - half;
    if (span == 0)
        return d;
    if (span > UINT32_MAX - 1)
        span = UINT32_MAX - 1;
    return half + randombytes_uniform((uint32_t)span + 1);
}
