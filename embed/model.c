/*
 * The model loader: config.json for the shape, one safetensors file for the
 * weights, converted to float32 host arrays that the model owns.
 *
 * safetensors layout: an 8-byte little-endian header length N, N bytes of
 * JSON ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
 * optionally "__metadata__"}), then the data; offsets are relative to the
 * first byte after the header. The file is untrusted: every length and
 * offset is checked before it is used, with overflow-safe arithmetic.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "bert.h"
#include "error.h"

/* Sanity limits on what config.json may ask for (far above any BERT). */
#define MODEL_MAX_DIM (1 << 16)
#define MODEL_MAX_LAYERS 256
#define MODEL_MAX_VOCAB (1 << 22)
/* A header is JSON describing a few hundred tensors: 100 MiB is generous
 * and keeps a hostile length from allocating the machine away. */
#define MODEL_MAX_HEADER (100u << 20)
#define MODEL_MAX_CONFIG (1u << 20)

/* Storage owned by a loaded model (sh_bert_model.priv). */
struct model_priv {
	float *arena; /* every tensor, converted to f32 */
	size_t arena_len;
};

enum st_dtype { ST_F32, ST_F16, ST_BF16, ST_OTHER };

struct st_tensor {
	const char *name; /* points into the cJSON tree */
	enum st_dtype dtype;
	int ndim;
	int64_t shape[8];
	uint64_t begin, end; /* relative to the data section */
};

struct st_file {
	const char *path;
	const uint8_t *map;
	size_t map_len;
	const uint8_t *data; /* first byte after the header */
	uint64_t data_len;
	cJSON *json;
	struct st_tensor *t;
	int nt;
};

/* ---- small helpers --------------------------------------------------------
 */

static int read_small_file(const char *path, size_t max, char **out, char *err,
			   size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return sh_errf(err, errlen,
			       errno == ENOENT ? SH_ENOTFOUND : SH_EIO,
			       "%s: %s", path, strerror(errno));
	char *buf = malloc(max + 1);
	if (!buf) {
		fclose(f);
		return sh_errf(err, errlen, SH_ENOMEM, "%s: out of memory",
			       path);
	}
	size_t n = fread(buf, 1, max + 1, f);
	int bad = ferror(f);
	fclose(f);
	if (bad) {
		free(buf);
		return sh_errf(err, errlen, SH_EIO, "%s: read error", path);
	}
	if (n > max) {
		free(buf);
		return sh_errf(err, errlen, SH_ETOOBIG,
			       "%s: larger than %zu bytes", path, max);
	}
	buf[n] = '\0';
	*out = buf;
	return SH_OK;
}

/* IEEE half -> float, subnormals, infinities and NaN included. */
static float half_to_float(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	uint32_t exp = (h >> 10) & 0x1fu;
	uint32_t man = h & 0x3ffu;
	uint32_t bits;

	if (exp == 0x1f) {
		bits = sign | 0x7f800000u | (man << 13);
	} else if (exp != 0) {
		bits = sign | ((exp + 112u) << 23) | (man << 13);
	} else if (man == 0) {
		bits = sign;
	} else {
		/* subnormal: value = man * 2^-24 */
		float v = (float)man * 0x1p-24f;
		memcpy(&bits, &v, sizeof(bits));
		bits |= sign;
	}
	float f;
	memcpy(&f, &bits, sizeof(f));
	return f;
}

static float bf16_to_float(uint16_t h)
{
	uint32_t bits = (uint32_t)h << 16;
	float f;
	memcpy(&f, &bits, sizeof(f));
	return f;
}

static uint16_t load_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

/* ---- config.json ----------------------------------------------------------
 */

