/*
 * The model loader and the CPU backend on tiny BERT models written to a
 * temporary directory: another shape than MiniLM loads from its config.json
 * alone (F16, F32 and BF16, with or without the "bert." prefix) and the CPU
 * backend matches a plain double-precision reference forward pass on it;
 * missing, truncated and corrupt files are clean errors naming the file.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "bert.h"
#include "error.h"

struct shape {
	int vocab, hidden, layers, heads, inter, maxpos, types;
};

static const struct shape tiny = {50, 16, 2, 4, 24, 64, 2};

/* One tensor of the file being written, its values kept for the
 * reference. */
struct tensor {
	char name[96];
	int rows, cols; /* cols 0: a vector */
	float *v;
};

struct model_file {
	struct tensor t[64];
	int n;
};

static char g_dir[64];

static void path_in(char *buf, size_t len, const char *file)
{
	snprintf(buf, len, "%s/%s", g_dir, file);
}

static void write_bytes(const char *file, const void *p, size_t len)
{
	char path[256];
	path_in(path, sizeof(path), file);
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(p, 1, len, f), len);
	fclose(f);
}

static void write_config(const struct shape *s)
{
	char buf[1024];
	int n = snprintf(
	    buf, sizeof(buf),
	    "{\"architectures\":[\"BertModel\"],\"hidden_act\":\"gelu\","
	    "\"hidden_size\":%d,\"intermediate_size\":%d,"
	    "\"layer_norm_eps\":1e-12,\"max_position_embeddings\":%d,"
	    "\"num_attention_heads\":%d,\"num_hidden_layers\":%d,"
	    "\"type_vocab_size\":%d,\"vocab_size\":%d}",
	    s->hidden, s->inter, s->maxpos, s->heads, s->layers, s->types,
	    s->vocab);
	write_bytes("config.json", buf, (size_t)n);
}

/* Values k/64, k in [-32, 32]: exact in F16 and BF16. */
static float rnd(void)
{
	return (float)(rand() % 65 - 32) / 64.0f;
}

static void add(struct model_file *mf, const char *name, int rows, int cols,
		float base)
{
	struct tensor *t = &mf->t[mf->n++];
	snprintf(t->name, sizeof(t->name), "%s", name);
	t->rows = rows;
	t->cols = cols;
	size_t n = (size_t)rows * (size_t)(cols ? cols : 1);
	t->v = calloc(n, sizeof(float));
	for (size_t i = 0; i < n; i++)
		t->v[i] = base + rnd();
}

static void build(struct model_file *mf, const struct shape *s)
{
	char name[96];
	memset(mf, 0, sizeof(*mf));
	add(mf, "embeddings.word_embeddings.weight", s->vocab, s->hidden, 0);
	add(mf, "embeddings.position_embeddings.weight", s->maxpos, s->hidden,
	    0);
	add(mf, "embeddings.token_type_embeddings.weight", s->types, s->hidden,
	    0);
	add(mf, "embeddings.LayerNorm.weight", s->hidden, 0, 1);
	add(mf, "embeddings.LayerNorm.bias", s->hidden, 0, 0);
	for (int l = 0; l < s->layers; l++) {
		static const struct {
			const char *n;
			int r, c; /* 1 hidden, 2 intermediate */
			float base;
		} lt[] = {
		    {"attention.self.query.weight", 1, 1, 0},
		    {"attention.self.query.bias", 1, 0, 0},
		    {"attention.self.key.weight", 1, 1, 0},
		    {"attention.self.key.bias", 1, 0, 0},
		    {"attention.self.value.weight", 1, 1, 0},
		    {"attention.self.value.bias", 1, 0, 0},
		    {"attention.output.dense.weight", 1, 1, 0},
		    {"attention.output.dense.bias", 1, 0, 0},
		    {"attention.output.LayerNorm.weight", 1, 0, 1},
		    {"attention.output.LayerNorm.bias", 1, 0, 0},
		    {"intermediate.dense.weight", 2, 1, 0},
		    {"intermediate.dense.bias", 2, 0, 0},
		    {"output.dense.weight", 1, 2, 0},
		    {"output.dense.bias", 1, 0, 0},
		    {"output.LayerNorm.weight", 1, 0, 1},
		    {"output.LayerNorm.bias", 1, 0, 0},
		};
		for (size_t i = 0; i < sizeof(lt) / sizeof(lt[0]); i++) {
			snprintf(name, sizeof(name), "encoder.layer.%d.%s", l,
				 lt[i].n);
			add(mf, name, lt[i].r == 1 ? s->hidden : s->inter,
			    lt[i].c == 0   ? 0
			    : lt[i].c == 1 ? s->hidden
					   : s->inter,
			    lt[i].base);
		}
	}
}

