/* util: writing a whole buffer to a file descriptor, and the growable byte
 * buffer (include/util.h). Any thread; a forked child may call write_all. */
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BYTEBUF_INITIAL 4096u

int write_all(int fd, const void *p, size_t n)
{
    const unsigned char *c = p;
    while (n) {
        ssize_t k = write(fd, c, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -errno;
        if (k == 0)
            return -EIO;
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

int bytebuf_reserve(ByteBuf *b, size_t n)
{
    if (n <= b->cap - b->len)
        return 0;
    if (n > SIZE_MAX / 2 - b->len)
        return -ENOMEM;
    size_t cap = b->cap ? b->cap : BYTEBUF_INITIAL;
    while (cap < b->len + n)
        cap *= 2;
    unsigned char *p = realloc(b->p, cap);
    if (!p)
        return -ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

int bytebuf_put(ByteBuf *b, const void *p, size_t n)
{
    int rc = bytebuf_reserve(b, n);
    if (rc)
        return rc;
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

void bytebuf_free(ByteBuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}
