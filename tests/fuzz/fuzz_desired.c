/* fuzz_desired.c — libFuzzer target for desired-state messages. The input is
 * read twice: as the JSON body (mf_desired_parse), and as a whole received
 * message (mf_desired_open). Then the input, taken as a body, is signed with
 * the fuzz key and opened: the signature must hold, and open must agree with
 * parse (same refusal, or the same state). Whatever parses must format back to
 * text that parses to the same format (canonical round trip). */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_TARGET "fuzz_desired"
#include "common/encode.h"
#include "common/mem.h"
#include "fuzz_check.h"
#include "fuzz_key.h"
#include "telemetry/desired.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct mf_key_secret key;
static struct mf_keyring trust;

static void roundtrip(const struct mf_desired *d)
{
    size_t len;
    char *text = mf_desired_format(d, &len);
    struct mf_desired *again = NULL;
    struct mf_diag diag = {0};
    if (mf_desired_parse((const uint8_t *)text, len, &again, &diag) != MF_OK)
        fail("the format of a parsed state does not parse: %s: %s (%s)", diag.where, diag.what,
             text);
    char *text2 = mf_desired_format(again, NULL);
    if (strcmp(text, text2) != 0)
        fail("format is not stable:\n%s\n%s", text, text2);
    free(text2);
    free(text);
    mf_desired_free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mf_desired *d = NULL, *o = NULL;
    struct mf_diag pd = {0}, od = {0};
    enum mf_err prc, orc;

    if (!trust.n) {
        fuzz_key_derive(&key);
        mf_keyring_add(&trust, &key.pub);
    }
    prc = mf_desired_parse(data, size, &d, &pd);
    check_diag("mf_desired_parse", prc, &pd);
    if (prc == MF_OK)
        roundtrip(d);

    /* as a received message, signed or not */
    orc = mf_desired_open(data, size, &trust, "pi-0042", 0, &o, NULL, &od);
    check_diag("mf_desired_open", orc, &od);
    mf_desired_free(o);
    o = NULL;

    /* the input as a body, signed by a trusted key */
    if (size <= MF_DESIRED_MAX - 256) {
        size_t clen = strlen(MF_DESIRED_CONTEXT);
        uint8_t *m = mf_xmalloc(clen + size + 1);
        memcpy(m, MF_DESIRED_CONTEXT, clen);
        memcpy(m + clen, data, size);
        uint8_t sig[crypto_sign_BYTES];
        crypto_sign_detached(sig, NULL, m, clen + size, key.sk);
        free(m);
        char b64[128];
        mf_base64_encode(b64, sizeof b64, sig, sizeof sig);
        char *head = mf_xasprintf("%s\ned25519 %s %s\n", MF_DESIRED_MAGIC, key.pub.id, b64);
        size_t hl = strlen(head), ml = hl + size;
        uint8_t *msg = mf_xmalloc(ml + 1);
        memcpy(msg, head, hl);
        memcpy(msg + hl, data, size);
        free(head);
        memset(&od, 0, sizeof od);
        orc = mf_desired_open(msg, ml, &trust, "pi-0042", 0, &o, NULL, &od);
        check_diag("mf_desired_open (signed)", orc, &od);
        if (orc == MF_ERR_BAD_SIGNATURE || orc == MF_ERR_UNKNOWN_KEY || orc == MF_ERR_LAYOUT)
            fail("a body signed by the trusted key was refused: %s", od.what);
        if (prc != MF_OK && orc == MF_OK)
            fail("open accepted a body parse refused (%s)", pd.what);
        if (prc == MF_OK) {
            bool mine = strcmp(d->device, "pi-0042") == 0;
            enum mf_err want = mine ? MF_OK : MF_ERR_WRONG_TARGET;
            if (orc != want)
                fail("open gave %s for a valid body, want %s", mf_errname(orc), mf_errname(want));
        }
        mf_desired_free(o);
        free(msg);
    }
    mf_desired_free(d);
    return 0;
}
