/* Command-line flags and config files. See flags.h. */
#include "flags.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error.h"
#include "log.h"

/* A config file larger than this is refused: it is not a config file. */
#define SH_FLAGS_FILE_MAX (1u << 20)

struct sh_flags {
	char **strs;
	size_t nstrs, cap;
	sh_strlist *lists[16]; /* the list flags set, to free their arrays */
	size_t nlists;
};

static const sh_flag *find(const sh_flag *flags, size_t n, const char *name,
			   size_t len)
{
	for (size_t i = 0; i < n; i++)
		if (strlen(flags[i].name) == len &&
		    strncmp(flags[i].name, name, len) == 0)
			return &flags[i];
	return NULL;
}

static int keep_str(sh_flags *st, const char *v, const char **out)
{
	if (st->nstrs == st->cap) {
		size_t nc = st->cap ? st->cap * 2 : 8;
		char **ns = realloc(st->strs, nc * sizeof(*ns));
		if (!ns)
			return SH_ENOMEM;
		st->strs = ns;
		st->cap = nc;
	}
	char *c = strdup(v);
	if (!c)
		return SH_ENOMEM;
	st->strs[st->nstrs++] = c;
	*out = c;
	return SH_OK;
}

int sh_parse_size(const char *v, uint64_t *out)
{
	char *end;
	errno = 0;
	if (!v || *v == '-')
		return SH_EINVAL;
	unsigned long long x = strtoull(v, &end, 10);
	if (errno || end == v)
		return SH_EINVAL;
	unsigned shift = 0;
	switch (toupper((unsigned char)*end)) {
	case 'K':
		shift = 10;
		end++;
		break;
	case 'M':
		shift = 20;
		end++;
		break;
	case 'G':
		shift = 30;
		end++;
		break;
	case 'T':
		shift = 40;
		end++;
		break;
	}
	if (*end == 'i' || *end == 'B')
		end += (*end == 'i' && end[1] == 'B') ? 2 : 1;
	if (*end || (shift && x > (UINT64_MAX >> shift)))
		return SH_EINVAL;
	*out = (uint64_t)x << shift;
	return SH_OK;
}

static int parse_bool(const char *v, bool *out)
{
	static const char *const t[] = {"true", "1", "yes", "on"};
	static const char *const f[] = {"false", "0", "no", "off"};
	for (int i = 0; i < 4; i++) {
		if (strcasecmp(v, t[i]) == 0)
			return *out = true, SH_OK;
		if (strcasecmp(v, f[i]) == 0)
			return *out = false, SH_OK;
	}
	return SH_EINVAL;
}

/* Sets one flag from its text value. */
static int set_value(sh_flags *st, const sh_flag *fl, const char *v, char *err,
		     size_t errlen)
{
	char *end;
	switch (fl->type) {
	case SH_FLAG_STR:
		return keep_str(st, v, (const char **)fl->ptr);
	case SH_FLAG_LIST: {
		sh_strlist *l = fl->ptr;
		size_t k = 0;
		while (k < st->nlists && st->lists[k] != l)
			k++;
		if (k == st->nlists) {
			if (k == sizeof(st->lists) / sizeof(st->lists[0]))
				return sh_errf(err, errlen, SH_EINVAL,
					       "too many list flags");
			/* the first value replaces the default */
			l->v = NULL;
			l->n = 0;
			st->lists[st->nlists++] = l;
		}
		const char **nv = realloc(l->v, (l->n + 1) * sizeof(*nv));
		if (!nv)
			return SH_ENOMEM;
		l->v = nv;
		return keep_str(st, v, &l->v[l->n++]);
	}
	case SH_FLAG_BOOL:
		if (parse_bool(v, (bool *)fl->ptr))
			return sh_errf(err, errlen, SH_EINVAL,
				       "--%s: expected true or false, got '%s'",
				       fl->name, v);
		return SH_OK;
	case SH_FLAG_INT: {
		errno = 0;
		long long x = strtoll(v, &end, 10);
		if (errno || end == v || *end)
			return sh_errf(err, errlen, SH_EINVAL,
				       "--%s: expected an integer, got '%s'",
				       fl->name, v);
		if (fl->min < fl->max && (x < fl->min || x > fl->max))
			return sh_errf(err, errlen, SH_EINVAL,
				       "--%s: %lld is outside %" PRId64
				       "..%" PRId64,
				       fl->name, x, fl->min, fl->max);
		*(int64_t *)fl->ptr = x;
		return SH_OK;
	}
	case SH_FLAG_SIZE: {
		uint64_t x;
		if (sh_parse_size(v, &x) != SH_OK)
			return sh_errf(
			    err, errlen, SH_EINVAL,
			    "--%s: expected a size like 64M, got '%s'",
			    fl->name, v);
		if (fl->min < fl->max &&
		    (x < (uint64_t)fl->min || x > (uint64_t)fl->max))
			return sh_errf(
			    err, errlen, SH_EINVAL,
			    "--%s: %llu is outside %" PRId64 "..%" PRId64,
			    fl->name, (unsigned long long)x, fl->min, fl->max);
		*(uint64_t *)fl->ptr = x;
		return SH_OK;
	}
	case SH_FLAG_CHOICE: {
		const char *c = fl->choices;
		for (int i = 0; c && *c; i++) {
			size_t len = strcspn(c, "|");
			if (strlen(v) == len && strncmp(c, v, len) == 0) {
				*(int *)fl->ptr = i;
				return SH_OK;
			}
			c += len + (c[len] == '|');
		}
		return sh_errf(err, errlen, SH_EINVAL,
			       "--%s: expected one of %s, got '%s'", fl->name,
			       fl->choices, v);
	}
	}
	return SH_EINVAL;
}

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	char *e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = 0;
	return s;
}

