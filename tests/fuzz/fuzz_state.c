/* fuzz_state.c — libFuzzer target for the agent's state file (agent/state.c):
 * a file on the device's disk that a power cut, a bad sector or a person may
 * have mangled. mf_state_parse must refuse with a named error or give a state
 * whose format parses back to the same text (canonical round trip). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_TARGET "fuzz_state"
#include "agent/state.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mf_state *s = NULL, *again = NULL;
    struct mf_diag diag = {0};
    enum mf_err rc = mf_state_parse(data, size, &s, &diag);

    check_diag("mf_state_parse", rc, &diag);
    if (rc != MF_OK) {
        if (s)
            fail("a refused state file still produced a state");
        return 0;
    }
    size_t len, len2;
    char *text = mf_state_format(s, &len);
    memset(&diag, 0, sizeof diag);
    if (mf_state_parse((const uint8_t *)text, len, &again, &diag) != MF_OK)
        fail("the format of a parsed state does not parse: %s: %s\n%s", diag.where, diag.what,
             text);
    char *text2 = mf_state_format(again, &len2);
    if (len != len2 || memcmp(text, text2, len) != 0)
        fail("format is not stable:\n%s\n%s", text, text2);
    free(text2);
    free(text);
    mf_state_free(again);
    mf_state_free(s);
    return 0;
}