static int cfg_int(const cJSON *root, const char *key, int dflt, int lo, int hi,
		   int *out, const char *path, char *err, size_t errlen)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
	if (!v) {
		if (dflt < 0)
			return sh_errf(err, errlen, SH_ECORRUPT,
				       "%s: missing \"%s\"", path, key);
		*out = dflt;
		return SH_OK;
	}
	if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) ||
	    v->valuedouble < lo || v->valuedouble > hi)
		return sh_errf(err, errlen, SH_ECORRUPT,
			       "%s: \"%s\" must be an integer in [%d, %d]",
			       path, key, lo, hi);
	*out = (int)v->valuedouble;
	return SH_OK;
}

static int load_config(const char *dir, struct sh_bert_config *cfg, char *err,
		       size_t errlen)
{
	char path[PATH_MAX];
	char *text = NULL;
	cJSON *root = NULL;
	int rc;

	if ((size_t)snprintf(path, sizeof(path), "%s/config.json", dir) >=
	    sizeof(path))
		return sh_errf(err, errlen, SH_EINVAL, "%s: path too long",
			       dir);
	rc = read_small_file(path, MODEL_MAX_CONFIG, &text, err, errlen);
	if (rc)
		return rc;
	root = cJSON_Parse(text);
	free(text);
	if (!cJSON_IsObject(root)) {
		rc = sh_errf(err, errlen, SH_ECORRUPT, "%s: not a JSON object",
			     path);
		goto out;
	}

	const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "hidden_act");
	if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, "gelu"))) {
		rc = sh_errf(err, errlen, SH_EUNSUPPORTED,
			     "%s: hidden_act must be \"gelu\" (exact erf form)",
			     path);
		goto out;
	}
	const cJSON *pet =
	    cJSON_GetObjectItemCaseSensitive(root, "position_embedding_type");
	if (pet &&
	    (!cJSON_IsString(pet) || strcmp(pet->valuestring, "absolute"))) {
		rc = sh_errf(err, errlen, SH_EUNSUPPORTED,
			     "%s: only absolute position embeddings", path);
		goto out;
	}

	memset(cfg, 0, sizeof(*cfg));
	if ((rc = cfg_int(root, "vocab_size", -1, 1, MODEL_MAX_VOCAB,
			  &cfg->vocab_size, path, err, errlen)) ||
	    (rc = cfg_int(root, "hidden_size", -1, 1, MODEL_MAX_DIM,
			  &cfg->hidden, path, err, errlen)) ||
	    (rc = cfg_int(root, "num_hidden_layers", -1, 1, MODEL_MAX_LAYERS,
			  &cfg->layers, path, err, errlen)) ||
	    (rc = cfg_int(root, "num_attention_heads", -1, 1, MODEL_MAX_DIM,
			  &cfg->heads, path, err, errlen)) ||
	    (rc = cfg_int(root, "intermediate_size", -1, 1, 4 * MODEL_MAX_DIM,
			  &cfg->intermediate, path, err, errlen)) ||
	    (rc = cfg_int(root, "max_position_embeddings", -1, 2, MODEL_MAX_DIM,
			  &cfg->max_positions, path, err, errlen)) ||
	    (rc = cfg_int(root, "type_vocab_size", 2, 1, 1024,
			  &cfg->type_vocab_size, path, err, errlen)))
		goto out;
	if (cfg->hidden % cfg->heads) {
		rc = sh_errf(err, errlen, SH_ECORRUPT,
			     "%s: hidden_size %d is not a multiple of "
			     "num_attention_heads %d",
			     path, cfg->hidden, cfg->heads);
		goto out;
	}
	cfg->eps = 1e-12f;
	const cJSON *eps =
	    cJSON_GetObjectItemCaseSensitive(root, "layer_norm_eps");
	if (eps) {
		if (!cJSON_IsNumber(eps) || !(eps->valuedouble > 0) ||
		    eps->valuedouble > 1) {
			rc = sh_errf(err, errlen, SH_ECORRUPT,
				     "%s: layer_norm_eps must be in (0, 1]",
				     path);
			goto out;
		}
		cfg->eps = (float)eps->valuedouble;
	}
	rc = SH_OK;
