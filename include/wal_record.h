/* wal_record: the payloads of the write-ahead log's records: what a batch
 * of applied events and an erasure look like in the log. (The framing
 * around them, sequence numbers and CRCs, is wal.c's.)
 *
 *   WAL_REC_EVENTS: u32 n, then per event: u8 type, u8 user_len,
 *     u8 event_id_len (0: none), u8 0, i64 ts, f64 value, u32 quantity,
 *     user_id bytes, event_id bytes.
 *   WAL_REC_DELETE: u8 user_len, user_id bytes.
 * Numbers in this build's byte order (little-endian on x86-64 and arm64).
 *
 * Pure, any thread. The decoders take any bytes (a fuzz target): anything
 * but one whole, well-formed payload is -EBADMSG, and so is an event that
 * events_parse would have refused (time, value, quantity, user_id). */
#ifndef LTVD_WAL_RECORD_H
#define LTVD_WAL_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "shopper.h"
#include "util.h"

/* Replaces out's contents with the WAL_REC_EVENTS payload of ev (n,).
 * Events must be valid (events.h): ids of 1..128 bytes. 0 or -ENOMEM. */
int wal_record_encode_events(ByteBuf *out, const Event *ev, size_t n);
/* Decodes a WAL_REC_EVENTS payload. *out (n,) is malloc'd (caller frees);
 * its ids point into p. 0, -EBADMSG or -ENOMEM. */
int wal_record_decode_events(const unsigned char *p, size_t len, Event **out, size_t *n);

#define WAL_RECORD_DELETE_MAX (1 + USER_ID_MAX)
/* Writes the WAL_REC_DELETE payload for id (1..128 bytes) into out
 * (WAL_RECORD_DELETE_MAX,); returns its length. */
size_t wal_record_encode_delete(unsigned char *out, const char *id, size_t len);
/* Decodes a WAL_REC_DELETE payload; *id points into p. 0 or -EBADMSG. */
int wal_record_decode_delete(const unsigned char *p, size_t len, const char **id, size_t *id_len);

#endif
