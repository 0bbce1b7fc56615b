/*
 * h5util.h — the small HDF5 layer the store is built on (host/store/ only; not part
 * of the store's API): opening a file and checking infl_format / infl_version,
 * reading and writing attributes (strings fixed or variable length), reading string
 * arrays, listing a group, and naming types and shapes for error messages.
 *
 * Conventions: `path` is the file name as the user gave it and `where` the object
 * ("/model", "/train/x", or "root" for the file's root group); every failure sets
 * the context's detail naming both, and every H5* call is checked.
 */
#ifndef INFL_H5UTIL_H
#define INFL_H5UTIL_H

#include <hdf5.h>
#include <stdint.h>

#include "core/internal.h"

// ---- the store lock ----

// One process-wide recursive mutex around every public store_* function that touches
// HDF5: an HDF5 built without thread safety must never be entered by two threads, and
// the scheduler's reader thread reads shards while the main thread may write other
// files. Recursive, so a locked store function may call another (store_describe
// closes a run it opened). The outermost lock on a thread also replaces HDF5's error
// printing on that thread by a silent handler that notes checksum failures, and the
// outermost unlock clears the thread's HDF5 error stack (both per-thread in
// thread-safe builds; see h5util.c).
void h5u_lock(void);
void h5u_unlock(void);
// h5u_unlock for a store call that ends with status rc: when rc is a failure and an
// HDF5 call failed on a checksum mismatch (metadata of a file written with checksums,
// as infl writes them: h5u_create_infl), the detail says the file is damaged. Returns rc.
infl_status h5u_unlock_rc(infl_ctx *ctx, infl_status rc);

// ---- types and shapes as text ----

// "float32", "int64", "uint8", "string", "string (variable length)", "compound"...
void h5u_type_str(hid_t type, char *buf, size_t size);
// "[100, 3]", "scalar" or "empty".
void h5u_shape_str(hid_t space, char *buf, size_t size);
// "float64 [100]" for a dataset or an attribute.
void h5u_dset_desc(hid_t dset, char *buf, size_t size);
void h5u_attr_desc(hid_t attr, char *buf, size_t size);
// The innermost message of HDF5's error stack ("truncated file: eof = ..."), or "".
void h5u_errmsg(char *buf, size_t size);

// What a dataset holds: its type class, element size, sign and dimensions.
typedef struct {
    H5T_class_t cls;
    size_t size;
    int is_signed;
    int rank;  // -1 for a null dataspace
    hsize_t dims[H5S_MAX_RANK];
    char desc[160];  // "float64 [100, 3]"
} h5u_dinfo;

// Fills `info` for an open dataset; < 0 on an HDF5 failure.
int h5u_dset_info(hid_t dset, h5u_dinfo *info);
// 1 for float32, 1 for int32 (signed), else 0.
static inline int h5u_is_f32(const h5u_dinfo *i) { return i->cls == H5T_FLOAT && i->size == 4; }
static inline int h5u_is_i32(const h5u_dinfo *i) {
    return i->cls == H5T_INTEGER && i->size == 4 && i->is_signed;
}

// ---- sizes a file claims ----
//
// Every size, count, width or shape a reader takes from a file passes here before
// anything is allocated for it, so that a small damaged or hostile file cannot make
// infl ask for gigabytes: a number from an attribute or a type through h5u_claim, a
// dataset through h5u_open_dset (its shape checked against what is really stored),
// and a shape an attribute claims is then compared with that dataset's dims.

// The longest fixed-length string infl reads (an attribute, a class or layer name):
// what it keeps is shorter still (names 63 bytes, paths 4095).
#define H5U_MAX_STRING (1 << 20)

// Checks that v, which the file claims for `what` of object `where` ("the width of
// layer 2", "the string size"), lies in [lo, hi]: INFL_E_FORMAT naming path, where,
// what, the value claimed and the bounds.
infl_status h5u_claim(infl_ctx *ctx, const char *path, const char *where, const char *what, int64_t v, int64_t lo,
                      int64_t hi);

// The physical memory of this machine in bytes (the bound of what is read whole).
uint64_t h5u_mem_bytes(void);

// Opens dataset `name` under loc (`where` names it in messages; `expected` says what
// it should be, e.g. "float32 [N, D]") and fills *info, after checking that its shape
// is real: it is stored in this file (not a virtual dataset, no external raw-data
// files), every element is written (a contiguous dataset's storage is allocated and
// large enough, every chunk of a chunked one is present), and its size (elements ×
// element size) is at most max_bytes (h5u_mem_bytes() for what is read whole,
// UINT64_MAX for what is streamed). INFL_E_FORMAT naming the dataset and the size
// it claims; *out is closed again on failure.
infl_status h5u_open_dset(infl_ctx *ctx, const char *path, hid_t loc, const char *name, const char *where,
                          const char *expected, hid_t dapl, uint64_t max_bytes, hid_t *out, h5u_dinfo *info);

// ---- objects ----

// The type of the object that the link `name` (one path component) under `loc`
// points to: H5O_TYPE_GROUP, H5O_TYPE_DATASET, ...; -1 when there is no such link
// (or it dangles); -2 on an HDF5 failure.
int h5u_obj_type(hid_t loc, const char *name);

