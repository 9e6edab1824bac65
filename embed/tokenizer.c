/*
 * BERT tokenization: the basic tokenizer (clean, split CJK, lowercase, strip
 * accents, split on whitespace and punctuation) followed by greedy
 * longest-match WordPiece, the way Hugging Face's BertNormalizer,
 * BertPreTokenizer and WordPiece model do it.
 *
 * One pass over the text, no allocation: each code point is validated,
 * cleaned, decomposed (NFD) and lowercased by libutf8proc, appended to the
 * current word, and each finished word goes through WordPiece straight into
 * the output ids, so a long text stops being read once max_tokens is
 * reached.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <utf8proc.h>
#include <xxhash.h>

#include "bert.h"
#include "error.h"

/* Hugging Face's default max_input_chars_per_word: a longer word is [UNK]. */
#define WP_MAX_WORD_CHARS 100
#define WP_MAX_VOCAB (1 << 22)
#define WP_MAX_TOKEN_BYTES 256
#define WP_MAX_FILE (64u << 20)
/* Added tokens matched in the raw text ([CLS], [SEP], [MASK]...). */
#define WP_MAX_SPECIAL 32
#define WP_MAX_SPECIAL_LEN 32

struct wp_slot {
	uint32_t off; /* into pool; UINT32_MAX: empty */
	uint16_t len;
	int32_t id;
};

struct sh_wordpiece {
	struct wp_slot *slot; /* open addressing, linear probing */
	uint32_t mask;
	char *pool; /* every token's bytes, back to back */
	size_t pool_len, pool_cap;
	int32_t cls, sep, unk;
	char prefix[16]; /* continuing_subword_prefix, "##" */
	size_t prefix_len;
	int max_word_chars;
	int lowercase, strip_accents;
	/* Added tokens that are matched in the raw text, before any
	 * normalisation, and become their own id: tokenizer.json's
	 * added_tokens with "normalized": false, or for vocab.txt the five
	 * BERT special tokens. first[] marks their first bytes. */
	struct {
		char s[WP_MAX_SPECIAL_LEN];
		size_t len;
		int32_t id;
	} special[WP_MAX_SPECIAL];
	int nspecial;
	uint8_t first[256];
};

/* ---- vocabulary -----------------------------------------------------------
 */

static int32_t wp_lookup(const struct sh_wordpiece *t, const char *s,
			 size_t len)
{
	uint32_t i = (uint32_t)XXH3_64bits(s, len) & t->mask;
	for (;;) {
		const struct wp_slot *e = &t->slot[i];
		if (e->off == UINT32_MAX)
			return -1;
		if (e->len == len && !memcmp(t->pool + e->off, s, len))
			return e->id;
		i = (i + 1) & t->mask;
	}
}

/* Adds one token; a duplicate keeps its first id. */
static int wp_add(struct sh_wordpiece *t, const char *s, size_t len, int32_t id)
{
	if (len == 0 || len > WP_MAX_TOKEN_BYTES)
		return SH_ECORRUPT;
	if (wp_lookup(t, s, len) >= 0)
		return SH_OK;
	if (t->pool_len + len > t->pool_cap) {
		size_t cap = t->pool_cap ? t->pool_cap * 2 : 1 << 16;
		while (cap < t->pool_len + len)
			cap *= 2;
		if (cap > UINT32_MAX - 1)
			return SH_ENOMEM;
		char *p = realloc(t->pool, cap);
		if (!p)
			return SH_ENOMEM;
		t->pool = p;
		t->pool_cap = cap;
	}
	memcpy(t->pool + t->pool_len, s, len);
	uint32_t i = (uint32_t)XXH3_64bits(s, len) & t->mask;
	while (t->slot[i].off != UINT32_MAX)
		i = (i + 1) & t->mask;
	t->slot[i].off = (uint32_t)t->pool_len;
	t->slot[i].len = (uint16_t)len;
	t->slot[i].id = id;
	t->pool_len += len;
	return SH_OK;
}

