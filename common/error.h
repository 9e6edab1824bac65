/*
 * shoal error codes.
 *
 * Every fallible function in shoal returns an int: SH_OK (0) on success or
 * one of the codes below. The numbers are part of the wire protocol (they
 * travel in responses between processes), so a code is never renumbered or
 * reused; new codes are appended.
 *
 * The list is one X-macro so that the enum, the symbolic names and the
 * messages can never disagree (the idea of libuv's UV_ERRNO_MAP).
 */
#ifndef SH_ERROR_H
#define SH_ERROR_H

#include <stddef.h>

#define SH_ERRNO_MAP(X)                                                        \
	X(OK, 0, "success")                                                    \
	X(ENOMEM, 1, "out of memory")                                          \
	X(EINVAL, 2, "invalid argument")                                       \
	X(ENOTFOUND, 3, "not found")                                           \
	X(EIO, 4, "input/output error")                                        \
	X(ETIMEDOUT, 5, "timed out")                                           \
	X(EEXIST, 6, "already exists")                                         \
	X(EFULL, 7, "capacity exhausted")                                      \
	X(ECORRUPT, 8, "corrupt or inconsistent data")                         \
	X(EDIM, 9, "vector dimension does not match the collection")           \
	X(ENAN, 10, "vector holds NaN or infinity")                            \
	X(ETOOBIG, 11, "input exceeds a size limit")                           \
	X(ESTALE, 12, "write ignored: a newer version is stored")              \
	X(EUNSUPPORTED, 13, "operation not supported")                         \
	X(EBUSY, 14, "resource busy")                                          \
	X(EMOVED, 15, "slot not owned by this node at its map epoch")          \
	X(ENOCOLLECTION, 16, "unknown collection")

typedef enum sh_err {
#define SH_ERR_ENUM_(name, num, msg) SH_##name = num,
	SH_ERRNO_MAP(SH_ERR_ENUM_)
#undef SH_ERR_ENUM_
} sh_err;

/* How many codes there are (they run from 0 without a gap). */
enum {
#define SH_ERR_COUNT_(name, num, msg) +1
	SH_NCODES = 0 SH_ERRNO_MAP(SH_ERR_COUNT_)
#undef SH_ERR_COUNT_
};

/* Human-readable message for a code; never NULL ("unknown error" for codes
 * this build does not know, e.g. from a newer peer). */
const char *sh_strerror(int code);

/* The symbolic name without prefix ("ENOMEM"); never NULL. */
const char *sh_errname(int code);

/* Writes a printf-style message into err (when err is not NULL and errlen is
 * not 0; truncated to errlen) and returns code: the one helper behind every
 * "fail with a message" in shoal. Any thread. */
int sh_errf(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