// Lists the names of the links in a group in name order. *names is malloc'd (free
// with h5u_list_free); *n may be 0.
infl_status h5u_list(infl_ctx *ctx, const char *path, hid_t group, const char *where, char ***names,
                     int *n);
void h5u_list_free(char **names, int n);

// ---- files ----

// Opens an existing file read-only: names the file when it is missing, unreadable,
// not HDF5 (H5Fis_hdf5), or damaged/truncated.
infl_status h5u_open_ro(infl_ctx *ctx, const char *path, hid_t *out);
// Checks the root attributes: infl_format equal to `want` and infl_version equal to
// INFL_FORMAT_VERSION. INFL_E_FORMAT naming the field that is wrong.
infl_status h5u_check_format(infl_ctx *ctx, const char *path, hid_t file, const char *want);
// h5u_open_ro + h5u_check_format; on failure the file is closed.
infl_status h5u_open_infl(infl_ctx *ctx, const char *path, const char *want, hid_t *out);
// 1 when the open file's root attribute infl_format reads `format`, else 0 (absent, other,
// unreadable: h5u_check_format then says which).
int h5u_format_is(infl_ctx *ctx, const char *path, hid_t file, const char *format);
// Creates (truncates) `tmp` and writes infl_format = format, infl_version. Messages
// name `path`, the final name.
infl_status h5u_create_infl(infl_ctx *ctx, const char *path, const char *tmp, const char *format,
                            hid_t *out);
// Ends a file h5u_create_infl began: closes f (when >= 0), then with rc INFL_OK renames
// tmp to path, else (or when closing fails) removes tmp. Returns the outcome.
infl_status h5u_finish_infl(infl_ctx *ctx, const char *path, const char *tmp, hid_t f, infl_status rc);
// INFL_OK when path is an infl file of this format (and version), else the error. Locks.
infl_status h5u_is_infl(infl_ctx *ctx, const char *path, const char *format);

// ---- attributes: reading ----

// 1 when `obj` has attribute `name`, 0 when not, < 0 on failure.
int h5u_has_attr(hid_t obj, const char *name);
// A string attribute, fixed or variable length, scalar or of one element; copied
// (truncated) into buf.
infl_status h5u_attr_str(infl_ctx *ctx, const char *path, hid_t obj, const char *where,
                         const char *name, char *buf, size_t size);
// An integer attribute (any integer type), scalar or of one element.
infl_status h5u_attr_i64(infl_ctx *ctx, const char *path, hid_t obj, const char *where,
                         const char *name, int64_t *v);
// Same, read as unsigned (a negative signed value is stored as its two's complement).
infl_status h5u_attr_u64(infl_ctx *ctx, const char *path, hid_t obj, const char *where,
                         const char *name, uint64_t *v);
// A number attribute (float or integer), scalar or of one element.
infl_status h5u_attr_f64(infl_ctx *ctx, const char *path, hid_t obj, const char *where,
                         const char *name, double *v);
// A 1-D integer attribute of min_n to max_n entries, into v (max_n entries).
infl_status h5u_attr_ints(infl_ctx *ctx, const char *path, hid_t obj, const char *where,
                          const char *name, int min_n, int max_n, int64_t *v, int *n);
// The value of an attribute as short text: "'relu'", "0.0001", "[784, 256, 10]", or
// its type and shape when it is long or not a number or string.
void h5u_attr_value_str(hid_t attr, char *buf, size_t size);

// ---- attributes: writing (an existing attribute of the name is replaced) ----
// h5u_wattr_i32s writes int32 [n], or a scalar when n is 0.

infl_status h5u_wattr_str(infl_ctx *ctx, const char *path, hid_t obj, const char *where,
                          const char *name, const char *value);
infl_status h5u_wattr_i32s(infl_ctx *ctx, const char *path, hid_t obj, const char *where,
                           const char *name, const int32_t *v, int n);
infl_status h5u_wattr_i64(infl_ctx *ctx, const char *path, hid_t obj, const char *where,
                          const char *name, int64_t v);
infl_status h5u_wattr_u64(infl_ctx *ctx, const char *path, hid_t obj, const char *where,
                          const char *name, uint64_t v);
infl_status h5u_wattr_f64(infl_ctx *ctx, const char *path, hid_t obj, const char *where,
                          const char *name, double v);

// ---- string datasets ----

// Reads a 1-D string dataset (fixed or variable length): *count gets its length and
// the first min(count, max) entries are copied into names, each truncated to 63
// bytes. names may be NULL (max 0) to count only.
infl_status h5u_read_strings(infl_ctx *ctx, const char *path, hid_t dset, const char *where,
                             char (*names)[64], int max, int64_t *count);
// ---- numeric datasets ----

// Writes dataset `name` under loc, [rows, cols] (1-D [rows] when cols is 0), stored as
// file_type, from `data` in mem_type (nothing is written for an empty one). Messages
// name path, where/name.
infl_status h5u_write_array(infl_ctx *ctx, const char *path, hid_t loc, const char *where, const char *name,
                            hid_t file_type, hid_t mem_type, hsize_t rows, hsize_t cols, const void *data);

// Writes a 1-D fixed-length (null-terminated) string dataset `name` under loc.
infl_status h5u_write_strings(infl_ctx *ctx, const char *path, hid_t loc, const char *where,
                              const char *name, const char *const *v, int n);

#endif
