/*
 * A small etcd v3 client: one key read, written by compare-and-swap and
 * watched, over etcd's HTTP/JSON gateway (the grpc-gateway every etcd
 * server also serves on its client URLs), with libcurl and cJSON.
 *
 * The router keeps its cluster map in one etcd key (a JSON document). A
 * change is a compare-and-swap on the key's mod_revision, so two routers
 * changing the map at once cannot both win: the loser gets SH_ESTALE,
 * re-reads and retries. Routers learn of a change with sh_etcd_wait.
 *
 * ## The gateway (etcd 3.4, paths /v3/kv/range, /v3/kv/txn, /v3/watch)
 *
 * Requests and answers are proto3 JSON: keys and values are base64
 * (standard alphabet, padded); int64 fields come as JSON strings
 * ("mod_revision":"5"), and fields holding their zero value are left out
 * (a failed transaction has no "succeeded", an empty value no "value", a
 * PUT event no "type"). This client accepts int64 fields as strings or
 * numbers and treats a missing field as its zero value; anything else it
 * does not expect is SH_ECORRUPT. A watch answers one HTTP response that
 * never ends, a stream of JSON objects ({"result": {...}}), each on its
 * own line; sh_etcd_wait reads it until the first event.
 *
 * ## Endpoints and failures
 *
 * A client holds a list of endpoints and tries them in turn, starting with
 * the one that answered last, but only while the request has not been sent
 * (connection refused, name not resolved, connect timed out): a request
 * that may have reached etcd is never sent again, so a compare-and-swap
 * cannot apply twice; but when an endpoint fails a request it took (an
 * HTTP error, a timeout), the next call starts at the next endpoint, so a
 * member cut off from its quorum is not asked forever. Every answer is
 * untrusted: each response is bounded (SH_ETCD_MAX_RESPONSE), parsed with
 * bounds and checked (the key it names is ours, revisions are sane).
 * Environment proxies (http_proxy) are ignored: etcd is reached directly.
 *
 * ## Threads
 *
 * An sh_etcd is immutable after sh_etcd_open except for the index of the
 * endpoint that answered last (an atomic hint), and every call uses its
 * own curl handle, so any number of threads may call at once. All calls
 * block (bounded by the client's timeout_ms, or by sh_etcd_wait's own).
 * sh_etcd_close must not run while a call on the same client does.
 */
#ifndef SH_ETCD_H
#define SH_ETCD_H

#include <stddef.h>
#include <stdint.h>

/* Endpoints in one list: a cluster has 3 or 5 members; room to spare. */
#define SH_ETCD_MAX_ENDPOINTS 16
/* One endpoint URL, in bytes ("http://host:port"). */
#define SH_ETCD_MAX_URL 255
/* Keys are names (the cluster map's is a short path): a bound keeps the
 * request small and an error message readable. */
#define SH_ETCD_MAX_KEY 4096
/* One response body, watch messages included (one object at a time). etcd
 * refuses requests above 1.5 MiB by default, so a legal answer is far
 * smaller; anything larger is not etcd and is refused (SH_ECORRUPT) before
 * it can take memory. */
#define SH_ETCD_MAX_RESPONSE (16u << 20)
/* A value, in bytes: its base64 (4/3 of it) and the JSON around it must
 * fit in SH_ETCD_MAX_RESPONSE when read back. */
#define SH_ETCD_MAX_VALUE (8u << 20)

typedef struct sh_etcd sh_etcd;

/* ---- Client ------------------------------------------------------------ */

/* A client of endpoints: "http://127.0.0.1:2379" or a comma-separated list
 * (spaces around commas are ignored; http:// or https://, no path). No
 * connection is made here. timeout_ms (> 0) bounds each call, all
 * endpoints tried included, except sh_etcd_wait, which has its own.
 * Returns SH_OK with *out (free with sh_etcd_close), SH_EINVAL (an empty,
 * malformed or too long list, timeout_ms <= 0: the message says which),
 * SH_EIO (libcurl could not be initialised), SH_ENOMEM. Any thread. */
int sh_etcd_open(const char *endpoints, int timeout_ms, sh_etcd **out,
		 char *err, size_t errlen);

/* Frees the client. NULL is a no-op. No call on it may be running. */
void sh_etcd_close(sh_etcd *e);

/* ---- Reading, writing, watching one key --------------------------------- */