out:
	cJSON_Delete(root);
	return rc;
}

/* ---- safetensors ----------------------------------------------------------
 */

/* The weights file of dir: model.safetensors, else the only *.safetensors. */
static int find_weights(const char *dir, char *path, size_t pathlen, char *err,
			size_t errlen)
{
	DIR *d = opendir(dir);
	if (!d)
		return sh_errf(err, errlen,
			       errno == ENOENT ? SH_ENOTFOUND : SH_EIO,
			       "%s: %s", dir, strerror(errno));
	char found[256] = "";
	int n = 0, preferred = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		size_t len = strlen(e->d_name);
		if (len <= 12 || len >= sizeof(found) ||
		    strcmp(e->d_name + len - 12, ".safetensors"))
			continue;
		if (!strcmp(e->d_name, "model.safetensors")) {
			preferred = 1;
			strcpy(found, e->d_name);
		} else if (!preferred) {
			strcpy(found, e->d_name);
		}
		n++;
	}
	closedir(d);
	if (n == 0)
		return sh_errf(err, errlen, SH_ENOTFOUND,
			       "%s: no *.safetensors file", dir);
	if (n > 1 && !preferred)
		return sh_errf(err, errlen, SH_EINVAL,
			       "%s: %d *.safetensors files and no "
			       "model.safetensors among them",
			       dir, n);
	if ((size_t)snprintf(path, pathlen, "%s/%s", dir, found) >= pathlen)
		return sh_errf(err, errlen, SH_EINVAL, "%s: path too long",
			       dir);
	return SH_OK;
}

static int dtype_parse(const char *s, enum st_dtype *dt, unsigned *size)
{
	static const struct {
		const char *name;
		enum st_dtype dt;
		unsigned size;
	} tab[] = {
	    {"F32", ST_F32, 4},	      {"F16", ST_F16, 2},
	    {"BF16", ST_BF16, 2},     {"F64", ST_OTHER, 8},
	    {"I64", ST_OTHER, 8},     {"U64", ST_OTHER, 8},
	    {"I32", ST_OTHER, 4},     {"U32", ST_OTHER, 4},
	    {"I16", ST_OTHER, 2},     {"U16", ST_OTHER, 2},
	    {"I8", ST_OTHER, 1},      {"U8", ST_OTHER, 1},
	    {"BOOL", ST_OTHER, 1},    {"F8_E4M3", ST_OTHER, 1},
	    {"F8_E5M2", ST_OTHER, 1},
	};
	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
		if (!strcmp(s, tab[i].name)) {
			*dt = tab[i].dt;
			*size = tab[i].size;
			return 1;
		}
	return 0;
}