static void release(struct model_file *mf)
{
	for (int i = 0; i < mf->n; i++)
		free(mf->t[i].v);
	mf->n = 0;
}

static const float *get(const struct model_file *mf, const char *name)
{
	for (int i = 0; i < mf->n; i++)
		if (!strcmp(mf->t[i].name, name))
			return mf->t[i].v;
	fail_msg("no tensor %s", name);
	return NULL;
}

/* float -> half for the values rnd() makes (normal or zero). */
static uint16_t to_half(float f)
{
	uint32_t b;
	memcpy(&b, &f, sizeof(b));
	if ((b & 0x7fffffffu) == 0)
		return (uint16_t)(b >> 16);
	uint32_t sign = (b >> 16) & 0x8000u;
	int exp = (int)((b >> 23) & 0xff) - 127 + 15;
	return (uint16_t)(sign | ((uint32_t)exp << 10) | ((b >> 13) & 0x3ffu));
}

/* Writes model.safetensors (or file) from mf: dtype "F16", "F32" or
 * "BF16"; prefix "" or "bert."; an extra I64 position_ids tensor as in
 * the real file. */
static void write_st(const char *file, const struct model_file *mf,
		     const char *dtype, const char *prefix)
{
	unsigned es = strcmp(dtype, "F32") ? 2 : 4;
	cJSON *h = cJSON_CreateObject();
	cJSON *meta = cJSON_AddObjectToObject(h, "__metadata__");
	cJSON_AddStringToObject(meta, "format", "pt");
	size_t off = 0;
	for (int i = 0; i <= mf->n; i++) {
		char name[128];
		cJSON *e = cJSON_CreateObject();
		size_t n;
		if (i == mf->n) {
			snprintf(name, sizeof(name),
				 "%sembeddings.position_ids", prefix);
			cJSON_AddStringToObject(e, "dtype", "I64");
			int dims[2] = {1, 4};
			cJSON_AddItemToObject(e, "shape",
					      cJSON_CreateIntArray(dims, 2));
			n = 4 * 8;
		} else {
			const struct tensor *t = &mf->t[i];
			snprintf(name, sizeof(name), "%s%s", prefix, t->name);
			cJSON_AddStringToObject(e, "dtype", dtype);
			int dims[2] = {t->rows, t->cols};
			cJSON_AddItemToObject(
			    e, "shape",
			    cJSON_CreateIntArray(dims, t->cols ? 2 : 1));
			n = (size_t)t->rows * (size_t)(t->cols ? t->cols : 1) *
			    es;
		}
		double offs[2] = {(double)off, (double)(off + n)};
		cJSON_AddItemToObject(e, "data_offsets",
				      cJSON_CreateDoubleArray(offs, 2));
		cJSON_AddItemToObject(h, name, e);
		off += n;
	}
	char *js = cJSON_PrintUnformatted(h);
	cJSON_Delete(h);
	size_t hl = (strlen(js) + 7) & ~(size_t)7;
	size_t total = 8 + hl + off;
	uint8_t *buf = calloc(1, total);
	for (int i = 0; i < 8; i++)
		buf[i] = (uint8_t)((uint64_t)hl >> (8 * i));
	memset(buf + 8, ' ', hl);
	memcpy(buf + 8, js, strlen(js));
	free(js);
	uint8_t *d = buf + 8 + hl;
	for (int i = 0; i < mf->n; i++) {
		const struct tensor *t = &mf->t[i];
		size_t n = (size_t)t->rows * (size_t)(t->cols ? t->cols : 1);
		for (size_t j = 0; j < n; j++) {
			if (es == 4) {
				memcpy(d, &t->v[j], 4);
			} else {
				uint32_t b;
				memcpy(&b, &t->v[j], 4);
				uint16_t x = strcmp(dtype, "F16")
						 ? (uint16_t)(b >> 16)
						 : to_half(t->v[j]);
				d[0] = (uint8_t)x;
				d[1] = (uint8_t)(x >> 8);
			}
			d += es;
		}
	}
	write_bytes(file, buf, total);
	free(buf);
}

