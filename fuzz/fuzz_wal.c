/* fuzz_wal: the write-ahead log's records (wal_record.c) and whole segment
 * files through recovery (wal.c wal_replay, durability.c service_recover,
 * which applies each record to a fresh Service). The first byte picks:
 *   0: data[1..] is a WAL_REC_EVENTS payload: decode; a decoded payload
 *      must encode back to the same bytes (but for each event's pad byte)
 *   1: data[1..] is a WAL_REC_DELETE payload: decode, re-encode, compare
 *   2: data[1..] is a segment file, as found on disk
 *   3: the same with every record's CRC and sequence number made right,
 *      so the fuzzer reaches the payloads the checksums protect.
 * Seeds: fuzz/corpus/wal (a segment an ltvd run wrote, behind bytes 2 and 3). */
#include "fuzz_common.h"
#include "service.h"
#include "wal.h"
#include "wal_record.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REC_HEADER 8u /* u32 len, u32 crc (wal.c) */
#define REC_FIXED 9u  /* u64 seq, u8 kind */

static LtvdConfig cfg;
static Metrics metrics;
static Model *model;
static char seg_path[CONFIG_STR_MAX + 64];
static unsigned char *scratch;
static size_t scratch_cap;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_config(&cfg);
    snprintf(cfg.storage_dir, sizeof cfg.storage_dir, "%s", fuzz_scratch_dir("wal"));
    snprintf(seg_path, sizeof seg_path, "%s/wal-%016llx.log", cfg.storage_dir, 1ull);
    metrics_init(&metrics);
    model = fuzz_model();
    return 0;
}

static void decode_events(const uint8_t *p, size_t n)
{
    Event *ev = NULL;
    size_t k = 0;
    int rc = wal_record_decode_events(p, n, &ev, &k);
    FUZZ_CHECK(rc == 0 || rc == -EBADMSG || rc == -ENOMEM);
    if (rc)
        return;
    ByteBuf b = {0};
    FUZZ_CHECK(wal_record_encode_events(&b, ev, k) == 0);
    FUZZ_CHECK(b.len == n);
    size_t off = 4;
    for (size_t i = 0; i < k; i++) { /* equal but for the pad byte of each event */
        FUZZ_CHECK(memcmp(b.p + off, p + off, 3) == 0);
        size_t rest = 24 - 4 + ev[i].user_len + ev[i].event_id_len;
        FUZZ_CHECK(memcmp(b.p + off + 4, p + off + 4, rest) == 0);
        off += 24 + ev[i].user_len + ev[i].event_id_len;
    }
    FUZZ_CHECK(memcmp(b.p, p, 4) == 0);
    bytebuf_free(&b);
    free(ev);
}

static void decode_delete(const uint8_t *p, size_t n)
{
    const char *id;
    size_t len;
    if (wal_record_decode_delete(p, n, &id, &len))
        return;
    FUZZ_CHECK(len >= 1 && len <= USER_ID_MAX);
    unsigned char out[WAL_RECORD_DELETE_MAX];
    FUZZ_CHECK(wal_record_encode_delete(out, id, len) == n && memcmp(out, p, n) == 0);
}

/* Makes each record's CRC and seq right, as far as the lengths chain. */
static void fix_records(unsigned char *p, size_t n)
{
    uint64_t seq = 1;
    for (size_t off = 0; off + REC_HEADER + REC_FIXED <= n; seq++) {
        uint32_t len;
        memcpy(&len, p + off, 4);
        if (len < REC_FIXED || len > n - off - REC_HEADER)
            break;
        memcpy(p + off + REC_HEADER, &seq, 8);
        uint32_t crc = crc32_update(0, p + off + REC_HEADER, len);
        memcpy(p + off + 4, &crc, 4);
        off += REC_HEADER + len;
    }
}

static void replay(const uint8_t *p, size_t n, bool fix)
{
    fuzz_reserve(&scratch, &scratch_cap, n);
    if (n)
        memcpy(scratch, p, n);
    if (fix)
        fix_records(scratch, n);
    fuzz_write_path(seg_path, scratch, n);
    Service *s;
    model_retain(model);
    if (service_create(&s, &cfg, &metrics, model))
        abort();
    uint64_t next = 0;
    char err[512] = "";
    int rc = service_recover(s, &next, err, sizeof err);
    if (rc == 0) {
        FUZZ_CHECK(next >= 1);
        PredictionView pv;
        service_predict(s, "alice", 5, 1700000000, &pv);
        MetricsGauges g;
        service_gauges(s, &g);
    } else {
        FUZZ_CHECK(err[0]);
    }
    service_destroy(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    switch (data[0] & 3) {
    case 0:
        decode_events(p, n);
        break;
    case 1:
        decode_delete(p, n);
        break;
    default:
        replay(p, n, (data[0] & 3) == 3);
        break;
    }
    return 0;
}