static int cmp_begin(const void *a, const void *b)
{
	const struct st_tensor *x = *(const struct st_tensor *const *)a;
	const struct st_tensor *y = *(const struct st_tensor *const *)b;
	return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* Checks one header entry and fills *t. */
static int parse_tensor(const struct st_file *f, const cJSON *e,
			struct st_tensor *t, char *err, size_t errlen)
{
	const char *p = f->path, *name = e->string;
	const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
	const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
	const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
	unsigned esize;

	if (!cJSON_IsObject(e) || !cJSON_IsString(dt) || !cJSON_IsArray(sh) ||
	    !cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2)
		return sh_errf(err, errlen, SH_ECORRUPT,
			       "%s: tensor \"%s\": malformed header entry", p,
			       name);
	if (!dtype_parse(dt->valuestring, &t->dtype, &esize))
		return sh_errf(err, errlen, SH_ECORRUPT,
			       "%s: tensor \"%s\": unknown dtype \"%s\"", p,
			       name, dt->valuestring);
	t->name = name;
	t->ndim = cJSON_GetArraySize(sh);
	if (t->ndim > 8)
		return sh_errf(err, errlen, SH_ECORRUPT,
			       "%s: tensor \"%s\": %d dimensions", p, name,
			       t->ndim);
	/* elements * esize, with overflow checks (each dim < 2^40) */
	uint64_t bytes = esize;
	int i = 0;
	const cJSON *d;
	cJSON_ArrayForEach(d, sh)
	{
		if (!cJSON_IsNumber(d) || d->valuedouble < 0 ||
		    d->valuedouble > 0x1p40 ||
		    d->valuedouble != floor(d->valuedouble))
			return sh_errf(err, errlen, SH_ECORRUPT,
				       "%s: tensor \"%s\": bad shape", p, name);
		t->shape[i++] = (int64_t)d->valuedouble;
		if (__builtin_mul_overflow(bytes, (uint64_t)d->valuedouble,
					   &bytes))
			return sh_errf(err, errlen, SH_ECORRUPT,
				       "%s: tensor \"%s\": shape overflows", p,
				       name);
	}
	double b = cJSON_GetArrayItem(off, 0)->valuedouble;
	double en = cJSON_GetArrayItem(off, 1)->valuedouble;
	if (!cJSON_IsNumber(cJSON_GetArrayItem(off, 0)) ||
	    !cJSON_IsNumber(cJSON_GetArrayItem(off, 1)) || b < 0 || en < b ||
	    en > (double)f->data_len || b != floor(b) || en != floor(en))
		return sh_errf(err, errlen, SH_ECORRUPT,
			       "%s: tensor \"%s\": data_offsets outside the "
			       "%llu data bytes",
			       p, name, (unsigned long long)f->data_len);
	t->begin = (uint64_t)b;
	t->end = (uint64_t)en;
	if (t->end - t->begin != bytes)
		return sh_errf(err, errlen, SH_ECORRUPT,
			       "%s: tensor \"%s\": %llu data bytes for a shape "
			       "of %llu bytes",
			       p, name, (unsigned long long)(t->end - t->begin),
			       (unsigned long long)bytes);
	return SH_OK;
}

static void st_close(struct st_file *f)
{
	free(f->t);
	cJSON_Delete(f->json);
	if (f->map)
		munmap((void *)f->map, f->map_len);
	memset(f, 0, sizeof(*f));
}

static int st_open(const char *path, struct st_file *f, char *err,
		   size_t errlen)
{
	int rc;
	memset(f, 0, sizeof(*f));
	f->path = path;

	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return sh_errf(err, errlen,
			       errno == ENOENT ? SH_ENOTFOUND : SH_EIO,
			       "%s: %s", path, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		close(fd);
		return sh_errf(err, errlen, SH_EIO, "%s: not a regular file",
			       path);
	}
	if (st.st_size < 8) {
		close(fd);
		return sh_errf(err, errlen, SH_ECORRUPT,
			       "%s: %lld bytes, too short for a safetensors "
			       "header",
			       path, (long long)st.st_size);
	}
	f->map_len = (size_t)st.st_size;
	void *m = mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (m == MAP_FAILED) {
		f->map = NULL;
		return sh_errf(err, errlen, SH_EIO, "%s: mmap: %s", path,
			       strerror(errno));
	}
	f->map = m;

	uint64_t hlen = 0;
	for (int i = 7; i >= 0; i--)
		hlen = (hlen << 8) | f->map[i];
	if (hlen < 2 || hlen > MODEL_MAX_HEADER || hlen > f->map_len - 8) {
		rc = sh_errf(err, errlen, SH_ECORRUPT,
			     "%s: header length %llu does not fit the %zu-byte "
			     "file",
			     path, (unsigned long long)hlen, f->map_len);
		goto fail;
	}
	f->data = f->map + 8 + hlen;
	f->data_len = f->map_len - 8 - hlen;
	f->json = cJSON_ParseWithLength((const char *)f->map + 8, hlen);
	if (!cJSON_IsObject(f->json)) {
		rc = sh_errf(err, errlen, SH_ECORRUPT,
			     "%s: header is not a JSON object", path);
		goto fail;
	}
	int n = cJSON_GetArraySize(f->json);
	f->t = calloc((size_t)n + 1, sizeof(*f->t));
	if (!f->t) {
		rc = sh_errf(err, errlen, SH_ENOMEM, "%s: out of memory", path);
		goto fail;
	}
	const cJSON *e;
	cJSON_ArrayForEach(e, f->json)
	{
		if (e->string && !strcmp(e->string, "__metadata__"))
			continue;
		if (!e->string) {
			rc = sh_errf(err, errlen, SH_ECORRUPT,
				     "%s: unnamed header entry", path);
			goto fail;
		}
		rc = parse_tensor(f, e, &f->t[f->nt], err, errlen);
		if (rc)
			goto fail;
		f->nt++;
	}

	/* No two tensors may share bytes. */
	struct st_tensor **ord = malloc(((size_t)f->nt + 1) * sizeof(*ord));
	if (!ord) {
		rc = sh_errf(err, errlen, SH_ENOMEM, "%s: out of memory", path);
		goto fail;
	}
	for (int i = 0; i < f->nt; i++)
		ord[i] = &f->t[i];
	qsort(ord, (size_t)f->nt, sizeof(*ord), cmp_begin);
	for (int i = 1; i < f->nt; i++)
		if (ord[i]->begin < ord[i - 1]->end) {
			rc = sh_errf(err, errlen, SH_ECORRUPT,
				     "%s: tensors \"%s\" and \"%s\" overlap",
				     path, ord[i - 1]->name, ord[i]->name);
			free(ord);
			goto fail;
		}
	free(ord);
	return SH_OK;
fail:
	st_close(f);
	return rc;
}

static const struct st_tensor *st_find(const struct st_file *f,
				       const char *name)
{
	for (int i = 0; i < f->nt; i++) {
		const char *n = f->t[i].name;
		if (!strncmp(n, "bert.", 5))
			n += 5;
		if (!strcmp(n, name))
			return &f->t[i];
	}
	return NULL;
}

/* ---- assembling the model -------------------------------------------------
 */

/* One tensor the model needs: its name (without "bert."), its shape, and
 * where the converted copy goes. */
struct want {
	char name[96];
	int64_t rows, cols; /* cols 0: a vector of rows */
	const float **dst;
	const struct st_tensor *t; /* found in the file */
};

/* Finds w's tensor in f and checks its shape against config.json and its
 * dtype; *out gets it. */
static int check(const struct st_file *f, const struct want *w,
		 const struct st_tensor **out, char *err, size_t errlen)
{
	const struct st_tensor *t = st_find(f, w->name);
	if (!t)
		return sh_errf(err, errlen, SH_ECORRUPT,
			       "%s: missing tensor \"%s\"", f->path, w->name);
	int ok = w->cols ? (t->ndim == 2 && t->shape[0] == w->rows &&
			    t->shape[1] == w->cols)
			 : (t->ndim == 1 && t->shape[0] == w->rows);
	if (!ok) {
		char got[96] = "";
		size_t o = 0;
		for (int i = 0; i < t->ndim && o < sizeof(got) - 24; i++)
			o += (size_t)snprintf(got + o, sizeof(got) - o,
					      "%s%lld", i ? "," : "",
					      (long long)t->shape[i]);
		return sh_errf(err, errlen, SH_ECORRUPT,
			       "%s: tensor \"%s\" has shape [%s], config.json "
			       "says [%lld%s%.0lld]",
			       f->path, w->name, got, (long long)w->rows,
			       w->cols ? "," : "", (long long)w->cols);
	}
	if (t->dtype == ST_OTHER)
		return sh_errf(err, errlen, SH_EUNSUPPORTED,
			       "%s: tensor \"%s\": dtype must be F32, F16 or "
			       "BF16",
			       f->path, w->name);
	*out = t;
	return SH_OK;
}

/* Converts the checked tensor t of w into dst (f32). */
static int take(const struct st_file *f, const struct want *w,
		const struct st_tensor *t, float *dst, char *err, size_t errlen)
{
	size_t n = (size_t)w->rows * (size_t)(w->cols ? w->cols : 1);
	const uint8_t *src = f->data + t->begin;
	switch (t->dtype) {
	case ST_F32:
		memcpy(dst, src, n * sizeof(float));
		break;
	case ST_F16:
		for (size_t i = 0; i < n; i++)
			dst[i] = half_to_float(load_le16(src + 2 * i));
		break;
	case ST_BF16:
		for (size_t i = 0; i < n; i++)
			dst[i] = bf16_to_float(load_le16(src + 2 * i));
		break;
	default:
		return sh_errf(err, errlen, SH_EUNSUPPORTED,
			       "%s: tensor \"%s\": dtype must be F32, F16 or "
			       "BF16",
			       f->path, w->name);
	}
	for (size_t i = 0; i < n; i++)
		if (!isfinite(dst[i]))
			return sh_errf(err, errlen, SH_ECORRUPT,
				       "%s: tensor \"%s\" holds NaN or "
				       "infinity",
				       f->path, w->name);
	*w->dst = dst;
	return SH_OK;
}

static void want_add(struct want *w, int *n, const char *name, int64_t rows,
		     int64_t cols, const float **dst)
{
	struct want *x = &w[(*n)++];
	snprintf(x->name, sizeof(x->name), "%s", name);
	x->rows = rows;
	x->cols = cols;
	x->dst = dst;
}

int sh_bert_load(const char *dir, struct sh_bert_model **out, char *err,
		 size_t errlen)
{
	struct sh_bert_model *m = NULL;
	struct model_priv *priv = NULL;
	struct want *w = NULL;
	struct st_file f = {0};
	char path[PATH_MAX];
	int rc;

	*out = NULL;
	m = calloc(1, sizeof(*m));
	priv = calloc(1, sizeof(*priv));
	if (!m || !priv) {
		rc = sh_errf(err, errlen, SH_ENOMEM, "%s: out of memory", dir);
		goto fail;
	}
	m->priv = priv;
	rc = load_config(dir, &m->cfg, err, errlen);
	if (rc)
		goto fail;
	const struct sh_bert_config *c = &m->cfg;

	/* name: the directory's last component, trailing slashes ignored */
	size_t dl = strlen(dir);
	while (dl > 1 && dir[dl - 1] == '/')
		dl--;
	size_t bs = dl;
	while (bs > 0 && dir[bs - 1] != '/')
		bs--;
	snprintf(m->name, sizeof(m->name), "%.*s", (int)(dl - bs), dir + bs);

	m->layer = calloc((size_t)c->layers, sizeof(*m->layer));
	w = calloc(5 + 16 * (size_t)c->layers, sizeof(*w));
	if (!m->layer || !w) {
		rc = sh_errf(err, errlen, SH_ENOMEM, "%s: out of memory", dir);
		goto fail;
	}
	int64_t h = c->hidden, in = c->intermediate;
	int nw = 0;
	want_add(w, &nw, "embeddings.word_embeddings.weight", c->vocab_size, h,
		 &m->word_emb);
	want_add(w, &nw, "embeddings.position_embeddings.weight",
		 c->max_positions, h, &m->pos_emb);
	want_add(w, &nw, "embeddings.token_type_embeddings.weight",
		 c->type_vocab_size, h, &m->type_emb);
	want_add(w, &nw, "embeddings.LayerNorm.weight", h, 0, &m->emb_ln_g);
	want_add(w, &nw, "embeddings.LayerNorm.bias", h, 0, &m->emb_ln_b);
	for (int l = 0; l < c->layers; l++) {
		struct sh_bert_layer *L = &m->layer[l];
		static const struct {
			const char *suffix;
			int rows, cols; /* 1: hidden, 2: intermediate */
			size_t off;
		} lt[] = {
#define LT(s, r, c, f) {s, r, c, offsetof(struct sh_bert_layer, f)}
		    LT("attention.self.query.weight", 1, 1, q_w),
		    LT("attention.self.query.bias", 1, 0, q_b),
		    LT("attention.self.key.weight", 1, 1, k_w),
		    LT("attention.self.key.bias", 1, 0, k_b),
		    LT("attention.self.value.weight", 1, 1, v_w),
		    LT("attention.self.value.bias", 1, 0, v_b),
		    LT("attention.output.dense.weight", 1, 1, ao_w),
		    LT("attention.output.dense.bias", 1, 0, ao_b),
		    LT("attention.output.LayerNorm.weight", 1, 0, ln1_g),
		    LT("attention.output.LayerNorm.bias", 1, 0, ln1_b),
		    LT("intermediate.dense.weight", 2, 1, ff1_w),
		    LT("intermediate.dense.bias", 2, 0, ff1_b),
		    LT("output.dense.weight", 1, 2, ff2_w),
		    LT("output.dense.bias", 1, 0, ff2_b),
		    LT("output.LayerNorm.weight", 1, 0, ln2_g),
		    LT("output.LayerNorm.bias", 1, 0, ln2_b),
#undef LT
		};
		for (size_t i = 0; i < sizeof(lt) / sizeof(lt[0]); i++) {
			char name[96];
			snprintf(name, sizeof(name), "encoder.layer.%d.%s", l,
				 lt[i].suffix);
			int64_t rows = lt[i].rows == 1 ? h : in;
			int64_t cols = lt[i].cols == 0	 ? 0
				       : lt[i].cols == 1 ? h
							 : in;
			want_add(w, &nw, name, rows, cols,
				 (const float **)((char *)L + lt[i].off));
		}
	}

	/* Every tensor is found and checked before anything is allocated
	 * for it, so the arena's size is bounded by the file's. */
	rc = find_weights(dir, path, sizeof(path), err, errlen);
	if (rc)
		goto fail;
	rc = st_open(path, &f, err, errlen);
	if (rc)
		goto fail;
	for (int i = 0; i < nw; i++) {
		rc = check(&f, &w[i], &w[i].t, err, errlen);
		if (rc)
			goto fail;
	}

	/* One arena for every tensor, each 64-byte aligned. */
	size_t total = 0;
	for (int i = 0; i < nw; i++) {
		size_t n =
		    (size_t)w[i].rows * (size_t)(w[i].cols ? w[i].cols : 1);
		total += (n + 15) & ~(size_t)15;
	}
	priv->arena_len = total;
	priv->arena = aligned_alloc(64, total * sizeof(float));
	if (!priv->arena) {
		rc = sh_errf(err, errlen, SH_ENOMEM,
			     "%s: out of memory for %zu weights", dir, total);
		goto fail;
	}

	float *dst = priv->arena;
	for (int i = 0; i < nw; i++) {
		rc = take(&f, &w[i], w[i].t, dst, err, errlen);
		if (rc)
			goto fail;
		size_t n =
		    (size_t)w[i].rows * (size_t)(w[i].cols ? w[i].cols : 1);
		dst += (n + 15) & ~(size_t)15;
	}
	st_close(&f);
	free(w);
	*out = m;
	return SH_OK;
fail:
	st_close(&f);
	free(w);
	sh_bert_free(m);
	if (!m)
		free(priv);
	return rc;
}

void sh_bert_free(struct sh_bert_model *m)
{
	if (!m)
		return;
	struct model_priv *priv = m->priv;
	if (priv)
		free(priv->arena);
	free(priv);
	free(m->layer);
	free(m);
}
