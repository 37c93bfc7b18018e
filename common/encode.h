/* encode.h — hex and base64 (standard alphabet, padded) over libsodium's
 * constant-time codecs. Decoders reject anything that is not exactly one
 * value: no whitespace, no trailing garbage. */
#ifndef MF_ENCODE_H
#define MF_ENCODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* Lower-case hex of n bytes into out (2n + 1 bytes, NUL-terminated). */
void mf_hex_encode(char *out, const uint8_t *in, size_t n);
/* Decodes exactly `n` bytes from a string of exactly 2n hex digits. */
MF_MUST_CHECK enum mf_err mf_hex_decode(uint8_t *out, size_t n, const char *hex);

/* Size of the base64 text (with NUL) for n bytes. */
size_t mf_base64_encoded_size(size_t n);
void mf_base64_encode(char *out, size_t out_size, const uint8_t *in, size_t n);
/* Decodes into out (capacity cap); writes the decoded length to *n. */
MF_MUST_CHECK enum mf_err mf_base64_decode(uint8_t *out, size_t cap, size_t *n, const char *b64);

/* Reads the decimal digits at *p into *out and advances *p past them.
 * false (nothing changed) when there is no digit or the value overflows
 * uint64_t. Signs, spaces and leading-zero rules are the caller's. */
MF_MUST_CHECK bool mf_dec_u64(const char **p, uint64_t *out);

#endif