static void wp_add_special(struct sh_wordpiece *t, const char *s, int32_t id)
{
	size_t len = strlen(s);
	if (len == 0 || len >= WP_MAX_SPECIAL_LEN ||
	    t->nspecial == WP_MAX_SPECIAL)
		return;
	memcpy(t->special[t->nspecial].s, s, len + 1);
	t->special[t->nspecial].len = len;
	t->special[t->nspecial].id = id;
	t->nspecial++;
	t->first[(uint8_t)s[0]] = 1;
}

static int wp_alloc(struct sh_wordpiece **out, size_t n)
{
	struct sh_wordpiece *t = calloc(1, sizeof(*t));
	if (!t)
		return SH_ENOMEM;
	size_t cap = 1024;
	while (cap < 2 * n)
		cap *= 2;
	t->slot = malloc(cap * sizeof(*t->slot));
	if (!t->slot) {
		free(t);
		return SH_ENOMEM;
	}
	for (size_t i = 0; i < cap; i++)
		t->slot[i].off = UINT32_MAX;
	t->mask = (uint32_t)(cap - 1);
	memcpy(t->prefix, "##", 3);
	t->prefix_len = 2;
	t->max_word_chars = WP_MAX_WORD_CHARS;
	t->lowercase = 1;
	t->strip_accents = 1;
	*out = t;
	return SH_OK;
}

void sh_wordpiece_free(struct sh_wordpiece *t)
{
	if (!t)
		return;
	free(t->slot);
	free(t->pool);
	free(t);
}

static int read_file(const char *path, char **out, size_t *len, char *err,
		     size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return sh_errf(err, errlen,
			       errno == ENOENT ? SH_ENOTFOUND : SH_EIO,
			       "%s: %s", path, strerror(errno));
	size_t cap = 1 << 20, n = 0;
	char *buf = malloc(cap + 1);
	while (buf) {
		size_t r = fread(buf + n, 1, cap - n, f);
		n += r;
		if (n < cap)
			break;
		if (cap >= WP_MAX_FILE) {
			free(buf);
			fclose(f);
			return sh_errf(err, errlen, SH_ETOOBIG,
				       "%s: larger than %u bytes", path,
				       WP_MAX_FILE);
		}
		cap *= 2;
		char *nb = realloc(buf, cap + 1);
		if (!nb)
			free(buf);
		buf = nb;
	}
	int bad = ferror(f);
	fclose(f);
	if (!buf)
		return sh_errf(err, errlen, SH_ENOMEM, "%s: out of memory",
			       path);
	if (bad) {
		free(buf);
		return sh_errf(err, errlen, SH_EIO, "%s: read error", path);
	}
	buf[n] = '\0';
	*out = buf;
	*len = n;
	return SH_OK;
}

/* tokenizer.json: model.vocab {token: id}, with the WordPiece and
 * normalizer settings when present. */