static int read_config(sh_flags *st, const sh_flag *flags, size_t n,
		       const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return sh_errf(err, errlen, SH_EINVAL, "config %s: %s", path,
			       strerror(errno));
	char *buf = malloc(SH_FLAGS_FILE_MAX + 1);
	if (!buf) {
		fclose(f);
		return SH_ENOMEM;
	}
	size_t len = fread(buf, 1, SH_FLAGS_FILE_MAX + 1, f);
	fclose(f);
	int rc = SH_OK;
	if (len > SH_FLAGS_FILE_MAX) {
		rc = sh_errf(err, errlen, SH_EINVAL,
			     "config %s: larger than %u bytes", path,
			     SH_FLAGS_FILE_MAX);
		goto out;
	}
	if (memchr(buf, 0, len)) {
		rc = sh_errf(err, errlen, SH_EINVAL,
			     "config %s: not a text file", path);
		goto out;
	}
	buf[len] = 0;
	int lineno = 0;
	for (char *line = buf, *next; line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = 0;
		lineno++;
		char *hash = strchr(line, '#');
		if (hash)
			*hash = 0;
		char *l = trim(line);
		if (!*l)
			continue;
		char *eq = strchr(l, '=');
		if (!eq) {
			rc = sh_errf(err, errlen, SH_EINVAL,
				     "config %s:%d: expected 'name = value'",
				     path, lineno);
			goto out;
		}
		*eq = 0;
		char *name = trim(l), *val = trim(eq + 1);
		const sh_flag *fl = find(flags, n, name, strlen(name));
		if (!fl) {
			rc = sh_errf(err, errlen, SH_EINVAL,
				     "config %s:%d: unknown setting '%s'", path,
				     lineno, name);
			goto out;
		}
		char msg[256];
		if ((rc = set_value(st, fl, val, msg, sizeof(msg)))) {
			if (rc == SH_EINVAL)
				sh_errf(err, errlen, SH_EINVAL,
					"config %s:%d: %s", path, lineno, msg);
			goto out;
		}
	}
out:
	free(buf);
	return rc;
}

void sh_flags_free(sh_flags *f)
{
	if (!f)
		return;
	for (size_t i = 0; i < f->nstrs; i++)
		free(f->strs[i]);
	free(f->strs);
	for (size_t i = 0; i < f->nlists; i++) {
		free(f->lists[i]->v);
		f->lists[i]->v = NULL;
		f->lists[i]->n = 0;
	}
	free(f);
}

int sh_flags_parse(const sh_flag *flags, size_t n, int argc, char **argv,
		   const char *config_flag, sh_flags **out, int *first_arg,
		   bool *help, char *err, size_t errlen)
{
	sh_flags *st = calloc(1, sizeof(*st));
	if (!st)
		return SH_ENOMEM;
	*help = false;
	int rc = SH_OK, i = 1;
	/* pass 1: find --help and the config file */
	const char *config = NULL;
	for (int a = 1; a < argc; a++) {
		if (strcmp(argv[a], "--") == 0 || strncmp(argv[a], "--", 2))
			break;
		if (strcmp(argv[a], "--help") == 0) {
			*help = true;
			*out = st;
			return SH_OK;
		}
		if (config_flag) {
			size_t cl = strlen(config_flag);
			const char *s = argv[a] + 2;
			if (strncmp(s, config_flag, cl) == 0 && s[cl] == '=')
				config = s + cl + 1;
			else if (strcmp(s, config_flag) == 0 && a + 1 < argc)
				config = argv[a + 1];
		}
	}
	if (config && (rc = read_config(st, flags, n, config, err, errlen)))
		goto fail;
	/* pass 2: the command line, over the file */
	for (; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--") == 0) {
			i++;
			break;
		}
		if (strncmp(a, "--", 2) || a[2] == 0)
			break;
		const char *name = a + 2, *eq = strchr(name, '=');
		size_t len = eq ? (size_t)(eq - name) : strlen(name);
		const sh_flag *fl = find(flags, n, name, len);
		if (!fl && !eq && strncmp(name, "no-", 3) == 0) {
			fl = find(flags, n, name + 3, len - 3);
			if (fl && fl->type == SH_FLAG_BOOL) {
				*(bool *)fl->ptr = false;
				continue;
			}
			fl = NULL;
		}
		if (!fl) {
			rc = sh_errf(err, errlen, SH_EINVAL,
				     "unknown flag --%.*s (see --help)",
				     (int)len, name);
			goto fail;
		}
		const char *v;
		if (eq) {
			v = eq + 1;
		} else if (fl->type == SH_FLAG_BOOL) {
			*(bool *)fl->ptr = true;
			continue;
		} else if (i + 1 < argc) {
			v = argv[++i];
		} else {
			rc = sh_errf(err, errlen, SH_EINVAL,
				     "--%s needs a value", fl->name);
			goto fail;
		}
		if ((rc = set_value(st, fl, v, err, errlen)))
			goto fail;
	}
	if (first_arg)
		*first_arg = i;
	*out = st;
	return SH_OK;