/* ---- the reference forward pass, in double --------------------------------
 */

static void ref_ln(double *x, const float *g, const float *b, int h)
{
	double mean = 0, var = 0;
	for (int i = 0; i < h; i++)
		mean += x[i];
	mean /= h;
	for (int i = 0; i < h; i++)
		var += (x[i] - mean) * (x[i] - mean);
	var /= h;
	for (int i = 0; i < h; i++)
		x[i] = (x[i] - mean) / sqrt(var + 1e-12) * g[i] + b[i];
}

static void ref_linear(const double *in, int kin, const float *w,
		       const float *b, int kout, double *out)
{
	for (int o = 0; o < kout; o++) {
		double s = b[o];
		for (int i = 0; i < kin; i++)
			s += in[i] * w[(size_t)o * kin + i];
		out[o] = s;
	}
}

static void ref_forward(const struct model_file *mf, const struct shape *s,
			const int32_t *ids, int n, double *out)
{
	const int h = s->hidden, dh = h / s->heads;
	double *x = calloc((size_t)n * h, sizeof(double));
	double *q = calloc((size_t)n * h, sizeof(double));
	double *k = calloc((size_t)n * h, sizeof(double));
	double *v = calloc((size_t)n * h, sizeof(double));
	double *a = calloc((size_t)n * h, sizeof(double));
	double *t = calloc((size_t)n * h, sizeof(double));
	double *f = calloc((size_t)s->inter, sizeof(double));
	double *p = calloc((size_t)n, sizeof(double));
	const float *we = get(mf, "embeddings.word_embeddings.weight");
	const float *pe = get(mf, "embeddings.position_embeddings.weight");
	const float *te = get(mf, "embeddings.token_type_embeddings.weight");
	for (int r = 0; r < n; r++) {
		for (int i = 0; i < h; i++)
			x[r * h + i] =
			    (double)we[ids[r] * h + i] + pe[r * h + i] + te[i];
		ref_ln(x + r * h, get(mf, "embeddings.LayerNorm.weight"),
		       get(mf, "embeddings.LayerNorm.bias"), h);
	}
	for (int l = 0; l < s->layers; l++) {
		char nm[16][96];
		static const char *const sfx[] = {
		    "attention.self.query.weight",
		    "attention.self.query.bias",
		    "attention.self.key.weight",
		    "attention.self.key.bias",
		    "attention.self.value.weight",
		    "attention.self.value.bias",
		    "attention.output.dense.weight",
		    "attention.output.dense.bias",
		    "attention.output.LayerNorm.weight",
		    "attention.output.LayerNorm.bias",
		    "intermediate.dense.weight",
		    "intermediate.dense.bias",
		    "output.dense.weight",
		    "output.dense.bias",
		    "output.LayerNorm.weight",
		    "output.LayerNorm.bias",
		};
		const float *W[16];
		for (int i = 0; i < 16; i++) {
			snprintf(nm[i], sizeof(nm[i]), "encoder.layer.%d.%s", l,
				 sfx[i]);
			W[i] = get(mf, nm[i]);
		}
		for (int r = 0; r < n; r++) {
			ref_linear(x + r * h, h, W[0], W[1], h, q + r * h);
			ref_linear(x + r * h, h, W[2], W[3], h, k + r * h);
			ref_linear(x + r * h, h, W[4], W[5], h, v + r * h);
		}
		for (int hd = 0; hd < s->heads; hd++)
			for (int i = 0; i < n; i++) {
				double mx = -1e300, sum = 0;
				for (int j = 0; j < n; j++) {
					double d = 0;
					for (int c = 0; c < dh; c++)
						d += q[i * h + hd * dh + c] *
						     k[j * h + hd * dh + c];
					p[j] = d / sqrt((double)dh);
					mx = p[j] > mx ? p[j] : mx;
				}
				for (int j = 0; j < n; j++)
					sum += p[j] = exp(p[j] - mx);
				for (int c = 0; c < dh; c++) {
					double o = 0;
					for (int j = 0; j < n; j++)
						o += p[j] / sum *
						     v[j * h + hd * dh + c];
					a[i * h + hd * dh + c] = o;
				}
			}
		for (int r = 0; r < n; r++) {
			ref_linear(a + r * h, h, W[6], W[7], h, t);
			for (int i = 0; i < h; i++)
				x[r * h + i] += t[i];
			ref_ln(x + r * h, W[8], W[9], h);
			ref_linear(x + r * h, h, W[10], W[11], s->inter, f);
			for (int i = 0; i < s->inter; i++)
				f[i] = 0.5 * f[i] * (1 + erf(f[i] / sqrt(2.0)));
			ref_linear(f, s->inter, W[12], W[13], h, t);
			for (int i = 0; i < h; i++)
				x[r * h + i] += t[i];
			ref_ln(x + r * h, W[14], W[15], h);
		}
	}
	double norm = 0;
	for (int i = 0; i < h; i++) {
		out[i] = 0;
		for (int r = 0; r < n; r++)
			out[i] += x[r * h + i] / n;
		norm += out[i] * out[i];
	}
	for (int i = 0; i < h; i++)
		out[i] /= sqrt(norm);
	free(x);
	free(q);
	free(k);
	free(v);
	free(a);
	free(t);
	free(f);
	free(p);
}

