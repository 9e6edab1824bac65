/*
 * libshoal internals shared by the files of client/src (not installed).
 *
 * Each public call builds a Request on its stack, pointing at the caller's
 * data (nothing is copied before encoding), sends it with client_call(),
 * and turns the decoded Response into the public result. Results keep the
 * decoded Response in their internal_ field and point into it (strings,
 * vectors), so a result is one response plus one or two arrays, freed
 * together.
 */
#ifndef SHOAL_CLIENT_IMPL_H
#define SHOAL_CLIENT_IMPL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "filter.h"
#include "rpc.h"
#include "shoal.h"
#include "wire.h"

/* Immutable after shoal_connect except next_id (atomic): this is what
 * makes a client safe to share between threads (sh_rpc is too). */
struct shoal_client {
	sh_rpc *rpc;
	int timeout_ms;		      /* default wait for every call */
	atomic_uint_fast64_t next_id; /* request ids, from 1 */
};

/* The public filter is a box around the index core's filter, so that the
 * public header needs nothing of common/. */
struct shoal_filter {
	sh_filter *f;
};

/* Records msg (printf-style) as the calling thread's last error and
 * returns code. */
int client_fail(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Clears the calling thread's last error; returns SHOAL_OK. */
int client_ok(void);

/* Sends req (protocol version and a fresh request id filled in) and waits
 * for its answer (timeout_ms, 0 = the client's). Returns SHOAL_OK with
 * *resp set (sh_wire_free_response) when a well-formed Response to this
 * request arrived, whatever its code; else a transport error, or
 * SHOAL_EINVAL for bytes that do not decode or answer another request
 * ("malformed response"), with the last error set and *resp NULL. */
int client_roundtrip(shoal_client *c, Shoal__V1__Request *req,
		     uint32_t timeout_ms, Shoal__V1__Response **resp);

/* client_roundtrip, then the answer's code: returns SHOAL_OK with *resp
 * set only when the server answered OK with result `want` (a
 * Response.result case); otherwise the server's code with its message (as
 * the last error), client_roundtrip's failures, or SHOAL_EINVAL for an OK
 * answer carrying another result ("malformed response"); *resp is then
 * NULL. */
int client_call(shoal_client *c, Shoal__V1__Request *req, uint32_t timeout_ms,
		int want, Shoal__V1__Response **resp);

/* Checks the arguments every call has: c, a collection name, out. */
int client_check(const shoal_client *c, const char *collection,
		 const void *out);

/* A public id → a wire PointId on the caller's storage (no allocation; str
 * is borrowed). SHOAL_EINVAL with the last error set for a bad kind or a
 * NULL string; `what` names the id in the message. */
int client_id_to_proto(const shoal_id *in, Shoal__V1__PointId *out,
		       const char *what, size_t i);

/* A wire PointId from a response → a public id pointing into it. False
 * when the id is malformed (no kind, NULL or empty string). */
bool client_id_from_proto(const Shoal__V1__PointId *in, shoal_id *out);

/* The filter as a wire message (NULL for NULL f); *out is freed with
 * sh_wire_filter_free. Sets the last error on failure. */
int client_filter_to_wire(const shoal_filter *f, Shoal__V1__Filter **out);

/* Turns repeated Points of a response into shoal_points (keeping resp,
 * which it frees on failure). */
int client_points_from_proto(Shoal__V1__Response *resp, Shoal__V1__Point **pts,
			     size_t n, const uint8_t *cursor, size_t cursor_len,
			     shoal_points **out);

/* A search's result (resp->search or resp->search_text) → the public
 * result for nq queries of at most k hits, keeping resp (freed on
 * failure). */
int client_search_result_from_proto(Shoal__V1__Response *resp,
				    const Shoal__V1__SearchResult *res,
				    size_t nq, uint32_t k,
				    shoal_search_result **out);

/* A NUL-terminated string from a response, never NULL. */
static inline const char *client_str(const char *s)
{
	return s ? s : "";
}

#endif
