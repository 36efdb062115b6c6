/* util: the small helpers every module would otherwise write again: a
 * seeded generator, the two squashing functions, writing a whole buffer to
 * a file descriptor, and a growable byte buffer with text built on it.
 *
 * Pure functions or functions on caller-owned data: any thread. write_all
 * calls only write(2), so a forked child may use it. */
#ifndef LTVD_UTIL_H
#define LTVD_UTIL_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* splitmix64 (Steele, Lea, Flood 2014): advances *state and returns the next
 * 64 random bits. Every seeded draw in ltvd (initial weights, example cuts,
 * shuffles, the adjuster's exploration) comes from it. */
static inline uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

/* log(1 + e^x). Above 30 it returns x: the term dropped there, log1p(e^-x)
 * < 1e-13, is about the rounding error of x itself (a cut-off at 20 would
 * drop 2e-9), and exp(x) cannot overflow below it. */
static inline double softplus(double x) { return x > 30 ? x : log1p(exp(x)); }

/* Writes all n bytes of p to fd, retrying short writes and EINTR.
 * 0, or -errno (-EIO if write returns 0). */
int write_all(int fd, const void *p, size_t n);
/* fsyncs what path names, opened read-only with flags added (O_DIRECTORY
 * for a directory, O_NOFOLLOW). 0 or -errno. */
int fsync_path(const char *path, int flags);

/* Zeroed memory for a large table (the shopper slots, their index, the
 * event_id window): from 2 MiB up, a mapping of its own, 2 MiB-aligned and
 * marked for transparent huge pages, which the kernel honours in its
 * default "madvise" mode. Random reads then miss the TLB less, and a fork
 * (the snapshot child) copies one page-table entry per 2 MiB instead of
 * 512: the store lock is held across the fork. Pages are still faulted in
 * as first touched, 2 MiB at a time. Smaller tables, and every table under
 * AddressSanitizer (which checks heap blocks, not mappings), are calloc'd.
 * NULL on failure; free with util_table_free and the same byte count. */
void *util_table_alloc(size_t bytes);
void util_table_free(void *p, size_t bytes);
/* Does util_table_alloc map big tables for huge pages in this build? */
bool util_table_huge(void);
/* Asks the kernel to merge a mapped table's small pages back into huge
 * ones (MADV_COLLAPSE, Linux >= 6.1; elsewhere nothing): a write to a huge
 * page shared with a forked child splits it into 512 entries, which the
 * next fork must copy again. Synchronous: the caller's thread does the
 * copying. Any thread; the table may be read and written meanwhile. */
void util_table_collapse(void *p, size_t bytes);

/* The value of a hexadecimal digit (either case), -1 if ch is not one. */
int hex_digit(char ch);

/* A growable byte buffer: p (cap,) of which len bytes are used. Zero-
 * initialise it ({0}); the owner frees it with bytebuf_free. */
typedef struct ByteBuf {
    unsigned char *p;
    size_t len, cap;
} ByteBuf;

/* Makes room for n more bytes, doubling the capacity (from 4 KiB). 0, or
 * -ENOMEM with the buffer unchanged. */
int bytebuf_reserve(ByteBuf *b, size_t n);
/* Appends n bytes of p. 0, or -ENOMEM with the buffer unchanged. */
int bytebuf_put(ByteBuf *b, const void *p, size_t n);
void bytebuf_free(ByteBuf *b);

/* Text built piece by piece (JSON answers, the metrics page, a request
 * body): a ByteBuf kept NUL-terminated after b.len once anything is
 * written. The first failure is sticky in err (-ENOMEM, -EINVAL) and makes
 * every later write a no-op, so a writer checks once at the end. {0} is
 * empty; the owner frees it with textbuf_free or takes b.p. */
typedef struct TextBuf {
    ByteBuf b;
    int err;
} TextBuf;

void textbuf_append(TextBuf *t, const char *s, size_t n);
#define TEXT_LIT(t, lit) textbuf_append(t, lit, sizeof(lit) - 1)
__attribute__((format(printf, 2, 3))) void textbuf_printf(TextBuf *t, const char *fmt, ...);
void textbuf_free(TextBuf *t);

#endif
