/* cluster_kv: a key's entry in one of ltvd's key-value buckets, read from
 * the bucket's stream leader.
 *
 * libnats' kvStore_Get asks with a direct get when the bucket's stream
 * allows them, as every bucket it makes does, and any replica answers a
 * direct get, with what it has: a replica behind its leader (seen with
 * nats-server 2.9; Debian 12 ships 2.9.10) answers with an older entry or
 * none. A lease read there would be taken for lost, expired or another
 * node's, and the partition given up (its state dropped) for nothing; a
 * member's key, for a node gone. So ltvd reads its keys with the stream's
 * "last message by subject" request, which only the stream's leader
 * answers, and leaves the buckets' settings as they are (nodes of an older
 * ltvd still read them with direct gets). Not linearizable even so: a
 * leader cut off from its quorum answers until it steps down. A lease
 * stays safe because its renewal needs the quorum and it expires on time.
 * Any thread; the context's wait bounds the request. */
#include "cluster_internal.h"

#include <stdio.h>
#include <string.h>

#define BUCKET_NAME_MAX 64

natsStatus cluster_kv_get(jsCtx *js, const char *bucket, const char *key, char *val, size_t cap, uint64_t *rev)
{
    if (cap)
        val[0] = '\0';
    *rev = 0;
    if (!key[0] || strpbrk(key, "*> \t\r\n")) /* a wildcard would ask for another key's message */
        return NATS_INVALID_ARG;
    char stream[BUCKET_NAME_MAX + 4], subject[BUCKET_NAME_MAX + CLUSTER_NODE_MAX + 8];
    if ((size_t)snprintf(stream, sizeof stream, "KV_%s", bucket) >= sizeof stream ||
        (size_t)snprintf(subject, sizeof subject, "$KV.%s.%s", bucket, key) >= sizeof subject)
        return NATS_INVALID_ARG;
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetLastMsg(&m, js, stream, subject, NULL, &jerr);
    if (s != NATS_OK) /* no message: NATS_NOT_FOUND; the bucket gone (10059) and the rest: other statuses */
        return s == NATS_NOT_FOUND && jerr != JSNoMessageFoundErr ? NATS_ERR : s;
    const char *op = NULL; /* a delete or purge marker: no entry */
    if (natsMsgHeader_Get(m, "KV-Operation", &op) == NATS_OK && op &&
        (strcmp(op, "DEL") == 0 || strcmp(op, "PURGE") == 0)) {
        natsMsg_Destroy(m);
        return NATS_NOT_FOUND;
    }
    int len = natsMsg_GetDataLength(m);
    if (cap)
        snprintf(val, cap, "%.*s", len > 0 ? len : 0, len > 0 ? natsMsg_GetData(m) : "");
    *rev = natsMsg_GetSequence(m);
    natsMsg_Destroy(m);
    return NATS_OK;
}