/* ---- fixtures ---------------------------------------------------------------
 */

static int setup(void **state)
{
	snprintf(g_dir, sizeof(g_dir), "/tmp/shoal-loader-XXXXXX");
	return mkdtemp(g_dir) ? 0 : -1;
}

static void clean_dir(void)
{
	static const char *const files[] = {"config.json", "model.safetensors",
					    "other.safetensors",
					    "more.safetensors"};
	char path[256];
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		path_in(path, sizeof(path), files[i]);
		unlink(path);
	}
}

static int teardown(void **state)
{
	clean_dir();
	rmdir(g_dir);
	return 0;
}

static int per_test_setup(void **state)
{
	clean_dir();
	srand(7);
	return 0;
}

static int load(struct sh_bert_model **m, char *err, size_t errlen)
{
	*m = NULL;
	err[0] = '\0';
	int rc = sh_bert_load(g_dir, m, err, errlen);
	if (rc)
		assert_null(*m);
	return rc;
}

/* CPU backend vs the reference, for texts of several lengths (the long
 * ones take the sgemm attention path) in one padded batch. */
static void check_forward(const struct model_file *mf, const struct shape *s,
			  const struct sh_bert_model *m)
{
	static const int lens[] = {1, 2, 7, 30, 50, 64};
	enum { NT = sizeof(lens) / sizeof(lens[0]) };
	const int seq = 64, h = s->hidden;
	int32_t *ids = calloc((size_t)NT * seq, sizeof(int32_t));
	float *out = calloc((size_t)NT * h, sizeof(float));
	double *ref = calloc((size_t)h, sizeof(double));
	for (int i = 0; i < NT * seq; i++)
		ids[i] = rand() % s->vocab;
	void *ctx;
	char err[256];
	assert_int_equal(sh_bert_cpu.create(m, NT, seq, &ctx, err, sizeof(err)),
			 SH_OK);
	struct sh_bert_batch b = {.n = NT, .seq = seq, .ids = ids, .len = lens};
	assert_int_equal(sh_bert_cpu.forward(ctx, &b, out, err, sizeof(err)),
			 SH_OK);
	for (int t = 0; t < NT; t++) {
		ref_forward(mf, s, ids + t * seq, lens[t], ref);
		double dot = 0, nn = 0;
		for (int i = 0; i < h; i++) {
			dot += ref[i] * out[t * h + i];
			nn += (double)out[t * h + i] * out[t * h + i];
		}
		print_message("tiny model, %d tokens: cosine to reference "
			      "1 - %.2e\n",
			      lens[t], 1 - dot);
		assert_true(dot > 0.99999);
		assert_true(fabs(nn - 1) < 1e-5);
	}
	/* one text at a time: short ones take the few-rows kernels */
	for (int t = 0; t < NT; t++) {
		struct sh_bert_batch one = {.n = 1,
					    .seq = lens[t],
					    .ids = ids + t * seq,
					    .len = &lens[t]};
		float o1[64];
		assert_true(h <= 64);
		assert_int_equal(
		    sh_bert_cpu.forward(ctx, &one, o1, err, sizeof(err)),
		    SH_OK);
		double dot = 0;
		for (int i = 0; i < h; i++)
			dot += (double)o1[i] * out[t * h + i];
		assert_true(dot > 0.999999);
	}
	/* bad batches are refused */
	struct sh_bert_batch bad = b;
	int badlen[NT];
	memcpy(badlen, lens, sizeof(badlen));
	badlen[2] = 0;
	bad.len = badlen;
	assert_int_equal(sh_bert_cpu.forward(ctx, &bad, out, err, sizeof(err)),
			 SH_EINVAL);
	ids[0] = s->vocab;
	assert_int_equal(sh_bert_cpu.forward(ctx, &b, out, err, sizeof(err)),
			 SH_EINVAL);
	bad = b;
	bad.n = NT + 1;
	assert_int_equal(sh_bert_cpu.forward(ctx, &bad, out, err, sizeof(err)),
			 SH_EINVAL);
	sh_bert_cpu.destroy(ctx);
	free(ids);
	free(out);
	free(ref);
}

