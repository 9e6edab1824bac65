/*
 * shoal-bench fmnist: real product data from Debian's dataset-fashion-mnist
 * (Zalando's article images: 60,000 training and 10,000 test images of
 * 28 x 28 grey pixels, ten product classes), as the benchmark files every
 * other command reads:
 *
 *   shoal-bench fmnist --out DIR [--queries 1000]
 *                      [--src /usr/share/datasets/fashion-mnist]
 *
 * writes DIR/base.fvecs (the 60,000 training images, 784 floats of pixel
 * values 0..255), query.fvecs (the first --queries test images),
 * groundtruth.ivecs (exact top-100 by L2, ties to the lower id),
 * base.labels / query.labels (the class of each, one byte) and
 * label-names.txt (one class name per line). Does nothing when DIR already
 * holds them for the same --queries.
 */
#include "fmnist.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "bench_util.h"
#include "fvecs.h"

static const char *const class_names[10] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",	   "Shirt",   "Sneaker",  "Bag",   "Ankle boot",
};

static uint32_t be32(const unsigned char *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
	       (uint32_t)b[2] << 8 | b[3];
}

/* Reads an IDX file (gzip): magic 0x801 (labels, 1 dim) or 0x803 (images,
 * 3 dims). *n items of *size bytes each, malloc'd. Returns 0 or -1. */
static int read_idx(const char *path, uint32_t want_magic, unsigned char **out,
		    size_t *n, size_t *size)
{
	gzFile f = gzopen(path, "rb");
	if (!f) {
		fprintf(stderr, "fmnist: %s: %s\n", path, strerror(errno));
		return -1;
	}
	unsigned char hdr[16];
	int ndims = want_magic == 0x803 ? 3 : 1;
	int hl = 4 + 4 * ndims;
	int rc = -1;
	*out = NULL;
	if (gzread(f, hdr, (unsigned)hl) != hl || be32(hdr) != want_magic) {
		fprintf(stderr,
			"fmnist: %s: not an IDX file of the expected "
			"kind\n",
			path);
		goto out;
	}
	*n = be32(hdr + 4);
	*size = ndims == 3 ? (size_t)be32(hdr + 8) * be32(hdr + 12) : 1;
	if (*n == 0 || *n > 1000000 || *size == 0 || *size > 4096) {
		fprintf(stderr, "fmnist: %s: implausible sizes\n", path);
		goto out;
	}
	*out = malloc(*n * *size);
	if (!*out)
		goto out;
	size_t total = *n * *size;
	if ((size_t)gzread(f, *out, (unsigned)total) != total) {
		fprintf(stderr, "fmnist: %s: truncated\n", path);
		free(*out);
		*out = NULL;
		goto out;
	}
	rc = 0;
out:
	gzclose(f);
	return rc;
}

static float *to_float(const unsigned char *px, size_t n, size_t dim)
{
	float *v = malloc(n * dim * sizeof(float));
	for (size_t i = 0; v && i < n * dim; i++)
		v[i] = (float)px[i];
	return v;
}

