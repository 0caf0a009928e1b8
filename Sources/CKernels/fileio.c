#define _GNU_SOURCE
#include <unistd.h>
#include "CKernels.h"

long ns_copy_file_range(int fd_in, long long *off_in, int fd_out, long long *off_out, size_t len) {
    off64_t in = *off_in, out = *off_out;
    ssize_t n = copy_file_range(fd_in, &in, fd_out, &out, len, 0);
    *off_in = in;
    *off_out = out;
    return (long)n;
}

#include <fcntl.h>

int ns_start_writeback(int fd, long long offset, long long length) {
    return sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE);
}

#include <sys/syscall.h>
#include <errno.h>

int ns_renameat2(const char *from, const char *to, unsigned flags) {
#ifdef SYS_renameat2
    return (int)syscall(SYS_renameat2, AT_FDCWD, from, AT_FDCWD, to, flags);
#else
    errno = ENOSYS;
    return -1;
#endif
}