/* ---- tests ------------------------------------------------------------------
 */

static void load_and_check(const struct shape *s, const char *dtype,
			   const char *prefix, int not_half)
{
	struct model_file mf;
	struct sh_bert_model *m;
	char err[512];
	build(&mf, s);
	if (not_half) /* a weight that is no IEEE half: the f32 kernels */
		mf.t[5].v[0] = 1.0f / 3.0f;
	write_config(s);
	write_st("model.safetensors", &mf, dtype, prefix);
	if (load(&m, err, sizeof(err)))
		fail_msg("%s", err);
	assert_int_equal(m->cfg.hidden, s->hidden);
	assert_int_equal(m->cfg.layers, s->layers);
	assert_int_equal(m->cfg.heads, s->heads);
	assert_int_equal(m->cfg.intermediate, s->inter);
	assert_string_equal(m->name, strrchr(g_dir, '/') + 1);
	check_forward(&mf, s, m);
	sh_bert_free(m);
	release(&mf);
}

static void test_tiny_f16_model_matches_reference(void **state)
{
	load_and_check(&tiny, "F16", "", 0);
}

static void test_tiny_f32_model_with_bert_prefix_matches_reference(void **state)
{
	load_and_check(&tiny, "F32", "bert.", 1);
}

static void test_other_shape_bf16_loads_without_code_changes(void **state)
{
	/* widths that are not multiples of 8: the kernels' scalar tails */
	static const struct shape other = {37, 20, 3, 4, 44, 80, 1};
	load_and_check(&other, "BF16", "", 0);
}

static void expect_error(int want, const char *file_in_msg)
{
	struct sh_bert_model *m;
	char err[512];
	int rc = load(&m, err, sizeof(err));
	if (rc != want)
		fail_msg("load: got %s (%s), want %s", sh_errname(rc), err,
			 sh_errname(want));
	if (file_in_msg && !strstr(err, file_in_msg))
		fail_msg("error \"%s\" does not name %s", err, file_in_msg);
	print_message("%s: %s\n", sh_errname(rc), err);
}

