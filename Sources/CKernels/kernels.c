#include "CKernels.h"
#include <string.h>

// ---- scalar conversions -------------------------------------------------

static inline uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

uint16_t ns_f32_to_bf16(float value) {
    uint32_t u = f32_bits(value);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0;  // NaN
    uint32_t bias = ((u >> 16) & 1u) + 0x7FFFu;
    return (uint16_t)((u + bias) >> 16);
}

float ns_bf16_to_f32(uint16_t bits) { return bits_f32((uint32_t)bits << 16); }

float ns_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t man = h & 0x3FFu;
    uint32_t out;
    if (exp == 0) {
        if (man == 0) {
            out = sign;
        } else {  // subnormal: normalise
            int e = -1;
            do { man <<= 1; e++; } while ((man & 0x400u) == 0);
            man &= 0x3FFu;
            out = sign | ((uint32_t)(127 - 15 - e) << 23) | (man << 13);
        }
    } else if (exp == 0x1F) {
        out = sign | 0x7F800000u | (man << 13);
    } else {
        out = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    return bits_f32(out);
}

uint16_t ns_f32_to_f16(float value) {
    uint32_t u = f32_bits(value);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return sign | 0x7E00u;  // NaN
    if (a == 0x7F800000u) return sign | 0x7C00u; // inf
    if (a >= 0x38800000u) {                       // normal f16 range, or overflow
        uint32_t r = (a + 0xFFFu + ((a >> 13) & 1u)) >> 13;
        r -= (uint32_t)(127 - 15) << 10;
        return r >= 0x7C00u ? (uint16_t)(sign | 0x7C00u) : (uint16_t)(sign | r);
    }
    if (a < 0x33000000u) return sign;             // below half the smallest subnormal
    uint32_t shift = 126u - (a >> 23);            // 14 ... 24
    uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
    uint32_t r = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (r & 1u))) r++;
    return (uint16_t)(sign | r);
}

// ---- element load/store per kind -----------------------------------------

#define LOAD_BF16(p, i) ns_bf16_to_f32(((const uint16_t *)(p))[i])
#define LOAD_F16(p, i) ns_f16_to_f32(((const uint16_t *)(p))[i])
#define LOAD_F32(p, i) (((const float *)(p))[i])
#define STORE_BF16(p, i, v) (((uint16_t *)(p))[i] = ns_f32_to_bf16(v))
#define STORE_F16(p, i, v) (((uint16_t *)(p))[i] = ns_f32_to_f16(v))
#define STORE_F32(p, i, v) (((float *)(p))[i] = (v))

enum { BLOCK = 32 };

#define DEFINE_TRANSPOSE(NAME, LOAD, STORE)                                         \
    static void NAME(const void *src, void *dst, size_t rows, size_t cols) {        \
        for (size_t r0 = 0; r0 < rows; r0 += BLOCK) {                               \
            size_t r1 = r0 + BLOCK < rows ? r0 + BLOCK : rows;                      \
            for (size_t c0 = 0; c0 < cols; c0 += BLOCK) {                           \
                size_t c1 = c0 + BLOCK < cols ? c0 + BLOCK : cols;                  \
                for (size_t c = c0; c < c1; c++)                                    \
                    for (size_t r = r0; r < r1; r++)                                \
                        STORE(dst, c * rows + r, LOAD(src, r * cols + c));          \
            }                                                                       \
        }                                                                           \
    }

DEFINE_TRANSPOSE(t_bf16_f16, LOAD_BF16, STORE_F16)
DEFINE_TRANSPOSE(t_bf16_f32, LOAD_BF16, STORE_F32)
DEFINE_TRANSPOSE(t_f16_bf16, LOAD_F16, STORE_BF16)
DEFINE_TRANSPOSE(t_f16_f32, LOAD_F16, STORE_F32)
DEFINE_TRANSPOSE(t_f32_bf16, LOAD_F32, STORE_BF16)
DEFINE_TRANSPOSE(t_f32_f16, LOAD_F32, STORE_F16)