static int load_json(const char *path, const char *text, size_t len,
		     struct sh_wordpiece **out, char *err, size_t errlen)
{
	int rc;
	struct sh_wordpiece *t = NULL;
	cJSON *root = cJSON_ParseWithLength(text, len);
	const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
	const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
	if (!cJSON_IsObject(vocab)) {
		rc = sh_errf(err, errlen, SH_ECORRUPT,
			     "%s: no model.vocab object", path);
		goto out;
	}
	const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
	if (cJSON_IsString(type) && strcmp(type->valuestring, "WordPiece")) {
		rc = sh_errf(err, errlen, SH_EUNSUPPORTED,
			     "%s: model.type is \"%s\", not WordPiece", path,
			     type->valuestring);
		goto out;
	}
	int n = cJSON_GetArraySize(vocab);
	if (n < 3 || n > WP_MAX_VOCAB) {
		rc = sh_errf(err, errlen, SH_ECORRUPT,
			     "%s: %d vocabulary entries", path, n);
		goto out;
	}
	if (wp_alloc(&t, (size_t)n)) {
		rc = sh_errf(err, errlen, SH_ENOMEM, "%s: out of memory", path);
		goto out;
	}
	const cJSON *e;
	cJSON_ArrayForEach(e, vocab)
	{
		if (!cJSON_IsNumber(e) || e->valuedouble < 0 ||
		    e->valuedouble >= WP_MAX_VOCAB || !e->string) {
			rc = sh_errf(err, errlen, SH_ECORRUPT,
				     "%s: bad vocabulary entry", path);
			goto out;
		}
		rc = wp_add(t, e->string, strlen(e->string),
			    (int32_t)e->valuedouble);
		if (rc) {
			rc = sh_errf(err, errlen, rc,
				     "%s: vocabulary entry \"%.40s\": %s", path,
				     e->string, sh_strerror(rc));
			goto out;
		}
	}
	const cJSON *pre = cJSON_GetObjectItemCaseSensitive(
	    model, "continuing_subword_prefix");
	if (cJSON_IsString(pre)) {
		size_t pl = strlen(pre->valuestring);
		if (pl >= sizeof(t->prefix)) {
			rc = sh_errf(err, errlen, SH_ECORRUPT,
				     "%s: continuing_subword_prefix too long",
				     path);
			goto out;
		}
		memcpy(t->prefix, pre->valuestring, pl + 1);
		t->prefix_len = pl;
	}
	const cJSON *mx =
	    cJSON_GetObjectItemCaseSensitive(model, "max_input_chars_per_word");
	if (cJSON_IsNumber(mx) && mx->valuedouble >= 1 &&
	    mx->valuedouble <= WP_MAX_WORD_CHARS)
		t->max_word_chars = (int)mx->valuedouble;
	const cJSON *added =
	    cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
	const cJSON *a;
	cJSON_ArrayForEach(a, added)
	{
		const cJSON *content =
		    cJSON_GetObjectItemCaseSensitive(a, "content");
		const cJSON *aid = cJSON_GetObjectItemCaseSensitive(a, "id");
		const cJSON *nz =
		    cJSON_GetObjectItemCaseSensitive(a, "normalized");
		if (cJSON_IsString(content) && cJSON_IsNumber(aid) &&
		    aid->valuedouble >= 0 && aid->valuedouble < WP_MAX_VOCAB &&
		    cJSON_IsFalse(nz))
			wp_add_special(t, content->valuestring,
				       (int32_t)aid->valuedouble);
	}
	const cJSON *norm =
	    cJSON_GetObjectItemCaseSensitive(root, "normalizer");
	const cJSON *lc = cJSON_GetObjectItemCaseSensitive(norm, "lowercase");
	const cJSON *sa =
	    cJSON_GetObjectItemCaseSensitive(norm, "strip_accents");
	if (cJSON_IsBool(lc))
		t->lowercase = cJSON_IsTrue(lc);
	/* strip_accents null means "as lowercase" (BertNormalizer) */
	t->strip_accents = cJSON_IsBool(sa) ? cJSON_IsTrue(sa) : t->lowercase;
	*out = t;
	t = NULL;
	rc = SH_OK;
out:
	sh_wordpiece_free(t);
	cJSON_Delete(root);
	return rc;
}