static void test_missing_files_are_not_found(void **state)
{
	struct sh_bert_model *m;
	char err[256];
	assert_int_equal(
	    sh_bert_load("/nonexistent/shoal-model", &m, err, sizeof(err)),
	    SH_ENOTFOUND);
	assert_null(m);
	assert_non_null(strstr(err, "/nonexistent/shoal-model/config.json"));
	/* config but no weights */
	write_config(&tiny);
	expect_error(SH_ENOTFOUND, "safetensors");
}

static void test_corrupt_config_is_corrupt(void **state)
{
	write_bytes("config.json", "{\"hidden_size\": ", 16);
	expect_error(SH_ECORRUPT, "config.json");
	struct shape s = tiny;
	s.heads = 5; /* 16 % 5 != 0 */
	write_config(&s);
	expect_error(SH_ECORRUPT, "config.json");
	s = tiny;
	s.hidden = -3;
	write_config(&s);
	expect_error(SH_ECORRUPT, "hidden_size");
}

static void test_short_and_bad_headers_are_corrupt(void **state)
{
	write_config(&tiny);
	write_bytes("model.safetensors", "\x10\x00\x00", 3);
	expect_error(SH_ECORRUPT, "model.safetensors");
	/* header length past the end of the file */
	write_bytes("model.safetensors", "\x00\x01\x00\x00\x00\x00\x00\x00{}",
		    10);
	expect_error(SH_ECORRUPT, "model.safetensors");
	/* header length near 2^64 (overflow bait) */
	write_bytes("model.safetensors", "\xf8\xff\xff\xff\xff\xff\xff\xff{}",
		    10);
	expect_error(SH_ECORRUPT, "model.safetensors");
	/* not JSON */
	write_bytes("model.safetensors", "\x04\0\0\0\0\0\0\0{{{{", 12);
	expect_error(SH_ECORRUPT, "model.safetensors");
	/* JSON, but not an object */
	write_bytes("model.safetensors", "\x02\0\0\0\0\0\0\0[]", 10);
	expect_error(SH_ECORRUPT, "model.safetensors");
}

static void write_raw(const char *header, size_t data_len)
{
	size_t hl = strlen(header);
	uint8_t *buf = calloc(1, 8 + hl + data_len);
	for (int i = 0; i < 8; i++)
		buf[i] = (uint8_t)((uint64_t)hl >> (8 * i));
	memcpy(buf + 8, header, hl);
	write_bytes("model.safetensors", buf, 8 + hl + data_len);
	free(buf);
}

static void test_bad_tensor_entries_are_corrupt(void **state)
{
	write_config(&tiny);
	/* offsets past the data */
	write_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],"
		  "\"data_offsets\":[0,16]}}",
		  8);
	expect_error(SH_ECORRUPT, "\"a\"");
	/* size does not match the shape */
	write_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],"
		  "\"data_offsets\":[0,12]}}",
		  16);
	expect_error(SH_ECORRUPT, "\"a\"");
	/* overlapping tensors */
	write_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],"
		  "\"data_offsets\":[0,16]},"
		  "\"b\":{\"dtype\":\"F32\",\"shape\":[2],"
		  "\"data_offsets\":[8,16]}}",
		  16);
	expect_error(SH_ECORRUPT, "overlap");
	/* a shape whose byte count overflows 64 bits */
	write_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[1099511627776,"
		  "1099511627776],\"data_offsets\":[0,16]}}",
		  16);
	expect_error(SH_ECORRUPT, "\"a\"");
	/* negative offsets, unknown dtype, malformed entry */
	write_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],"
		  "\"data_offsets\":[-4,0]}}",
		  16);
	expect_error(SH_ECORRUPT, "\"a\"");
	write_raw("{\"a\":{\"dtype\":\"Q4\",\"shape\":[1],"
		  "\"data_offsets\":[0,4]}}",
		  16);
	expect_error(SH_ECORRUPT, "Q4");
	write_raw("{\"a\":7}", 16);
	expect_error(SH_ECORRUPT, "\"a\"");
	/* well formed, but none of the tensors the model needs */
	write_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],"
		  "\"data_offsets\":[0,16]}}",
		  16);
	expect_error(SH_ECORRUPT, "embeddings.word_embeddings.weight");
}

