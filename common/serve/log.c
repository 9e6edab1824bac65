/* Logging to stderr, one write per line. See log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "error.h"

static int g_level = SH_LOG_INFO; /* read and written atomically */

static const char *const level_names[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};

void sh_log_set_level(sh_log_level level)
{
	__atomic_store_n(&g_level, (int)level, __ATOMIC_RELAXED);
}

sh_log_level sh_log_get_level(void)
{
	return (sh_log_level)__atomic_load_n(&g_level, __ATOMIC_RELAXED);
}

int sh_log_level_parse(const char *s, sh_log_level *out)
{
	static const char *const names[] = {"debug", "info", "warn", "error"};
	for (int i = 0; i < 4; i++) {
		if (s && strcasecmp(s, names[i]) == 0) {
			*out = (sh_log_level)i;
			return SH_OK;
		}
	}
	return SH_EINVAL;
}

void sh_log(sh_log_level level, const char *component, const char *fmt, ...)
{
	if ((int)level < __atomic_load_n(&g_level, __ATOMIC_RELAXED) ||
	    (unsigned)level > SH_LOG_ERROR)
		return;
	char line[SH_LOG_LINE_MAX];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	int n = snprintf(line, sizeof(line),
			 "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s: ",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
			 tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
			 level_names[level], component ? component : "-");
	if (n < 0)
		return;
	size_t len = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + len, sizeof(line) - len, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	if ((size_t)m >= sizeof(line) - len) {
		len = sizeof(line) - 5; /* room for "...\n" */
		memcpy(line + len, "...", 3);
		len += 3;
	} else {
		len += (size_t)m;
	}
	/* one event, one line: fold embedded newlines */
	for (size_t i = 0; i < len; i++)
		if (line[i] == '\n' || line[i] == '\r')
			line[i] = ' ';
	line[len++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, len);
	(void)w;
}