/* vocab.txt: one token per line, id = line number (from 0). */
static int load_txt(const char *path, const char *text, size_t len,
		    struct sh_wordpiece **out, char *err, size_t errlen)
{
	size_t lines = 0;
	for (size_t i = 0; i < len; i++)
		lines += text[i] == '\n';
	if (lines > WP_MAX_VOCAB)
		return sh_errf(err, errlen, SH_ECORRUPT,
			       "%s: %zu lines, too many", path, lines);
	struct sh_wordpiece *t;
	if (wp_alloc(&t, lines + 1))
		return sh_errf(err, errlen, SH_ENOMEM, "%s: out of memory",
			       path);
	int32_t id = 0;
	const char *p = text, *end = text + len;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		size_t l = (size_t)(le - p);
		if (l && p[l - 1] == '\r')
			l--;
		if (l) {
			int rc = wp_add(t, p, l, id);
			if (rc) {
				sh_wordpiece_free(t);
				return sh_errf(err, errlen, rc,
					       "%s: line %d: %s", path,
					       (int)id + 1, sh_strerror(rc));
			}
		}
		id++;
		p = nl ? nl + 1 : end;
	}
	static const char *const bert_special[] = {"[PAD]", "[UNK]", "[CLS]",
						   "[SEP]", "[MASK]"};
	for (size_t i = 0; i < sizeof(bert_special) / sizeof(bert_special[0]);
	     i++) {
		int32_t sid =
		    wp_lookup(t, bert_special[i], strlen(bert_special[i]));
		if (sid >= 0)
			wp_add_special(t, bert_special[i], sid);
	}
	*out = t;
	return SH_OK;
}

int sh_wordpiece_load(const char *dir, struct sh_wordpiece **out, char *err,
		      size_t errlen)
{
	char path[PATH_MAX];
	char *text = NULL;
	size_t len = 0;
	int rc, json = 1;

	*out = NULL;
	if ((size_t)snprintf(path, sizeof(path), "%s/tokenizer.json", dir) >=
	    sizeof(path))
		return sh_errf(err, errlen, SH_EINVAL, "%s: path too long",
			       dir);
	rc = read_file(path, &text, &len, err, errlen);
	if (rc == SH_ENOTFOUND) {
		json = 0;
		snprintf(path, sizeof(path), "%s/vocab.txt", dir);
		rc = read_file(path, &text, &len, err, errlen);
		if (rc == SH_ENOTFOUND)
			rc = sh_errf(err, errlen, SH_ENOTFOUND,
				     "%s: neither tokenizer.json nor "
				     "vocab.txt",
				     dir);
	}
	if (rc)
		return rc;
	struct sh_wordpiece *t = NULL;
	rc = json ? load_json(path, text, len, &t, err, errlen)
		  : load_txt(path, text, len, &t, err, errlen);
	free(text);
	if (rc)
		return rc;
	t->cls = wp_lookup(t, "[CLS]", 5);
	t->sep = wp_lookup(t, "[SEP]", 5);
	t->unk = wp_lookup(t, "[UNK]", 5);
	if (t->cls < 0 || t->sep < 0 || t->unk < 0) {
		sh_wordpiece_free(t);
		return sh_errf(err, errlen, SH_ECORRUPT,
			       "%s: vocabulary lacks [CLS], [SEP] or [UNK]",
			       path);
	}
	*out = t;
	return SH_OK;
}

/* ---- basic tokenizer ------------------------------------------------------
 */

/* Cc, Cf, Co (Cs cannot occur in valid UTF-8). Unassigned code points (Cn)
 * are kept, as Hugging Face's tokenizer keeps them (they end up [UNK]),
 * unlike the original Python BERT. */
static int is_control(utf8proc_int32_t c, int cat)
{
	if (c == '\t' || c == '\n' || c == '\r')
		return 0;
	return cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_CF ||
	       cat == UTF8PROC_CATEGORY_CS || cat == UTF8PROC_CATEGORY_CO;
}

static int is_space(utf8proc_int32_t c, int cat)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' ||
	       cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL ||
	       cat == UTF8PROC_CATEGORY_ZP;
}

/* The "Chinese character" blocks of BERT: CJK Unified Ideographs and their
 * extensions A-E, and the compatibility ideographs. The range after
 * extension D starts at U+2B920, not U+2B820 where extension E does: that
 * is what Hugging Face's tokenizer (which made the reference vectors)
 * checks, where the original Python BERT has U+2B820. */