static void test_truncated_file_is_corrupt(void **state)
{
	struct model_file mf;
	build(&mf, &tiny);
	write_config(&tiny);
	write_st("model.safetensors", &mf, "F16", "");
	char path[256];
	path_in(path, sizeof(path), "model.safetensors");
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	long size = ftell(f);
	fclose(f);
	/* the data cut short: the last tensors point past the end */
	assert_int_equal(truncate(path, size - 100), 0);
	expect_error(SH_ECORRUPT, "data_offsets outside");
	/* the header cut short */
	assert_int_equal(truncate(path, 300), 0);
	expect_error(SH_ECORRUPT, "model.safetensors");
	release(&mf);
}

static void test_shape_mismatch_with_config_is_corrupt(void **state)
{
	struct model_file mf;
	build(&mf, &tiny);
	struct shape s = tiny;
	s.inter = 32;
	write_config(&s);
	write_st("model.safetensors", &mf, "F16", "");
	expect_error(SH_ECORRUPT, "intermediate.dense.weight");
	release(&mf);
}

static void test_nan_weight_is_corrupt(void **state)
{
	struct model_file mf;
	build(&mf, &tiny);
	mf.t[5].v[3] = NAN;
	write_config(&tiny);
	write_st("model.safetensors", &mf, "F32", "");
	expect_error(SH_ECORRUPT, mf.t[5].name);
	release(&mf);
}

static void test_integer_dtype_for_a_weight_is_unsupported(void **state)
{
	struct model_file mf;
	build(&mf, &tiny);
	write_config(&tiny);
	write_st("model.safetensors", &mf, "F16", "");
	/* the first tensor (word embeddings) becomes I16: same size, so the
	 * header is valid, but it is no float */
	char path[256];
	path_in(path, sizeof(path), "model.safetensors");
	FILE *f = fopen(path, "r+b");
	assert_non_null(f);
	char head[512];
	size_t n = fread(head, 1, sizeof(head) - 1, f);
	head[n] = '\0';
	char *p = strstr(head + 8, "\"F16\"");
	assert_non_null(p);
	fseek(f, p - head + 1, SEEK_SET);
	fputc('I', f);
	fclose(f);
	expect_error(SH_EUNSUPPORTED, "embeddings.word_embeddings.weight");
	release(&mf);
}

static void test_several_weight_files_prefer_model_safetensors(void **state)
{
	struct model_file mf;
	build(&mf, &tiny);
	write_config(&tiny);
	write_bytes("other.safetensors", "junk", 4);
	write_bytes("more.safetensors", "junk", 4);
	expect_error(SH_EINVAL, "safetensors");
	write_st("model.safetensors", &mf, "F16", "");
	struct sh_bert_model *m;
	char err[256];
	assert_int_equal(load(&m, err, sizeof(err)), SH_OK);
	sh_bert_free(m);
	release(&mf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup(f, per_test_setup)
	    T(test_tiny_f16_model_matches_reference),
	    T(test_tiny_f32_model_with_bert_prefix_matches_reference),
	    T(test_other_shape_bf16_loads_without_code_changes),
	    T(test_missing_files_are_not_found),
	    T(test_corrupt_config_is_corrupt),
	    T(test_short_and_bad_headers_are_corrupt),
	    T(test_bad_tensor_entries_are_corrupt),
	    T(test_truncated_file_is_corrupt),
	    T(test_shape_mismatch_with_config_is_corrupt),
	    T(test_nan_weight_is_corrupt),
	    T(test_integer_dtype_for_a_weight_is_unsupported),
	    T(test_several_weight_files_prefer_model_safetensors),
#undef T
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
