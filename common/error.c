#include "error.h"

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
