/* npy.h — the NumPy .npy header (format versions 1.0, 2.0 and 3.0): dtype,
 * memory order and shape. Evaluation inputs and labels are .npy files; pack
 * reads the headers to check the set and count its items, and the agent uses
 * the data offset to feed a runner. */
#ifndef MF_PKG_NPY_H
#define MF_PKG_NPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define MF_NPY_MAX_DIMS 8

struct mf_npy {
    char descr[16]; /* e.g. "<f4", "<i8", "|u1" */
    char kind;      /* 'f' float, 'i' signed, 'u' unsigned, 'b' bool */
    unsigned itemsize;
    bool fortran_order;
    unsigned ndim;
    uint64_t shape[MF_NPY_MAX_DIMS];
    uint64_t data_offset; /* where the array data starts in the file */
    uint64_t data_bytes;  /* product(shape) * itemsize */
};

/* Parses the header at the start of `head` (at least the first 16 KiB of the
 * file, or all of it when shorter). */
MF_MUST_CHECK enum mf_err mf_npy_parse(const uint8_t *head, size_t len, struct mf_npy *out,
                                       struct mf_diag *diag);
/* Reads and parses the header of a file, and checks the file holds exactly
 * the data the header announces. */
MF_MUST_CHECK enum mf_err mf_npy_load_header(const char *path, struct mf_npy *out,
                                             struct mf_diag *diag);

#endif
