/*
 * A BERT-family sentence encoder: the model as loaded from a
 * sentence-transformers style directory, the WordPiece tokenizer, and the
 * backends that run the forward pass (CPU always; CUDA when built with it and
 * a GPU is present).
 *
 * Every backend computes the same function: token ids -> embeddings ->
 * L x (self-attention, add & LayerNorm, GELU feed-forward, add & LayerNorm)
 * -> mean over the real tokens ([CLS] and [SEP] included) -> L2 normalised.
 *
 * Errors are the codes of common/error.h with a message in err.
 */
#ifndef SH_BERT_H
#define SH_BERT_H

#include <stddef.h>
#include <stdint.h>

/* Tokens per text, [CLS] and [SEP] included (sentence-transformers' limit). */
#define SH_BERT_MAX_TOKENS 256

struct sh_bert_config {
	int vocab_size;
	int hidden;	     /* e.g. 384 */
	int layers;	     /* e.g. 6 */
	int heads;	     /* hidden % heads == 0 */
	int intermediate;    /* feed-forward width, e.g. 1536 */
	int max_positions;   /* e.g. 512 */
	int type_vocab_size; /* token type ids are always 0 */
	float eps;	     /* LayerNorm epsilon */
};

/* One encoder layer. Weights are row-major [out, in] (as nn.Linear stores
 * them), float32 on the host whatever the file held. */
struct sh_bert_layer {
	const float *q_w, *q_b, *k_w, *k_b, *v_w, *v_b; /* [hidden, hidden] */
	const float *ao_w, *ao_b;			/* attention output */
	const float *ln1_g, *ln1_b;			/* after attention */
	const float *ff1_w, *ff1_b; /* [intermediate, hidden] */
	const float *ff2_w, *ff2_b; /* [hidden, intermediate] */
	const float *ln2_g, *ln2_b; /* after feed-forward */
};

struct sh_bert_model {
	struct sh_bert_config cfg;
	char name[64]; /* directory's last component, for logs and metrics */
	const float *word_emb; /* [vocab_size, hidden] */
	const float *pos_emb;  /* [max_positions, hidden] */
	const float *type_emb; /* [type_vocab_size, hidden] */
	const float *emb_ln_g, *emb_ln_b;
	struct sh_bert_layer *layer; /* cfg.layers of them */
	void *priv;		     /* storage owned by the model */
};

/* Loads config.json and the one *.safetensors file (F32 or F16) of dir.
 * A missing or corrupt file is an error naming the file. */
int sh_bert_load(const char *dir, struct sh_bert_model **out, char *err,
		 size_t errlen);
void sh_bert_free(struct sh_bert_model *m);

/* ---- tokenizer ------------------------------------------------------------
 */

struct sh_wordpiece;

/* Reads the WordPiece vocabulary from dir/tokenizer.json (model.vocab) or,
 * when there is none, dir/vocab.txt. */
int sh_wordpiece_load(const char *dir, struct sh_wordpiece **out, char *err,
		      size_t errlen);
void sh_wordpiece_free(struct sh_wordpiece *t);

/* BERT uncased basic tokenization + greedy longest-match WordPiece of
 * text[0..len), as ids [CLS] ... [SEP], truncated so that at most
 * max_tokens (>= 2) ids are written to ids. *n gets the count. Invalid
 * UTF-8 is SH_EINVAL. Any thread (the tokenizer is read-only).
 * The rules are Hugging Face's (docs/embed.md): a literal "[SEP]" etc. in
 * the text is that special token. */
int sh_wordpiece_encode(const struct sh_wordpiece *t, const char *text,
			size_t len, int32_t *ids, int max_tokens, int *n,
			char *err, size_t errlen);

/* ---- backends -------------------------------------------------------------
 */

/* A padded batch: n rows of seq ids each (row-major), row i has len[i] real
 * tokens (1 <= len[i] <= seq <= max_seq); ids past len[i] are ignored. */
struct sh_bert_batch {
	int n;
	int seq;
	const int32_t *ids;
	const int *len;
};

struct sh_bert_backend_ops {
	const char *name; /* "cpu", "cuda" */
	/* Allocates everything a forward pass needs for up to max_batch rows
	 * of up to max_seq tokens, once; the model must outlive the context. */
	int (*create)(const struct sh_bert_model *m, int max_batch, int max_seq,
		      void **ctx, char *err, size_t errlen);
	/* out: n x hidden floats, each row L2-normalised. One thread at a
	 * time per context. */
	int (*forward)(void *ctx, const struct sh_bert_batch *b, float *out,
		       char *err, size_t errlen);
	void (*destroy)(void *ctx);
};

/* The CPU backend (cpu.c; docs/embed.md). create() starts one worker
 * thread per online CPU beyond the caller's (SHOAL_EMBED_THREADS overrides)
 * and sets OpenBLAS to one thread, process-wide: the backend splits a batch
 * over its own workers instead. forward() runs on the calling thread plus
 * those workers and returns when the batch is done. Knobs for tuning and
 * tests, read at create: SHOAL_EMBED_KERNELS=generic|avx2|avx512,
 * SHOAL_EMBED_SMALL_ROWS (rows up to which the few-rows kernels replace
 * sgemm, default 32). */
extern const struct sh_bert_backend_ops sh_bert_cpu;

/* OpenBLAS picks its kernels from the CPU's model when it loads; a virtual
 * machine that hides the model (e.g. "Intel(R) Xeon(R) Processor") gets
 * the generic Prescott ones, about 4x slower for the model's sgemm. When
 * OpenBLAS is on Prescott but the CPU has AVX-512 or AVX2+FMA, this names
 * the core type those features allow ("SkylakeX", "Haswell"), for
 * OPENBLAS_CORETYPE before a restart of the process; NULL otherwise. */
const char *sh_bert_cpu_blas_coretype(void);
/* The core type OpenBLAS runs on now (for the log). */
const char *sh_bert_cpu_blas_kernels(void);

/* The CUDA backend, when this build has it (HAVE_CUDA in shoal_config.h).
 * sh_bert_cuda_available() is 0 when no usable GPU is present at run time;
 * the backend must then not be used. */
extern const struct sh_bert_backend_ops sh_bert_cuda;
int sh_bert_cuda_available(void);

#endif
