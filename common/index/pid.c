/* Point ids: construction, equality, hashing. See pid.h. */
#include "pid.h"

#include <stdio.h>
#include <string.h>
#include <xxhash.h>

#include "../error.h"

sh_pid sh_pid_u64(uint64_t v)
{
	sh_pid p;
	memset(&p, 0, sizeof(p));
	p.kind = SH_PID_U64;
	p.num = v;
	return p;
}

bool sh_utf8_valid(const void *str, size_t n)
{
	const unsigned char *s = str;
	size_t i = 0;
	while (i < n) {
		unsigned c = s[i];
		size_t need;
		uint32_t cp, min;
		if (c == 0)
			return false;
		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xE0) == 0xC0) {
			need = 1, cp = c & 0x1F, min = 0x80;
		} else if ((c & 0xF0) == 0xE0) {
			need = 2, cp = c & 0x0F, min = 0x800;
		} else if ((c & 0xF8) == 0xF0) {
			need = 3, cp = c & 0x07, min = 0x10000;
		} else {
			return false;
		}
		if (n - i - 1 < need)
			return false;
		for (size_t j = 1; j <= need; j++) {
			if ((s[i + j] & 0xC0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + j] & 0x3F);
		}
		if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return false;
		i += need + 1;
	}
	return true;
}

int sh_pid_str(const char *s, size_t len, sh_pid *out)
{
	if (!s || len == 0 || len > SH_PID_MAX_STR || !sh_utf8_valid(s, len))
		return SH_EINVAL;
	memset(out, 0, sizeof(*out));
	out->kind = SH_PID_STR;
	out->len = (uint8_t)len;
	memcpy(out->str, s, len);
	return SH_OK;
}

bool sh_pid_eq(const sh_pid *a, const sh_pid *b)
{
	if (a->kind != b->kind)
		return false;
	if (a->kind == SH_PID_U64)
		return a->num == b->num;
	return a->len == b->len && memcmp(a->str, b->str, a->len) == 0;
}

const void *sh_pid_bytes(const sh_pid *a, uint8_t buf[8], size_t *len)
{
	if (a->kind == SH_PID_STR) {
		*len = a->len;
		return a->str;
	}
	for (int i = 0; i < 8; i++)
		buf[i] = (uint8_t)(a->num >> (8 * i));
	*len = 8;
	return buf;
}

uint64_t sh_pid_hash(const sh_pid *a)
{
	uint8_t buf[8];
	size_t len;
	const void *p = sh_pid_bytes(a, buf, &len);
	return XXH64(p, len, 0);
}

char *sh_pid_format(const sh_pid *a, char *buf, size_t cap)
{
	if (cap == 0)
		return buf;
	if (a->kind == SH_PID_U64)
		snprintf(buf, cap, "%llu", (unsigned long long)a->num);
	else
		snprintf(buf, cap, "\"%.*s\"", (int)a->len, a->str);
	return buf;
}
