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
