/*
 * A blocking request/response client over nng REQ: what a router uses to
 * talk to nodes, and what tests and benchmarks use to talk to a server.
 *
 * One sh_rpc is one REQ socket dialled to one URL (nng reconnects on its
 * own). sh_rpc_call may be called from many threads at once: each call
 * uses its own nng context. nng's automatic resend of a request is turned
 * off (a resent write could land after a newer one); a call that times out
 * returns SH_ETIMEDOUT and the write may or may not have been applied.
 *
 * A connection on which calls time out while nothing at all has come back
 * for 5 s is closed and dialled again: after a partition heals, TCP would
 * otherwise wait out its retransmission backoff (tens of seconds after a
 * long enough outage) before the old connection carried anything, while
 * a new one gets through at once. Calls still in flight on it fail then
 * (their outcome was already in doubt).
 */
#ifndef SH_RPC_H
#define SH_RPC_H

#include <stddef.h>
#include <stdint.h>

#include "shoal.pb-c.h"
#include "wire.h"

typedef struct sh_rpc sh_rpc;

/* Dials url (non-blocking: the connection is made in the background and
 * calls wait for it up to their timeout). timeout_ms bounds each call.
 * max_message bounds responses (0: SH_WIRE_MAX_MESSAGE). Returns SH_OK,
 * SH_EINVAL (bad URL) or SH_ENOMEM, with a message in err. */
int sh_rpc_dial(const char *url, int timeout_ms, size_t max_message,
		sh_rpc **out, char *err, size_t errlen);

/* Closes the client (no call may still be in flight on it). Within 200 ms
 * of the dial it first waits, that long at most, for the connection to
 * come up: see RPC_CLOSE_WAIT_MS in rpc.c. */
void sh_rpc_close(sh_rpc *c);

/* How many connections the client has closed and dialled again because
 * they answered nothing (above). A replacement while nothing stands
 * between client and server is a server that stopped answering: the
 * router logs it and counts it per node. */
uint64_t sh_rpc_replaced(sh_rpc *c);

/* Sends req (protocol_version and a request_id are filled in when 0) and
 * decodes the response into *resp (sh_wire_free_response). Returns SH_OK
 * when a response arrived (whatever its code), SH_ETIMEDOUT, SH_EIO (no
 * connection, closed) or SH_EINVAL (the response does not decode), with a
 * message in err. */
int sh_rpc_call(sh_rpc *c, Shoal__V1__Request *req, Shoal__V1__Response **resp,
		char *err, size_t errlen);

/* One call without waiting, for fanning a request out to many servers at
 * once: sh_rpc_start sends len bytes (copied) and returns at once;
 * sh_rpc_finish waits for the answer (or the timeout: timeout_ms, 0 for
 * the client's), returns the raw response (malloc'd; free()) and frees op.
 * Every started op must be finished. sh_rpc_start returns SH_OK, SH_ENOMEM
 * or SH_EIO; sh_rpc_finish returns as sh_rpc_call_raw. */
typedef struct sh_rpc_op sh_rpc_op;
int sh_rpc_start(sh_rpc *c, const uint8_t *buf, size_t len, int timeout_ms,
		 sh_rpc_op **op);
int sh_rpc_finish(sh_rpc_op *op, uint8_t **out, size_t *outlen, char *err,
		  size_t errlen);

/* Sends len raw bytes and returns the raw response (malloc'd; free()).
 * Returns as sh_rpc_call. */
int sh_rpc_call_raw(sh_rpc *c, const uint8_t *buf, size_t len, uint8_t **out,
		    size_t *outlen, char *err, size_t errlen);

#endif