// Raw transposes: T x T tiles, walked column strip by column strip. A strip is one cache line of
// each source row (64 bytes) and up to 512 rows: the source is read a line at a time and every
// destination row of the strip is written in one long run, so neither side thrashes the TLB or
// the L1 sets (2.4 -> 5.2 GB/s for Nano's 2688 x 1856 bf16 matrices against 64 x 64 square
// blocks, the README's measurement). Scalar edges.
#define DEFINE_BLOCKED(NAME, TYPE, T, TILE)                                                \
    static void NAME(const TYPE *restrict src, TYPE *restrict dst, size_t rows, size_t cols, size_t ds) { \
        enum { BR = 512, LINE = 64 / sizeof(TYPE), BC = LINE < T ? T : LINE };          \
        for (size_t r0 = 0; r0 < rows; r0 += BR) {                                      \
            size_t r1 = r0 + BR < rows ? r0 + BR : rows;                                \
            for (size_t c0 = 0; c0 < cols; c0 += BC) {                                  \
                size_t c1 = c0 + BC < cols ? c0 + BC : cols;                            \
                size_t c = c0;                                                          \
                for (; c + T <= c1; c += T) {                                           \
                    size_t r = r0;                                                      \
                    for (; r + T <= r1; r += T)                                         \
                        TILE(src + r * cols + c, cols, dst + c * ds + r, ds);           \
                    for (; r < r1; r++)                                                 \
                        for (size_t i = 0; i < T; i++) dst[(c + i) * ds + r] = src[r * cols + c + i]; \
                }                                                                       \
                for (; c < c1; c++)                                                     \
                    for (size_t r = r0; r < r1; r++) dst[c * ds + r] = src[r * cols + c]; \
            }                                                                           \
        }                                                                               \
    }


// A scalar 8x8 tile (element sizes without a SIMD tile, and other CPUs).
#define DEFINE_SCALAR_TILE(NAME, TYPE)                                                 \
    static inline void NAME(const TYPE *s, size_t ss, TYPE *d, size_t ds) {            \
        for (int j = 0; j < 8; j++)                                                    \
            for (int i = 0; i < 8; i++) d[j * ds + i] = s[i * ss + j];                 \
    }

DEFINE_SCALAR_TILE(scalar8, uint8_t)
DEFINE_SCALAR_TILE(scalar64, uint64_t)
DEFINE_BLOCKED(t_raw8, uint8_t, 8, scalar8)
DEFINE_BLOCKED(t_raw64, uint64_t, 8, scalar64)

#if defined(__SSE2__)
#include <emmintrin.h>

// 8x8 tile of 16-bit elements: three rounds of unpacks.
static inline void tile16(const uint16_t *s, size_t ss, uint16_t *d, size_t ds) {
    __m128i r0 = _mm_loadu_si128((const __m128i *)(s + 0 * ss)), r1 = _mm_loadu_si128((const __m128i *)(s + 1 * ss));
    __m128i r2 = _mm_loadu_si128((const __m128i *)(s + 2 * ss)), r3 = _mm_loadu_si128((const __m128i *)(s + 3 * ss));
    __m128i r4 = _mm_loadu_si128((const __m128i *)(s + 4 * ss)), r5 = _mm_loadu_si128((const __m128i *)(s + 5 * ss));
    __m128i r6 = _mm_loadu_si128((const __m128i *)(s + 6 * ss)), r7 = _mm_loadu_si128((const __m128i *)(s + 7 * ss));
    __m128i t0 = _mm_unpacklo_epi16(r0, r1), t1 = _mm_unpackhi_epi16(r0, r1);
    __m128i t2 = _mm_unpacklo_epi16(r2, r3), t3 = _mm_unpackhi_epi16(r2, r3);
    __m128i t4 = _mm_unpacklo_epi16(r4, r5), t5 = _mm_unpackhi_epi16(r4, r5);
    __m128i t6 = _mm_unpacklo_epi16(r6, r7), t7 = _mm_unpackhi_epi16(r6, r7);
    __m128i u0 = _mm_unpacklo_epi32(t0, t2), u1 = _mm_unpackhi_epi32(t0, t2);
    __m128i u2 = _mm_unpacklo_epi32(t1, t3), u3 = _mm_unpackhi_epi32(t1, t3);
    __m128i u4 = _mm_unpacklo_epi32(t4, t6), u5 = _mm_unpackhi_epi32(t4, t6);
    __m128i u6 = _mm_unpacklo_epi32(t5, t7), u7 = _mm_unpackhi_epi32(t5, t7);
    _mm_storeu_si128((__m128i *)(d + 0 * ds), _mm_unpacklo_epi64(u0, u4));
    _mm_storeu_si128((__m128i *)(d + 1 * ds), _mm_unpackhi_epi64(u0, u4));
    _mm_storeu_si128((__m128i *)(d + 2 * ds), _mm_unpacklo_epi64(u1, u5));
    _mm_storeu_si128((__m128i *)(d + 3 * ds), _mm_unpackhi_epi64(u1, u5));
    _mm_storeu_si128((__m128i *)(d + 4 * ds), _mm_unpacklo_epi64(u2, u6));
    _mm_storeu_si128((__m128i *)(d + 5 * ds), _mm_unpackhi_epi64(u2, u6));
    _mm_storeu_si128((__m128i *)(d + 6 * ds), _mm_unpacklo_epi64(u3, u7));
    _mm_storeu_si128((__m128i *)(d + 7 * ds), _mm_unpackhi_epi64(u3, u7));
}

