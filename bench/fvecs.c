/*
 * .fvecs / .ivecs / .labels readers and writers (see fvecs.h).
 */
#include "fvecs.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the vector files are little-endian; this reader assumes the host is too"
#endif

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -1;
}

/* Opens a regular file for reading and returns its length. */
static FILE *open_regular(const char *path, off_t *size, char *err,
			  size_t errlen)
{
	struct stat st;
	FILE *f = fopen(path, "rb");

	if (!f) {
		fail(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fileno(f), &st) != 0) {
		fail(err, errlen, "%s: %s", path, strerror(errno));
		fclose(f);
		return NULL;
	}
	if (!S_ISREG(st.st_mode)) {
		fail(err, errlen, "%s: not a regular file", path);
		fclose(f);
		return NULL;
	}
	*size = st.st_size;
	return f;
}

enum vec_kind { VK_F32, VK_I32 };

static int read_vecs(const char *path, enum vec_kind kind, size_t limit,
		     void **out, size_t *n, size_t *n_file, uint32_t *dim,
		     char *err, size_t errlen)
{
	const char *what = kind == VK_F32 ? "fvecs" : "ivecs";
	off_t size;
	int32_t hdr;
	uint64_t rec, count, nread;
	char *buf = NULL;
	FILE *f;

	*out = NULL;
	*n = 0;
	f = open_regular(path, &size, err, errlen);
	if (!f)
		return -1;
	if (size == 0) {
		fail(err, errlen, "%s: empty file", path);
		goto bad;
	}
	if (size < 4 || fread(&hdr, 4, 1, f) != 1) {
		fail(err, errlen, "%s: too short for a %s header (%lld bytes)",
		     path, what, (long long)size);
		goto bad;
	}
	if (hdr < 1 || (uint32_t)hdr > FV_MAX_DIM) {
		fail(err, errlen,
		     "%s: record 0: dimension %d out of range 1..%u "
		     "(not a .%s file?)",
		     path, hdr, FV_MAX_DIM, what);
		goto bad;
	}
	rec = 4 + 4 * (uint64_t)hdr;
	if ((uint64_t)size % rec != 0) {
		fail(err, errlen,
		     "%s: length %lld is not a multiple of the record size "
		     "%llu (dimension %d): truncated or not a .%s file",
		     path, (long long)size, (unsigned long long)rec, hdr, what);
		goto bad;
	}
	count = (uint64_t)size / rec;
	nread = limit && limit < count ? limit : count;
	if (nread > SIZE_MAX / 4 / (uint64_t)hdr) {
		fail(err, errlen, "%s: %llu x %d values do not fit in memory",
		     path, (unsigned long long)nread, hdr);
		goto bad;
	}
	buf = malloc(nread * (uint64_t)hdr * 4);
	if (!buf) {
		fail(err, errlen, "%s: out of memory for %llu x %d values",
		     path, (unsigned long long)nread, hdr);
		goto bad;
	}
	for (uint64_t i = 0; i < nread; i++) {
		int32_t d;
		char *dst = buf + i * (uint64_t)hdr * 4;

		if (i > 0 && fread(&d, 4, 1, f) != 1)
			goto short_read;
		if (i > 0 && d != hdr) {
			fail(err, errlen,
			     "%s: record %llu: dimension %d differs from the "
			     "first record's %d",
			     path, (unsigned long long)i, d, hdr);
			goto bad;
		}
		if (fread(dst, 4, (size_t)hdr, f) != (size_t)hdr)
			goto short_read;
		if (kind == VK_F32) {
			const float *v = (const float *)dst;

			for (int32_t j = 0; j < hdr; j++) {
				if (!isfinite(v[j])) {
					fail(err, errlen,
					     "%s: record %llu: component %d is "
					     "NaN or infinite",
					     path, (unsigned long long)i, j);
					goto bad;
				}
			}
		}
	}
	/* Records past the limit are not loaded, but their headers must still
	 * agree: a file that is corrupt further on is reported, not used. */
	for (uint64_t i = nread; i < count; i++) {
		int32_t d;

		if (fseeko(f, (off_t)(i * rec), SEEK_SET) != 0 ||
		    fread(&d, 4, 1, f) != 1)
			goto short_read;
		if (d != hdr) {
			fail(err, errlen,
			     "%s: record %llu: dimension %d differs from the "
			     "first record's %d",
			     path, (unsigned long long)i, d, hdr);
			goto bad;
		}
	}
	fclose(f);
	*out = buf;
	*n = (size_t)nread;
	if (n_file)
		*n_file = (size_t)count;
	*dim = (uint32_t)hdr;
	return 0;

short_read:
	fail(err, errlen, "%s: read error: %s", path,
	     ferror(f) ? strerror(errno) : "unexpected end of file");
bad:
	free(buf);
	fclose(f);
	return -1;
}