static int is_cjk(utf8proc_int32_t c)
{
	return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
	       (c >= 0x20000 && c <= 0x2A6DF) ||
	       (c >= 0x2A700 && c <= 0x2B73F) ||
	       (c >= 0x2B740 && c <= 0x2B81F) ||
	       (c >= 0x2B920 && c <= 0x2CEAF) || (c >= 0xF900 && c <= 0xFAFF) ||
	       (c >= 0x2F800 && c <= 0x2FA1F);
}

/* ASCII symbols count as punctuation ("$", "^", "`"...), as in BERT. */
static int is_punct(utf8proc_int32_t c, int cat)
{
	if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) ||
	    (c >= 91 && c <= 96) || (c >= 123 && c <= 126))
		return 1;
	return cat >= UTF8PROC_CATEGORY_PC && cat <= UTF8PROC_CATEGORY_PO;
}

/* The state of one encode call. */
struct enc {
	const struct sh_wordpiece *t;
	int32_t *ids;
	int n, max; /* max: room for word pieces ([SEP] excluded) */
	/* the current word, after room for the continuation prefix */
	char buf[16 + 4 * (WP_MAX_WORD_CHARS + 1)];
	size_t len; /* bytes of the word in buf + 16 */
	int chars;  /* code points, may exceed what buf keeps */
	short start[WP_MAX_WORD_CHARS + 2]; /* byte offset of each char */
};

#define ENC_WORD 16 /* the word starts at buf + ENC_WORD */

/* Greedy longest-match WordPiece of the current word; a word with a part
 * that matches nothing is one [UNK]. Pieces past max are dropped
 * (truncation), after the whole word was matched. */
static void enc_word(struct enc *e)
{
	const struct sh_wordpiece *t = e->t;
	int chars = e->chars;

	e->start[chars < WP_MAX_WORD_CHARS + 1 ? chars
					       : WP_MAX_WORD_CHARS + 1] =
	    (short)e->len;
	e->len = 0;
	e->chars = 0;
	if (chars == 0 || e->n >= e->max)
		return;
	if (chars > t->max_word_chars) {
		e->ids[e->n++] = t->unk;
		return;
	}
	char *w = e->buf + ENC_WORD;
	int32_t piece[WP_MAX_WORD_CHARS];
	int np = 0;
	for (int s = 0; s < chars;) {
		int32_t id = -1;
		int end;
		for (end = chars; end > s; end--) {
			char *p = w + e->start[s];
			size_t l = (size_t)(e->start[end] - e->start[s]);
			if (s > 0) {
				/* the prefix goes just before the piece; the
				 * bytes it overwrites are already consumed */
				p -= t->prefix_len;
				memcpy(p, t->prefix, t->prefix_len);
				l += t->prefix_len;
			}
			id = wp_lookup(t, p, l);
			if (id >= 0)
				break;
		}
		if (id < 0) {
			piece[0] = t->unk;
			np = 1;
			break;
		}
		piece[np++] = id;
		s = end;
	}
	for (int i = 0; i < np && e->n < e->max; i++)
		e->ids[e->n++] = piece[i];
}

static void enc_char(struct enc *e, utf8proc_int32_t c)
{
	if (e->chars < WP_MAX_WORD_CHARS + 1) {
		e->start[e->chars] = (short)e->len;
		e->len += (size_t)utf8proc_encode_char(
		    c, (utf8proc_uint8_t *)e->buf + ENC_WORD + e->len);
	}
	e->chars++;
}

/* The longest added token at p (left bytes), or -1. */
static int match_special(const struct sh_wordpiece *t, const uint8_t *p,
			 size_t left, size_t *len)
{
	int best = -1;
	size_t bl = 0;
	if (!t->first[p[0]])
		return -1;
	for (int i = 0; i < t->nspecial; i++) {
		size_t l = t->special[i].len;
		if (l <= left && l > bl && !memcmp(p, t->special[i].s, l)) {
			best = i;
			bl = l;
		}
	}
	*len = bl;
	return best;
}

