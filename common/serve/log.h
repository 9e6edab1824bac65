/*
 * Logging: one line per event on stderr, with time, level and component:
 *
 *   2026-11-25T13:45:01.123Z INFO  node: listening on tcp://127.0.0.1:7000
 *
 * Each line is formatted into a buffer and written with one write(2), so
 * lines from different threads never interleave. Lines longer than
 * SH_LOG_LINE_MAX are truncated (and end with "..."). Callable from any
 * thread; never allocates.
 */
#ifndef SH_LOG_H
#define SH_LOG_H

#include <stdbool.h>

#define SH_LOG_LINE_MAX 2048

typedef enum sh_log_level {
	SH_LOG_DEBUG = 0,
	SH_LOG_INFO = 1,
	SH_LOG_WARN = 2,
	SH_LOG_ERROR = 3,
} sh_log_level;

/* Lines below `level` are dropped. Default: SH_LOG_INFO. */
void sh_log_set_level(sh_log_level level);
sh_log_level sh_log_get_level(void);

/* Parses "debug", "info", "warn" or "error". Returns SH_OK or SH_EINVAL. */
int sh_log_level_parse(const char *s, sh_log_level *out);

/* Writes one line. component is a short name ("node", "router"). */
void sh_log(sh_log_level level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define sh_debug(c, ...) sh_log(SH_LOG_DEBUG, c, __VA_ARGS__)
#define sh_info(c, ...) sh_log(SH_LOG_INFO, c, __VA_ARGS__)
#define sh_warn(c, ...) sh_log(SH_LOG_WARN, c, __VA_ARGS__)
#define sh_error(c, ...) sh_log(SH_LOG_ERROR, c, __VA_ARGS__)

#endif
