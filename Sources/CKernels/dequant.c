// Dequantization of NVIDIA ModelOpt weights, bit for bit as the torch reference computes it in f32:
//   FP8    value = f32(e4m3fn) * weight_scale                       (one f32 scale per tensor)
//   NVFP4  value = e2m1 * (f32(e4m3fn block scale) * weight_scale_2) (ModelOpt's order: the two
//          scales are multiplied first, NVFP4QTensor.dequantize), one block scale per 16 values of
//          a row; two e2m1 values per byte, element 2j in the low nibble, 2j+1 in the high one.
// The f32 result is stored as f32, or rounded once to bf16 / f16 (ns_f32_to_bf16 / ns_f32_to_f16).
// Every output is a function of few inputs (FP8: the byte; NVFP4: the block scale byte and the
// nibble), so each call first computes that function for all of them, in exactly the arithmetic
// above (through ns_e4m3_to_f32 / ns_e2m1_to_f32), into a table of output bits; the matrix is then
// table lookups, written in strips so a transposed destination gets contiguous runs.
#include "CKernels.h"
#include <string.h>

// ---- scalar decoding -------------------------------------------------------

static inline float bits_to_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float ns_e4m3_to_f32(uint8_t input) {
    // torch's own conversion (c10::detail::fp8e4m3fn_to_fp32_value): exact; 0x7F / 0xFF are NaN
    // (bits 0x7FF00000 with the input's sign), there are no infinities.
    const uint32_t w = (uint32_t)input << 24;
    const uint32_t sign = w & 0x80000000u;
    const uint32_t nonsign = w & 0x7FFFFFFFu;
    uint32_t renorm = nonsign == 0 ? 32 : (uint32_t)__builtin_clz(nonsign);
    renorm = renorm > 4 ? renorm - 4 : 0;
    const uint32_t inf_nan_mask = (uint32_t)(((int32_t)(nonsign + 0x01000000u)) >> 8) & 0x7F800000u;
    const uint32_t zero_mask = (uint32_t)((int32_t)(nonsign - 1) >> 31);
    const uint32_t shifted = renorm >= 32 ? 0 : nonsign << renorm;
    const uint32_t result = sign | ((((shifted >> 4) + ((0x78u - renorm) << 23)) | inf_nan_mask) & ~zero_mask);
    return bits_to_f32(result);
}