typedef struct sh_etcd_kv {
	char *value; /* malloc'd, NUL-terminated copy (the value may hold NULs:
			use len); owned by the kv, freed by sh_etcd_kv_clear */
	size_t len;
	int64_t mod_revision; /* the key's: the revision of its last change,
				 what sh_etcd_cas compares */
	int64_t revision; /* the store's revision at the read (header.revision):
			     a later change has a higher one, so it is the
			     after_revision of sh_etcd_wait */
} sh_etcd_kv;

/* Reads key (1..SH_ETCD_MAX_KEY bytes, NUL-terminated), a linearizable
 * read. *out is overwritten (clear a previous value first). SH_OK;
 * SH_ENOTFOUND when the key does not exist (out->revision still set, the
 * value NULL); SH_EIO (no endpoint reachable, an HTTP error: the message
 * says which endpoint and why); SH_ETIMEDOUT (no answer within timeout_ms);
 * SH_ECORRUPT (a response that is not what etcd sends); SH_EINVAL (a bad
 * key); SH_ENOMEM. On any error but SH_ENOTFOUND *out is zeroed. Blocks. */
int sh_etcd_get(sh_etcd *e, const char *key, sh_etcd_kv *out, char *err,
		size_t errlen);

/* Frees kv->value and zeroes kv. NULL is a no-op. */
void sh_etcd_kv_clear(sh_etcd_kv *kv);

/* Puts key = val[0..len) only if the key's mod_revision is
 * expect_mod_revision (0: only if the key does not exist), in one etcd
 * transaction (/v3/kv/txn, a compare on MOD). val may be NULL when len is
 * 0. Returns SH_OK with *new_mod_revision (optional; may be NULL);
 * SH_ESTALE when the compare failed (someone else changed the key: re-read
 * and retry); SH_EINVAL (bad key, expect_mod_revision < 0); SH_ETOOBIG
 * (len > SH_ETCD_MAX_VALUE); SH_EIO; SH_ECORRUPT; SH_ENOMEM. SH_ETIMEDOUT,
 * and SH_EIO or SH_ECORRUPT after the request was sent, leave the outcome
 * unknown: the put may have been applied; re-read to know. Blocks. */
int sh_etcd_cas(sh_etcd *e, const char *key, const void *val, size_t len,
		int64_t expect_mod_revision, int64_t *new_mod_revision,
		char *err, size_t errlen);

/* Blocks until key is changed (put or deleted) at a revision >
 * after_revision (>= 0), or until timeout_ms (> 0) passes. It watches from
 * start_revision = after_revision + 1, so a change made before the call is
 * seen too: wait(after = kv.revision of a get) misses nothing.
 * Returns SH_OK with *mod_revision (optional) of the first such change; or
 * SH_OK with *mod_revision 0 when etcd has compacted its history past
 * after_revision + 1 (the key may have changed: re-read); SH_ETIMEDOUT
 * when nothing changed in time; SH_EIO (no endpoint reachable, an HTTP
 * error, the stream ended or etcd cancelled the watch: the message says
 * why); SH_ECORRUPT; SH_EINVAL; SH_ENOMEM. */
int sh_etcd_wait(sh_etcd *e, const char *key, int64_t after_revision,
		 int timeout_ms, int64_t *mod_revision, char *err,
		 size_t errlen);

/* ---- Base64 (standard alphabet, padded), as the gateway speaks it -------- */

/* Length of the base64 of n bytes, without a NUL. */
size_t sh_etcd_b64_encoded_len(size_t n);

/* Writes the base64 of src[0..n) and a NUL to dst (cap bytes). Returns
 * SH_OK with *outlen (optional) the length without the NUL, or SH_ETOOBIG
 * (cap < sh_etcd_b64_encoded_len(n) + 1; dst untouched). */
int sh_etcd_b64_encode(const void *src, size_t n, char *dst, size_t cap,
		       size_t *outlen);

/* Decodes src[0..n) (not NUL-terminated) into dst (cap bytes) and writes a
 * NUL after the bytes. Strict: n a multiple of 4, only the alphabet, '='
 * only as the last one or two characters, unused bits zero (what etcd
 * sends). Returns SH_OK with *outlen (optional), SH_ECORRUPT (not such
 * base64) or SH_ETOOBIG (cap < n / 4 * 3 + 1). */
int sh_etcd_b64_decode(const char *src, size_t n, void *dst, size_t cap,
		       size_t *outlen);

#endif
