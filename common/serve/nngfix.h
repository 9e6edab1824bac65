/*
 * A workaround for a bug of nng 1.5.2 (Debian 12's libnng1), on by itself
 * with that version and off with any other.
 *
 * nng's TCP transport reads a message in several steps; between two of
 * them it hands its own I/O request back to the connection. When the
 * connection was closed on this side in between (the protocol closing a
 * pipe after a failed send, nng_pipe_close, a socket being closed), nng
 * 1.5.2 drops that request without a word: the pipe's pending receive
 * (or send) never completes, and nng's one reaper thread waits for it for
 * ever. From then on no connection the process closes is freed (each
 * keeps its file descriptor: a server runs out of them) and every
 * nng_close waits for ever. A client that sends a few requests and resets
 * its connection while they are answered sets it off within seconds.
 * Upstream fixed it in the transport in nng 1.6.0 (nanomsg/nng#1636).
 *
 * shoal defines nng_stream_recv and nng_stream_send, which libnng calls
 * through its PLT, so these wrappers run in place of its own: each calls
 * libnng's function, and when nng refused the request because its I/O
 * object was stopped, completes it with NNG_ECLOSED, so that the
 * transport's error path ends the pipe as it should. The two private
 * fields read (the stopped flag and the result of struct nng_aio) are
 * checked against public calls before the workaround turns on; where
 * that check fails it stays off and says so.
 */
#ifndef SH_NNGFIX_H
#define SH_NNGFIX_H

#include <stdbool.h>

/* Sets the workaround up (once; later calls only return the answer) and
 * says whether it is on. Called by the servers and clients at start, so
 * that a failed check is logged then; the wrappers set it up themselves
 * if nothing did. */
bool sh_nngfix_init(void);

#endif
