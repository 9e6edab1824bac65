/*
 * Command-line flags and config files, one table per program.
 *
 * A program declares its flags as an array of sh_flag, each pointing at the
 * variable it sets; the value a variable holds before parsing is its default
 * (and is what --help prints). Flags are given as `--name value`,
 * `--name=value`, or for booleans `--name` / `--no-name`. When the table has
 * a string flag named by `config_flag`, and it is set on the command line,
 * that file is read first: one `name = value` per line, `#` comments and
 * blank lines ignored; the command line then overrides the file.
 *
 * Every value is checked (type, range, choice) and a bad one is an error
 * naming the flag, never a silent default.
 */
#ifndef SH_FLAGS_H
#define SH_FLAGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum sh_flag_type {
	SH_FLAG_STR,	/* const char **: the string (owned by sh_flags) */
	SH_FLAG_INT,	/* int64_t * */
	SH_FLAG_BOOL,	/* bool *: true|false|1|0|yes|no|on|off */
	SH_FLAG_SIZE,	/* uint64_t *: bytes, with optional K/M/G/T suffix
			   (powers of 1024) */
	SH_FLAG_CHOICE, /* int *: index into `choices` ("a|b|c") */
	SH_FLAG_LIST,	/* sh_strlist *: repeatable; every value, in order
			   (the config file's first, then the command
			   line's; owned by sh_flags) */
} sh_flag_type;

/* The values of a repeatable flag. */
typedef struct sh_strlist {
	const char **v;
	size_t n;
} sh_strlist;

typedef struct sh_flag {
	const char *name; /* "listen" for --listen */
	sh_flag_type type;
	void *ptr;
	const char *help;
	const char *choices; /* SH_FLAG_CHOICE: "always|batch|never" */
	int64_t min, max;    /* INT, SIZE: allowed range when min < max */
} sh_flag;

/* clang-format off */
/* --stop-timeout-ms (an int64_t, default SH_STOP_TIMEOUT_MS, stop.h): every
 * shoal process's, the servers' through SH_SERVER_FLAGS. */
#define SH_STOP_TIMEOUT_FLAG(stop_timeout_ms)                               \
	{"stop-timeout-ms", SH_FLAG_INT, (stop_timeout_ms),                  \
	 "on SIGTERM/SIGINT, how long the whole stop may take; past it the " \
	 "process logs its threads' stacks and exits with status 3 "         \
	 "(0: no limit)", NULL, 0, 3600000}

/* The flags every shoal server (node, router, embed) takes alike, at the
 * end of its table; each points at that server's own variable. */
#define SH_SERVER_FLAGS(metrics, max_message, drain_ms, send_timeout_ms,    \
			stall_ms, stop_timeout_ms, ready_file, log_level,    \
			config)                                              \
	{"metrics", SH_FLAG_STR, (metrics),                                  \
	 "IPV4:PORT of the HTTP listener for /metrics and /healthz "         \
	 "(\"\" for none)", NULL, 0, 0},                                      \
	{"max-message", SH_FLAG_SIZE, (max_message),                         \
	 "largest request accepted (bigger: ETOOBIG)", NULL, 4096,           \
	 (int64_t)1 << 31},                                                  \
	{"drain-ms", SH_FLAG_INT, (drain_ms),                                \
	 "on SIGTERM/SIGINT, how long requests in flight may take to "       \
	 "finish", NULL, 0, 600000},                                         \
	{"send-timeout-ms", SH_FLAG_INT, (send_timeout_ms),                  \
	 "how long an answer may wait behind earlier ones to its peer; "     \
	 "past it the peer's connection is closed (it takes requests but "   \
	 "no answers)", NULL, 100, 3600000},                                  \
	{"stall-ms", SH_FLAG_INT, (stall_ms),                                \
	 "/healthz answers 503 \"stalled\" after this long with requests in " \
	 "progress and none answered (0: never)", NULL, 0, 3600000},          \
	SH_STOP_TIMEOUT_FLAG(stop_timeout_ms),                               \
	{"ready-file", SH_FLAG_STR, (ready_file),                            \
	 "once serving, write listen=URL, metrics=URL and pid=N here "       \
	 "(for scripts and tests that bind port 0)", NULL, 0, 0},            \
	{"log-level", SH_FLAG_STR, (log_level), "debug|info|warn|error",     \
	 NULL, 0, 0},                                                        \
	{"config", SH_FLAG_STR, (config),                                    \
	 "file of `name = value` lines, read before the command line",       \
	 NULL, 0, 0}
/* clang-format on */

/* Parsed state: owns the strings that SH_FLAG_STR variables point at. */
typedef struct sh_flags sh_flags;

/*
 * Parses argv[1..argc) against flags[0..n). Stops at the first argument
 * that does not start with "--" (or after "--"); *first_arg (optional) gets
 * its index. *help is set when --help was given (nothing else is checked
 * then). Returns SH_OK, SH_EINVAL (unknown flag, missing or bad value,
 * unreadable or malformed config file) with a message in err, or
 * SH_ENOMEM. On success *out must be freed with sh_flags_free() once the
 * string variables are no longer used; on error nothing needs freeing.
 */
/* A size: digits and an optional K, M, G or T (powers of 1024), then an
 * optional "iB" or "B" ("64M", "200KiB", "1000"). SH_OK with *out, or
 * SH_EINVAL (negative, malformed, too large). What SH_FLAG_SIZE reads. */
int sh_parse_size(const char *v, uint64_t *out);

int sh_flags_parse(const sh_flag *flags, size_t n, int argc, char **argv,
		   const char *config_flag, sh_flags **out, int *first_arg,
		   bool *help, char *err, size_t errlen);

void sh_flags_free(sh_flags *f);

/*
 * The command line of a shoal program, start to end: parses argv against
 * flags (a --config file first, when the table has a "config" flag), prints
 * the usage on --help, refuses positional arguments and, when log_level is
 * not NULL, a bad --log-level (then sets the log level). prog names the
 * program in messages and the usage ("shoal-node"). Returns -1 to go on,
 * with *out to free with sh_flags_free() once the string variables are no
 * longer used; otherwise the exit status for main (0 after --help, 2 after
 * an error reported on stderr), with nothing to free.
 */
int sh_flags_main(const sh_flag *flags, size_t n, int argc, char **argv,
		  const char *prog, const char *summary,
		  const char *const *log_level, sh_flags **out);

/* Prints a usage text: summary, then one entry per flag with its help and
 * its current value as the default. */
void sh_flags_usage(FILE *out, const char *usage_line, const char *summary,
		    const sh_flag *flags, size_t n);

#endif
