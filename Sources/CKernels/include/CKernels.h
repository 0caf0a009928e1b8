// Hot loops of nemoshard: dtype conversion, cache-blocked transposes, CRC-32C.
#ifndef NEMOSHARD_CKERNELS_H
#define NEMOSHARD_CKERNELS_H
#include <stddef.h>
#include <stdint.h>

/// Element kinds the kernels understand.
enum ns_elem { NS_BF16 = 0, NS_F16 = 1, NS_F32 = 2 };

/// One f32 value to bf16 bits, round to nearest even, NaN -> 0x7FC0 (as torch).
uint16_t ns_f32_to_bf16(float value);
/// bf16 bits to f32 (exact).
float ns_bf16_to_f32(uint16_t bits);
/// f16 bits to f32 (exact, subnormals included).
float ns_f16_to_f32(uint16_t bits);
/// f32 to f16 bits, round to nearest even (as torch).
uint16_t ns_f32_to_f16(float value);

/// dst[c][r] = convert(src[r][c]) for a rows x cols matrix; both dense, row-major.
/// Returns 0, or -1 for an unsupported pair of element kinds.
int ns_transpose(const void *src, enum ns_elem src_kind, void *dst, enum ns_elem dst_kind,
                 size_t rows, size_t cols);

/// Plain 2-D transpose of raw elements of 1, 2, 4 or 8 bytes. Returns 0, or -1 for another size.
int ns_transpose_raw(const void *src, void *dst, size_t rows, size_t cols, size_t elem_size);
/// Transposes a block of `rows` consecutive rows of a wider matrix: element (r, c) of the dense
/// rows x cols `src` goes to dst[c * dst_stride + r] (dst_stride: the whole matrix's row count,
/// dst already offset to the block's first row). 0, or -1 for another size or dst_stride < rows.
int ns_transpose_rows(const void *src, void *dst, size_t rows, size_t cols, size_t dst_stride, size_t elem_size);

/// CRC-32C (Castagnoli) continued from crc (start with 0).
uint32_t ns_crc32c(uint32_t crc, const void *data, size_t length);

/// What the guarded calls return when the source memory vanished (a mapped file was truncated).
enum { NS_SOURCE_FAULT = -2 };

/// memcpy from memory that may be a mapping of a file another process truncates: 0, or
/// NS_SOURCE_FAULT (SIGBUS caught) with `dst` partly written.
int ns_guarded_copy(void *dst, const void *src, size_t count);
/// ns_transpose under the same guard: its result, or NS_SOURCE_FAULT.
int ns_guarded_transpose(const void *src, enum ns_elem src_kind, void *dst, enum ns_elem dst_kind,
                         size_t rows, size_t cols);
/// ns_transpose_raw under the same guard: its result, or NS_SOURCE_FAULT.
int ns_guarded_transpose_raw(const void *src, void *dst, size_t rows, size_t cols, size_t elem_size);
/// ns_crc32c under the same guard, continuing `*crc`: 0, or NS_SOURCE_FAULT.
int ns_guarded_crc32c(uint32_t *crc, const void *data, size_t length);

/// One e4m3fn byte (float8_e4m3fn) to f32, exactly as torch converts it (0x7F/0xFF: NaN).
float ns_e4m3_to_f32(uint8_t bits);
/// One e2m1 nibble to f32: magnitudes {0, 0.5, 1, 1.5, 2, 3, 4, 6} by bits 0-2, bit 3 the sign.
float ns_e2m1_to_f32(uint8_t nibble);

/// ModelOpt FP8: dst = round(f32(e4m3 src) * scale) of a rows x cols matrix (src one byte per
/// value), row-major, or its cols x rows transpose when `transpose`. 0, or -1 for an unsupported kind.
int ns_dequantize_fp8(const void *src, float scale, void *dst, enum ns_elem dst_kind, size_t rows, size_t cols,
                      int transpose);
/// ModelOpt NVFP4: dst = round(e2m1 * (f32(e4m3 block scale) * global_scale)) of a rows x cols
/// matrix; `packed` holds rows x cols/2 bytes (value 2j in the low nibble, 2j+1 in the high one),
/// `block_scales` rows x cols/16 e4m3 bytes (one per 16 values of a row). Row-major, or the
/// cols x rows transpose when `transpose`. 0, or -1 for an unsupported kind or cols % 16 != 0.
int ns_dequantize_nvfp4(const void *packed, const void *block_scales, float global_scale, void *dst,
                        enum ns_elem dst_kind, size_t rows, size_t cols, int transpose);
/// ns_dequantize_fp8 under the SIGBUS guard: its result, or NS_SOURCE_FAULT.
int ns_guarded_dequantize_fp8(const void *src, float scale, void *dst, enum ns_elem dst_kind, size_t rows,
                              size_t cols, int transpose);
/// ns_dequantize_nvfp4 under the SIGBUS guard: its result, or NS_SOURCE_FAULT.
int ns_guarded_dequantize_nvfp4(const void *packed, const void *block_scales, float global_scale, void *dst,
                                enum ns_elem dst_kind, size_t rows, size_t cols, int transpose);

/// copy_file_range(2) (glibc hides it without _GNU_SOURCE); offsets are advanced.
long ns_copy_file_range(int fd_in, long long *off_in, int fd_out, long long *off_out, size_t len);

/// sync_file_range(SYNC_FILE_RANGE_WRITE): starts writeback of the dirty pages in the range, no wait.
int ns_start_writeback(int fd, long long offset, long long length);

/// renameat2(2) flags (glibc before 2.28 has no wrapper).
enum { NS_RENAME_NOREPLACE = 1, NS_RENAME_EXCHANGE = 2 };

/// renameat2(AT_FDCWD, from, AT_FDCWD, to, flags): NOREPLACE fails with EEXIST instead of replacing
/// `to`; EXCHANGE atomically swaps two existing paths. ENOSYS/EINVAL where unsupported.
int ns_renameat2(const char *from, const char *to, unsigned flags);

#endif