fail:
	sh_flags_free(st);
	return rc;
}

void sh_flags_usage(FILE *out, const char *usage_line, const char *summary,
		    const sh_flag *flags, size_t n)
{
	fprintf(out, "usage: %s\n\n%s\n\nflags:\n", usage_line, summary);
	for (size_t i = 0; i < n; i++) {
		const sh_flag *fl = &flags[i];
		char def[128] = "";
		switch (fl->type) {
		case SH_FLAG_STR: {
			const char *s = *(const char **)fl->ptr;
			snprintf(def, sizeof(def), "%s", s ? s : "(none)");
			break;
		}
		case SH_FLAG_INT:
			snprintf(def, sizeof(def), "%" PRId64,
				 *(int64_t *)fl->ptr);
			break;
		case SH_FLAG_BOOL:
			snprintf(def, sizeof(def), "%s",
				 *(bool *)fl->ptr ? "true" : "false");
			break;
		case SH_FLAG_SIZE:
			snprintf(def, sizeof(def), "%" PRIu64,
				 *(uint64_t *)fl->ptr);
			break;
		case SH_FLAG_LIST: {
			const sh_strlist *l = fl->ptr;
			size_t at = 0;
			for (size_t k = 0; k < l->n && at < sizeof(def); k++)
				at += (size_t)snprintf(def + at,
						       sizeof(def) - at, "%s%s",
						       k ? " " : "", l->v[k]);
			if (!l->n)
				snprintf(def, sizeof(def), "(none)");
			break;
		}
		case SH_FLAG_CHOICE: {
			const char *c = fl->choices;
			int idx = *(int *)fl->ptr;
			for (int k = 0; c && *c && k < idx; k++) {
				c += strcspn(c, "|");
				c += (*c == '|');
			}
			snprintf(def, sizeof(def), "%.*s",
				 (int)strcspn(c ? c : "", "|"), c ? c : "");
			break;
		}
		}
		fprintf(out, "  --%s%s%s\n      %s (default: %s)\n", fl->name,
			fl->type == SH_FLAG_BOOL ? "" : " ",
			fl->type == SH_FLAG_BOOL     ? ""
			: fl->type == SH_FLAG_CHOICE ? fl->choices
			: fl->type == SH_FLAG_SIZE   ? "BYTES"
			: fl->type == SH_FLAG_INT    ? "N"
			: fl->type == SH_FLAG_LIST   ? "VALUE (repeatable)"
						     : "VALUE",
			fl->help, def);
	}
}

int sh_flags_main(const sh_flag *flags, size_t n, int argc, char **argv,
		  const char *prog, const char *summary,
		  const char *const *log_level, sh_flags **out)
{
	char err[512], usage[128];
	bool help = false;
	int first = 0;
	*out = NULL;
	if (sh_flags_parse(flags, n, argc, argv, "config", out, &first, &help,
			   err, sizeof(err)) != SH_OK) {
		fprintf(stderr, "%s: %s\n", prog, err);
		return 2;
	}
	if (help) {
		snprintf(usage, sizeof(usage), "%s [FLAGS]", prog);
		sh_flags_usage(stdout, usage, summary, flags, n);
		sh_flags_free(*out);
		*out = NULL;
		return 0;
	}
	sh_log_level lvl = SH_LOG_INFO;
	const char *why = NULL;
	if (first < argc)
		why = "unexpected argument";
	else if (log_level && sh_log_level_parse(*log_level, &lvl) != SH_OK)
		why = "bad --log-level (debug, info, warn or error)";
	if (why) {
		fprintf(stderr, "%s: %s%s%s (see --help)\n", prog, why,
			first < argc ? " " : "",
			first < argc ? argv[first] : "");
		sh_flags_free(*out);
		*out = NULL;
		return 2;
	}
	if (log_level)
		sh_log_set_level(lvl);
	return -1;
}