int fv_read_fvecs(const char *path, size_t limit, float **out, size_t *n,
		  size_t *n_file, uint32_t *dim, char *err, size_t errlen)
{
	void *p;
	int rc =
	    read_vecs(path, VK_F32, limit, &p, n, n_file, dim, err, errlen);

	*out = p;
	return rc;
}

int fv_read_ivecs(const char *path, size_t limit, int32_t **out, size_t *n,
		  size_t *n_file, uint32_t *dim, char *err, size_t errlen)
{
	void *p;
	int rc =
	    read_vecs(path, VK_I32, limit, &p, n, n_file, dim, err, errlen);

	*out = p;
	return rc;
}

int fv_read_labels(const char *path, uint8_t **out, size_t *n, char *err,
		   size_t errlen)
{
	off_t size;
	uint8_t *buf;
	FILE *f;

	*out = NULL;
	*n = 0;
	f = open_regular(path, &size, err, errlen);
	if (!f)
		return -1;
	if (size == 0) {
		fclose(f);
		return fail(err, errlen, "%s: empty file", path);
	}
	buf = malloc((size_t)size);
	if (!buf) {
		fclose(f);
		return fail(err, errlen, "%s: out of memory", path);
	}
	if (fread(buf, 1, (size_t)size, f) != (size_t)size) {
		fail(err, errlen, "%s: read error: %s", path,
		     ferror(f) ? strerror(errno) : "unexpected end of file");
		free(buf);
		fclose(f);
		return -1;
	}
	fclose(f);
	*out = buf;
	*n = (size_t)size;
	return 0;
}

static FILE *open_write(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "wb");

	if (!f)
		fail(err, errlen, "%s: %s", path, strerror(errno));
	return f;
}

static int close_write(FILE *f, const char *path, int ok, char *err,
		       size_t errlen)
{
	int saved = errno;

	if (fclose(f) != 0 && ok) {
		saved = errno;
		ok = 0;
	}
	if (!ok) {
		remove(path);
		return fail(err, errlen, "%s: write error: %s", path,
			    strerror(saved));
	}
	return 0;
}

static int write_vecs(const char *path, const void *v, size_t n, uint32_t dim,
		      char *err, size_t errlen)
{
	const char *p = v;
	int32_t hdr = (int32_t)dim;
	int ok = 1;
	FILE *f;

	if (dim < 1 || dim > FV_MAX_DIM)
		return fail(err, errlen, "%s: dimension %u out of range", path,
			    dim);
	f = open_write(path, err, errlen);
	if (!f)
		return -1;
	for (size_t i = 0; i < n && ok; i++) {
		ok = fwrite(&hdr, 4, 1, f) == 1 &&
		     fwrite(p + i * (size_t)dim * 4, 4, dim, f) == dim;
	}
	return close_write(f, path, ok, err, errlen);
}

int fv_write_fvecs(const char *path, const float *v, size_t n, uint32_t dim,
		   char *err, size_t errlen)
{
	return write_vecs(path, v, n, dim, err, errlen);
}

int fv_write_ivecs(const char *path, const int32_t *v, size_t n, uint32_t dim,
		   char *err, size_t errlen)
{
	return write_vecs(path, v, n, dim, err, errlen);
}

int fv_write_labels(const char *path, const uint8_t *v, size_t n, char *err,
		    size_t errlen)
{
	FILE *f = open_write(path, err, errlen);

	if (!f)
		return -1;
	return close_write(f, path, fwrite(v, 1, n, f) == n, err, errlen);
}