int cmd_fmnist(int argc, char **argv)
{
	const char *out = NULL, *src = "/usr/share/datasets/fashion-mnist";
	size_t nq = 1000;
	for (int i = 2; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--out"))
			out = argv[i + 1];
		else if (!strcmp(argv[i], "--src"))
			src = argv[i + 1];
		else if (!strcmp(argv[i], "--queries"))
			nq = strtoul(argv[i + 1], NULL, 10);
		else {
			fprintf(stderr, "fmnist: unknown flag %s\n", argv[i]);
			return 2;
		}
	}
	if (!out || nq == 0 || nq > 10000) {
		fprintf(stderr, "usage: shoal-bench fmnist --out DIR "
				"[--queries 1..10000] [--src DIR]\n");
		return 2;
	}
	char path[4096], err[512];
	snprintf(path, sizeof(path), "%s/.done-%zu", out, nq);
	struct stat st;
	if (stat(path, &st) == 0) {
		fprintf(stderr, "fmnist: %s is ready\n", out);
		return 0;
	}
	if (mkdir(out, 0755) != 0 && errno != EEXIST) {
		fprintf(stderr, "fmnist: %s: %s\n", out, strerror(errno));
		return 1;
	}
	unsigned char *tr = NULL, *te = NULL, *trl = NULL, *tel = NULL;
	size_t ntr, nte, ntrl, ntel, dim, one;
	int rc = 1;
	float *base = NULL, *q = NULL;
	int32_t *gt = NULL;
	uint32_t *cnt = NULL;
	char p1[4200], p2[4200], p3[4200], p4[4200];
	snprintf(p1, sizeof(p1), "%s/train-images-idx3-ubyte.gz", src);
	snprintf(p2, sizeof(p2), "%s/t10k-images-idx3-ubyte.gz", src);
	snprintf(p3, sizeof(p3), "%s/train-labels-idx1-ubyte.gz", src);
	snprintf(p4, sizeof(p4), "%s/t10k-labels-idx1-ubyte.gz", src);
	if (read_idx(p1, 0x803, &tr, &ntr, &dim) ||
	    read_idx(p2, 0x803, &te, &nte, &one) || one != dim ||
	    read_idx(p3, 0x801, &trl, &ntrl, &one) || ntrl != ntr ||
	    read_idx(p4, 0x801, &tel, &ntel, &one) || ntel != nte || nq > nte) {
		fprintf(stderr,
			"fmnist: cannot read the data set in %s "
			"(apt-get install dataset-fashion-mnist)\n",
			src);
		goto done;
	}
	base = to_float(tr, ntr, dim);
	q = to_float(te, nq, dim);
	gt = malloc(nq * 100 * sizeof(*gt));
	cnt = malloc(nq * sizeof(*cnt));
	if (!base || !q || !gt || !cnt)
		goto done;
	bench_exact_topk(base, ntr, q, nq, (uint32_t)dim, false, NULL, 100, gt,
			 cnt);
	snprintf(path, sizeof(path), "%s/base.fvecs", out);
	if (fv_write_fvecs(path, base, ntr, (uint32_t)dim, err, sizeof(err)))
		goto werr;
	snprintf(path, sizeof(path), "%s/query.fvecs", out);
	if (fv_write_fvecs(path, q, nq, (uint32_t)dim, err, sizeof(err)))
		goto werr;
	snprintf(path, sizeof(path), "%s/groundtruth.ivecs", out);
	if (fv_write_ivecs(path, gt, nq, 100, err, sizeof(err)))
		goto werr;
	snprintf(path, sizeof(path), "%s/base.labels", out);
	if (fv_write_labels(path, trl, ntr, err, sizeof(err)))
		goto werr;
	snprintf(path, sizeof(path), "%s/query.labels", out);
	if (fv_write_labels(path, tel, nq, err, sizeof(err)))
		goto werr;
	snprintf(path, sizeof(path), "%s/label-names.txt", out);
	FILE *f = fopen(path, "w");
	for (int i = 0; f && i < 10; i++)
		fprintf(f, "%s\n", class_names[i]);
	if (!f || fclose(f) != 0) {
		fprintf(stderr, "fmnist: %s: cannot write\n", path);
		goto done;
	}
	snprintf(path, sizeof(path), "%s/.done-%zu", out, nq);
	f = fopen(path, "w");
	if (f)
		fclose(f);
	fprintf(stderr,
		"fmnist: wrote %s: %zu base and %zu query vectors of %zu "
		"dimensions, top-100 ground truth, labels\n",
		out, ntr, nq, dim);
	rc = 0;
	goto done;
werr:
	fprintf(stderr, "fmnist: %s\n", err);
done:
	free(tr);
	free(te);
	free(trl);
	free(tel);
	free(base);
	free(q);
	free(gt);
	free(cnt);
	return rc;
}
