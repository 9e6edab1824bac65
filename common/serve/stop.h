/*
 * How every shoal process stops: it runs its libuv loop until SIGINT or
 * SIGTERM, then calls the process's stop function once (mark the server
 * stopping, sh_server_stop, close its own timers), and returns when the
 * loop has nothing left to do (queued work finished).
 *
 * A stop is bounded. From the signal on, a watchdog thread gives the
 * process stop_timeout_ms to exit; past it, the process logs an error and
 * the stack of every thread (glibc backtrace: module+offset addresses,
 * which addr2line turns into functions and lines), then _exits with
 * SH_STOP_EXIT_TIMEOUT. Nothing acknowledged is lost that way: the exit is
 * no worse than the kill -9 a supervisor would send next, and shoal's
 * writes are durable before they are acknowledged.
 */
#ifndef SH_STOP_H
#define SH_STOP_H

#include <stdint.h>

#include <uv.h>

/* Default of --stop-timeout-ms: the 5 s drain, the close, and a wide margin. */
#define SH_STOP_TIMEOUT_MS 60000
/* The exit status of a stop cut short by its watchdog. */
#define SH_STOP_EXIT_TIMEOUT 3

/* Runs loop until a SIGINT or SIGTERM; logs "<component>: <signal>:
 * shutting down", starts the watchdog (stop_timeout_ms; 0: none), calls
 * on_stop(ctx) once, closes its signal handles and returns uv_run's
 * result. Call from main's thread. */
int sh_run_until_signal(uv_loop_t *loop, const char *component,
			int stop_timeout_ms, void (*on_stop)(void *ctx),
			void *ctx);

/* Warns when a wait the stop includes (flag's value, wait_ms: --drain-ms,
 * --revoke-timeout-ms) is not below stop_timeout_ms: the watchdog would
 * cut it short. */
void sh_stop_check_wait(const char *component, const char *flag,
			int64_t wait_ms, int64_t stop_timeout_ms);

#endif
