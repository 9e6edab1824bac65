#include "error.h"

#include <stdarg.h>
#include <stdio.h>

const char *sh_strerror(int code)
{
	switch (code) {
#define SH_ERR_MSG_(name, num, msg)                                            \
	case num:                                                              \
		return msg;
		SH_ERRNO_MAP(SH_ERR_MSG_)
#undef SH_ERR_MSG_
	}
	return "unknown error";
}

const char *sh_errname(int code)
{
	switch (code) {
#define SH_ERR_NAME_(name, num, msg)                                           \
	case num:                                                              \
		return #name;
		SH_ERRNO_MAP(SH_ERR_NAME_)
#undef SH_ERR_NAME_
	}
	return "EUNKNOWN";
}

int sh_errf(char *err, size_t errlen, int code, const char *fmt, ...)
{
	if (err && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return code;
}