float ns_e2m1_to_f32(uint8_t nibble) {
    static const float magnitude[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    const float m = magnitude[nibble & 7u];
    return (nibble & 8u) ? -m : m;  // nibble 0x8 is -0.0, as ModelOpt's table
}

// ---- output tables and strips --------------------------------------------------

static int valid_kind(enum ns_elem kind) { return kind == NS_BF16 || kind == NS_F16 || kind == NS_F32; }

/// The bits `v` is stored as in `kind` (f32: its own bits; bf16 / f16: rounded to nearest even).
static uint32_t output_bits(float v, enum ns_elem kind) {
    switch (kind) {
    case NS_BF16: return ns_f32_to_bf16(v);
    case NS_F16: return ns_f32_to_f16(v);
    case NS_F32: default: { uint32_t u; memcpy(&u, &v, 4); return u; }
    }
}

// Transposed destinations are written in strips of 16 columns (one NVFP4 block) by up to
// STRIP_ROWS rows: each destination row gets a run of STRIP_ROWS contiguous elements while the
// strip's source bytes (STRIP_ROWS short runs) stay in L1.
enum { BLOCK16 = 16, STRIP_ROWS = 128 };

// ---- FP8 ---------------------------------------------------------------------

/// The FP8 matrix through the byte -> output table `out`, as TYPE.
#define FP8_LOOPS(TYPE)                                                                                 \
    {                                                                                                   \
        TYPE *d = dst;                                                                                  \
        if (!transpose) {                                                                               \
            for (size_t i = 0, count = rows * cols; i < count; i++) d[i] = (TYPE)out[q[i]];             \
        } else {                                                                                        \
            for (size_t c0 = 0; c0 < cols; c0 += BLOCK16) {                                             \
                size_t c1 = c0 + BLOCK16 < cols ? c0 + BLOCK16 : cols;                                  \
                for (size_t r0 = 0; r0 < rows; r0 += STRIP_ROWS) {                                      \
                    size_t r1 = r0 + STRIP_ROWS < rows ? r0 + STRIP_ROWS : rows;                        \
                    for (size_t c = c0; c < c1; c++) {                                                  \
                        TYPE *run = d + c * rows;                                                       \
                        for (size_t r = r0; r < r1; r++) run[r] = (TYPE)out[q[r * cols + c]];           \
                    }                                                                                   \
                }                                                                                       \
            }                                                                                           \
        }                                                                                               \
    }

int ns_dequantize_fp8(const void *src, float scale, void *dst, enum ns_elem dst_kind, size_t rows, size_t cols,
                      int transpose) {
    if (!valid_kind(dst_kind)) return -1;
    const uint8_t *q = src;
    uint32_t out[256];  // the output of each byte
    for (int b = 0; b < 256; b++) out[b] = output_bits(ns_e4m3_to_f32((uint8_t)b) * scale, dst_kind);
    if (dst_kind == NS_F32) FP8_LOOPS(uint32_t) else FP8_LOOPS(uint16_t)
    return 0;
}

// ---- NVFP4 -------------------------------------------------------------------

/// The NVFP4 matrix through the (block scale, nibble) -> output table `out`, as TYPE: row by row
/// and block by block, or in strips of one block's 16 columns when transposed.
#define NVFP4_LOOPS(TYPE)                                                                               \
    {                                                                                                   \
        TYPE *d = dst;                                                                                  \
        if (!transpose) {                                                                               \
            for (size_t r = 0; r < rows; r++) {                                                         \
                const uint8_t *bytes = q + r * (cols / 2);                                              \
                TYPE *row = d + r * cols;                                                               \
                for (size_t b = 0; b < blocks; b++) {                                                   \
                    const uint32_t *value = out[s[r * blocks + b]];                                     \
                    for (size_t j = 0; j < BLOCK16 / 2; j++) {                                          \
                        uint8_t byte = bytes[b * (BLOCK16 / 2) + j];                                    \
                        row[b * BLOCK16 + 2 * j] = (TYPE)value[byte & 0x0Fu];                           \
                        row[b * BLOCK16 + 2 * j + 1] = (TYPE)value[byte >> 4];                          \
                    }                                                                                   \
                }                                                                                       \
            }                                                                                           \
        } else {                                                                                        \
            for (size_t b = 0; b < blocks; b++) {                                                       \
                for (size_t r0 = 0; r0 < rows; r0 += STRIP_ROWS) {                                      \
                    size_t r1 = r0 + STRIP_ROWS < rows ? r0 + STRIP_ROWS : rows;                        \
                    for (size_t j = 0; j < BLOCK16 / 2; j++) {                                          \
                        TYPE *even = d + (b * BLOCK16 + 2 * j) * rows, *odd = even + rows;              \
                        for (size_t r = r0; r < r1; r++) {                                              \
                            const uint32_t *value = out[s[r * blocks + b]];                             \
                            uint8_t byte = q[r * (cols / 2) + b * (BLOCK16 / 2) + j];                   \
                            even[r] = (TYPE)value[byte & 0x0Fu];                                        \
                            odd[r] = (TYPE)value[byte >> 4];                                            \
                        }                                                                               \
                    }                                                                                   \
                }                                                                                       \
            }                                                                                           \
        }                                                                                               \
    }

int ns_dequantize_nvfp4(const void *packed, const void *block_scales, float global_scale, void *dst,
                        enum ns_elem dst_kind, size_t rows, size_t cols, int transpose) {
    if (!valid_kind(dst_kind) || cols % BLOCK16 != 0) return -1;
    const uint8_t *q = packed, *s = block_scales;
    uint32_t out[256][16];  // the output of each (block scale byte, nibble): 16 KiB, once per call
    for (int b = 0; b < 256; b++) {
        const float scale = ns_e4m3_to_f32((uint8_t)b) * global_scale;  // ModelOpt: the scales first
        for (int n = 0; n < 16; n++) out[b][n] = output_bits(ns_e2m1_to_f32((uint8_t)n) * scale, dst_kind);
    }
    const size_t blocks = cols / BLOCK16;
    if (dst_kind == NS_F32) NVFP4_LOOPS(uint32_t) else NVFP4_LOOPS(uint16_t)
    return 0;
}
