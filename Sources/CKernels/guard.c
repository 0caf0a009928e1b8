// Reads of mapped input files that survive the file shrinking underneath them. A truncated file's
// pages past the new end raise SIGBUS when touched; inside these calls the handler jumps back and
// the call returns NS_SOURCE_FAULT, so the caller can report the file instead of crashing. A
// SIGBUS anywhere else goes to whatever handler was installed before (the default: a core dump).
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <string.h>
#include "CKernels.h"

static __thread sigjmp_buf *guard_jump;
static struct sigaction previous_action;
static pthread_once_t install_once = PTHREAD_ONCE_INIT;

static void on_sigbus(int signal_number, siginfo_t *info, void *context) {
    sigjmp_buf *jump = guard_jump;
    if (jump) {
        guard_jump = NULL;
        siglongjmp(*jump, 1);
    }
    // Not ours: restore the previous disposition; the faulting access runs again and meets it.
    (void)signal_number; (void)info; (void)context;
    sigaction(SIGBUS, &previous_action, NULL);
}

static void install(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_sigbus;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    sigaction(SIGBUS, &action, &previous_action);
}

#define GUARDED(expression)                               \
    do {                                                  \
        sigjmp_buf jump;                                  \
        pthread_once(&install_once, install);             \
        if (sigsetjmp(jump, 1)) return NS_SOURCE_FAULT;   \
        guard_jump = &jump;                               \
        int result_ = (expression);                       \
        guard_jump = NULL;                                \
        return result_;                                   \
    } while (0)

static int copy_bytes(void *dst, const void *src, size_t count) {
    memcpy(dst, src, count);
    return 0;
}

int ns_guarded_copy(void *dst, const void *src, size_t count) { GUARDED(copy_bytes(dst, src, count)); }

int ns_guarded_transpose(const void *src, enum ns_elem src_kind, void *dst, enum ns_elem dst_kind,
                         size_t rows, size_t cols) {
    GUARDED(ns_transpose(src, src_kind, dst, dst_kind, rows, cols));
}

int ns_guarded_transpose_raw(const void *src, void *dst, size_t rows, size_t cols, size_t elem_size) {
    GUARDED(ns_transpose_raw(src, dst, rows, cols, elem_size));
}

static int crc_into(uint32_t *crc, const void *data, size_t length) {
    *crc = ns_crc32c(*crc, data, length);
    return 0;
}

int ns_guarded_crc32c(uint32_t *crc, const void *data, size_t length) { GUARDED(crc_into(crc, data, length)); }

int ns_guarded_dequantize_fp8(const void *src, float scale, void *dst, enum ns_elem dst_kind, size_t rows,
                              size_t cols, int transpose) {
    GUARDED(ns_dequantize_fp8(src, scale, dst, dst_kind, rows, cols, transpose));
}

int ns_guarded_dequantize_nvfp4(const void *packed, const void *block_scales, float global_scale, void *dst,
                                enum ns_elem dst_kind, size_t rows, size_t cols, int transpose) {
    GUARDED(ns_dequantize_nvfp4(packed, block_scales, global_scale, dst, dst_kind, rows, cols, transpose));
}