// 4x4 tile of 32-bit elements.
static inline void tile32(const uint32_t *s, size_t ss, uint32_t *d, size_t ds) {
    __m128i r0 = _mm_loadu_si128((const __m128i *)(s + 0 * ss)), r1 = _mm_loadu_si128((const __m128i *)(s + 1 * ss));
    __m128i r2 = _mm_loadu_si128((const __m128i *)(s + 2 * ss)), r3 = _mm_loadu_si128((const __m128i *)(s + 3 * ss));
    __m128i t0 = _mm_unpacklo_epi32(r0, r1), t1 = _mm_unpacklo_epi32(r2, r3);
    __m128i t2 = _mm_unpackhi_epi32(r0, r1), t3 = _mm_unpackhi_epi32(r2, r3);
    _mm_storeu_si128((__m128i *)(d + 0 * ds), _mm_unpacklo_epi64(t0, t1));
    _mm_storeu_si128((__m128i *)(d + 1 * ds), _mm_unpackhi_epi64(t0, t1));
    _mm_storeu_si128((__m128i *)(d + 2 * ds), _mm_unpacklo_epi64(t2, t3));
    _mm_storeu_si128((__m128i *)(d + 3 * ds), _mm_unpackhi_epi64(t2, t3));
}

DEFINE_BLOCKED(t_raw16, uint16_t, 8, tile16)
DEFINE_BLOCKED(t_raw32, uint32_t, 4, tile32)
#else
DEFINE_SCALAR_TILE(scalar16, uint16_t)
DEFINE_SCALAR_TILE(scalar32, uint32_t)
DEFINE_BLOCKED(t_raw16, uint16_t, 8, scalar16)
DEFINE_BLOCKED(t_raw32, uint32_t, 8, scalar32)
#endif

int ns_transpose_rows(const void *src, void *dst, size_t rows, size_t cols, size_t dst_stride, size_t elem_size) {
    if (dst_stride < rows) return -1;
    switch (elem_size) {
    case 1: t_raw8(src, dst, rows, cols, dst_stride); return 0;
    case 2: t_raw16(src, dst, rows, cols, dst_stride); return 0;
    case 4: t_raw32(src, dst, rows, cols, dst_stride); return 0;
    case 8: t_raw64(src, dst, rows, cols, dst_stride); return 0;
    default: return -1;
    }
}

int ns_transpose_raw(const void *src, void *dst, size_t rows, size_t cols, size_t elem_size) {
    return ns_transpose_rows(src, dst, rows, cols, rows, elem_size);
}

static size_t kind_size(enum ns_elem k) { return k == NS_F32 ? 4 : 2; }

int ns_transpose(const void *src, enum ns_elem s, void *dst, enum ns_elem d, size_t rows, size_t cols) {
    if (s == d) return ns_transpose_raw(src, dst, rows, cols, kind_size(s));
    if (s == NS_BF16 && d == NS_F16) { t_bf16_f16(src, dst, rows, cols); return 0; }
    if (s == NS_BF16 && d == NS_F32) { t_bf16_f32(src, dst, rows, cols); return 0; }
    if (s == NS_F16 && d == NS_BF16) { t_f16_bf16(src, dst, rows, cols); return 0; }
    if (s == NS_F16 && d == NS_F32) { t_f16_f32(src, dst, rows, cols); return 0; }
    if (s == NS_F32 && d == NS_BF16) { t_f32_bf16(src, dst, rows, cols); return 0; }
    if (s == NS_F32 && d == NS_F16) { t_f32_f16(src, dst, rows, cols); return 0; }
    return -1;
}

// ---- CRC-32C ---------------------------------------------------------------

static uint32_t crc_table[8][256];
static int crc_ready = 0;

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xFF];
    __atomic_store_n(&crc_ready, 1, __ATOMIC_RELEASE);
}

static uint32_t crc_soft(uint32_t crc, const uint8_t *p, size_t n) {
    if (!__atomic_load_n(&crc_ready, __ATOMIC_ACQUIRE)) crc_init();
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= crc;
        crc = crc_table[7][w & 0xFF] ^ crc_table[6][(w >> 8) & 0xFF] ^ crc_table[5][(w >> 16) & 0xFF] ^
              crc_table[4][(w >> 24) & 0xFF] ^ crc_table[3][(w >> 32) & 0xFF] ^ crc_table[2][(w >> 40) & 0xFF] ^
              crc_table[1][(w >> 48) & 0xFF] ^ crc_table[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xFF];
    return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const uint8_t *p, size_t n) {
    uint64_t c = crc;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = __builtin_ia32_crc32di(c, w);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
    return c32;
}
#endif

uint32_t ns_crc32c(uint32_t crc, const void *data, size_t length) {
    crc = ~crc;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("sse4.2")) return ~crc_hw(crc, data, length);
#endif
    return ~crc_soft(crc, data, length);
}
