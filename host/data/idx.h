/*
 * idx.h — a streaming reader for gzip'd IDX files (the MNIST / Fashion-MNIST format),
 * used by the importer (host/data/import.c). It reads through zlib's gz* interface,
 * so plain (uncompressed) IDX files are read too.
 *
 * IDX layout: a big-endian magic 0x0000TTNN (TT the element type, 0x08 = unsigned
 * byte; NN the number of dimensions), then NN big-endian uint32 sizes, then the data
 * in row-major order. Only unsigned-byte files are supported.
 *
 * Every error names the file and what was expected.
 */
#ifndef INFL_IDX_H
#define INFL_IDX_H

#include <stdint.h>

#include "core/internal.h"

#define INFL_IDX_MAX_DIMS 4

typedef struct infl_idx infl_idx;

// Opens `path`, reads and checks its header: element type unsigned byte and exactly
// `ndims` dimensions (1..INFL_IDX_MAX_DIMS), each >= 1. `what` names the content in
// messages ("images", "labels"). *out owns the reader (idx_close).
// INFL_E_IO when the file cannot be opened, INFL_E_FORMAT for a bad magic, a bad
// header, a truncated file or corrupt gzip data.
infl_status idx_open(infl_ctx *ctx, const char *path, int ndims, const char *what, infl_idx **out);

// The dimensions read from the header (dims[0] is the number of items).
int idx_ndims(const infl_idx *f);
uint32_t idx_dim(const infl_idx *f, int i);
// Bytes of data after the header (the product of the dimensions).
uint64_t idx_data_bytes(const infl_idx *f);
const char *idx_path(const infl_idx *f);

// Reads the next `bytes` bytes of data into buf. Reading past the data the header
// announces is INFL_E_ARG (a caller bug); a file that ends early is INFL_E_FORMAT
// naming how many bytes were expected and how many it holds; corrupt gzip data is
// INFL_E_FORMAT with zlib's message.
infl_status idx_read(infl_ctx *ctx, infl_idx *f, uint8_t *buf, uint64_t bytes);

void idx_close(infl_idx *f);  // accepts NULL

#endif
