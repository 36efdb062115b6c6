/* util: writing a whole buffer to a file descriptor, and the growable byte
 * buffer (include/util.h). Any thread; a forked child may call write_all. */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define BYTEBUF_INITIAL 4096u

int fsync_path(const char *path, int flags)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | flags);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) ? -errno : 0;
    close(fd);
    return rc;
}

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

/* Makes room for n more bytes and the NUL; false once err is set. */
static bool textbuf_reserve(TextBuf *t, size_t n)
{
    if (!t->err && n == SIZE_MAX)
        t->err = -ENOMEM;
    if (!t->err)
        t->err = bytebuf_reserve(&t->b, n + 1);
    return !t->err;
}

void textbuf_append(TextBuf *t, const char *s, size_t n)
{
    if (!textbuf_reserve(t, n))
        return;
    memcpy(t->b.p + t->b.len, s, n);
    t->b.len += n;
    t->b.p[t->b.len] = '\0';
}

void textbuf_printf(TextBuf *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 && !t->err)
        t->err = -EINVAL;
    if (n < 0 || !textbuf_reserve(t, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf((char *)t->b.p + t->b.len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    t->b.len += (size_t)n;
}

void textbuf_free(TextBuf *t)
{
    bytebuf_free(&t->b);
    t->err = 0;
}

#define TABLE_HUGE ((size_t)2 << 20)

#if defined(__SANITIZE_ADDRESS__)
#define TABLE_PLAIN 1 /* AddressSanitizer checks heap blocks, not mappings */
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TABLE_PLAIN 1
#endif
#endif
#ifndef TABLE_PLAIN
#define TABLE_PLAIN 0
#endif

/* bytes rounded up to whole pages; 0 if that overflows. Below a huge
 * page (and under AddressSanitizer) a table is a calloc'd heap block. */
static size_t table_len(size_t bytes)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    if (page == 0 || page > TABLE_HUGE || bytes > SIZE_MAX - TABLE_HUGE)
        return 0;
    return (bytes + page - 1) / page * page;
}

static bool table_mapped(size_t bytes) { return !TABLE_PLAIN && bytes >= TABLE_HUGE; }

void *util_table_alloc(size_t bytes)
{
    if (!table_mapped(bytes))
        return calloc(bytes ? bytes : 1, 1);
    size_t len = table_len(bytes);
    if (!len)
        return NULL;
    /* map a huge page more than asked, then unmap the unaligned head and
     * the rest of the tail: only 2 MiB-aligned ranges can be huge pages */
    unsigned char *raw = mmap(NULL, len + TABLE_HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED)
        return NULL;
    size_t head = (TABLE_HUGE - ((uintptr_t)raw & (TABLE_HUGE - 1))) & (TABLE_HUGE - 1);
    if (head)
        munmap(raw, head);
    if (TABLE_HUGE - head)
        munmap(raw + head + len, TABLE_HUGE - head);
#ifdef MADV_HUGEPAGE
    madvise(raw + head, len, MADV_HUGEPAGE); /* advice: refused (THP off) changes nothing */
#endif
    return raw + head;
}

void util_table_free(void *p, size_t bytes)
{
    if (!p)
        return;
    if (table_mapped(bytes))
        munmap(p, table_len(bytes));
    else
        free(p);
}

bool util_table_huge(void) { return !TABLE_PLAIN; }

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25 /* Linux 6.1 UAPI; an older kernel answers EINVAL */
#endif

void util_table_collapse(void *p, size_t bytes)
{
    if (p && table_mapped(bytes))
        madvise(p, table_len(bytes), MADV_COLLAPSE); /* advice: a refusal leaves small pages */
}

int hex_digit(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}
