/*
 * How every shoal process stops: it runs its libuv loop until SIGINT or
 * SIGTERM, then calls the process's stop function once (mark the server
 * stopping, sh_server_stop, close its own timers), and returns when the
 * loop has nothing left to do (queued work finished).
 */
#ifndef SH_STOP_H
#define SH_STOP_H

#include <uv.h>

/* Runs loop until a SIGINT or SIGTERM; logs "<component>: <signal>:
 * shutting down", calls on_stop(ctx) once, closes its signal handles and
 * returns uv_run's result. Call from main's thread. */
int sh_run_until_signal(uv_loop_t *loop, const char *component,
			void (*on_stop)(void *ctx), void *ctx);

#endif