int sh_wordpiece_encode(const struct sh_wordpiece *t, const char *text,
			size_t len, int32_t *ids, int max_tokens, int *n,
			char *err, size_t errlen)
{
	if (max_tokens < 2)
		return sh_errf(err, errlen, SH_EINVAL,
			       "max_tokens %d: room for [CLS] and [SEP] "
			       "needed",
			       max_tokens);
	if (len > (size_t)INT32_MAX)
		return sh_errf(err, errlen, SH_ETOOBIG, "text of %zu bytes",
			       len);
	struct enc e = {.t = t, .ids = ids, .max = max_tokens - 1};
	const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)text;
	utf8proc_ssize_t left = (utf8proc_ssize_t)len;

	e.ids[e.n++] = t->cls;
	while (left > 0 && e.n < e.max) {
		size_t sl;
		int sp = match_special(t, p, (size_t)left, &sl);
		if (sp >= 0) {
			/* an added token: a word boundary and its own id */
			enc_word(&e);
			if (e.n < e.max)
				e.ids[e.n++] = t->special[sp].id;
			p += sl;
			left -= (utf8proc_ssize_t)sl;
			continue;
		}
		utf8proc_int32_t c;
		utf8proc_ssize_t r = utf8proc_iterate(p, left, &c);
		if (r < 0 || c < 0)
			return sh_errf(err, errlen, SH_EINVAL,
				       "invalid UTF-8 at byte %zu",
				       (size_t)((const char *)p - text));
		p += r;
		left -= r;
		int cat = (int)utf8proc_category(c);
		if (c == 0 || c == 0xFFFD || is_control(c, cat))
			continue;
		if (is_space(c, cat)) {
			enc_word(&e);
			continue;
		}
		if (is_cjk(c)) {
			/* NFD still applies: a compatibility ideograph is
			 * its unified twin */
			utf8proc_int32_t u[4], last = 0;
			if (!t->strip_accents ||
			    utf8proc_decompose_char(c, u, 4, UTF8PROC_DECOMPOSE,
						    &last) != 1)
				u[0] = c;
			enc_word(&e);
			enc_char(&e, u[0]);
			enc_word(&e);
			continue;
		}
		utf8proc_int32_t d[8];
		int nd = 1;
		d[0] = c;
		if (t->strip_accents) {
			utf8proc_int32_t last = 0;
			utf8proc_ssize_t k = utf8proc_decompose_char(
			    c, d, 8, UTF8PROC_DECOMPOSE, &last);
			if (k < 1 || k > 8) {
				d[0] = c;
				k = 1;
			}
			nd = (int)k;
		}
		for (int i = 0; i < nd; i++) {
			utf8proc_int32_t x = d[i];
			int xc = nd > 1 ? (int)utf8proc_category(x) : cat;
			if (t->strip_accents && xc == UTF8PROC_CATEGORY_MN)
				continue;
			if (t->lowercase)
				x = utf8proc_tolower(x);
			if (is_punct(x, xc)) {
				enc_word(&e);
				enc_char(&e, x);
				enc_word(&e);
			} else {
				enc_char(&e, x);
			}
		}
	}
	enc_word(&e);
	/* the loop may stop before the end of the text: still reject invalid
	 * UTF-8 there, so the answer does not depend on max_tokens */
	while (left > 0) {
		utf8proc_int32_t c;
		utf8proc_ssize_t r = utf8proc_iterate(p, left, &c);
		if (r < 0 || c < 0)
			return sh_errf(err, errlen, SH_EINVAL,
				       "invalid UTF-8 at byte %zu",
				       (size_t)((const char *)p - text));
		p += r;
		left -= r;
	}
	e.ids[e.n++] = t->sep;
	*n = e.n;
	return SH_OK;
}
