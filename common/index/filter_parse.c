/*
 * The text form of a filter (grammar in filter.h): a tokenizer with one
 * token of lookahead and a recursive-descent parser that builds an sh_filter
 * directly.
 *
 * Each parse function returns a filter for its sub-expression (the caller's)
 * or NULL after recording the first error. Operands are flattened where that
 * keeps the meaning, so "a and b and c" is one node with three musts rather
 * than a chain of nested filters, and parentheses cost no depth unless the
 * lists must stay apart ("(a or b) and (c or d)" needs two nested shoulds).
 */
#include "filter.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* Parenthesis / not nesting the parser follows before giving up: bounds its
 * recursion well before the stack could be at risk. */
#define PARSE_MAX_NEST (SH_FILTER_MAX_DEPTH * 4)

typedef enum tok_type {
	T_EOF,
	T_LPAREN,
	T_RPAREN,
	T_LBRACK,
	T_RBRACK,
	T_COMMA,
	T_EQ,
	T_NE,
	T_LT,
	T_LE,
	T_GT,
	T_GE,
	T_IDENT,
	T_STRING,
	T_INT,
	T_FLOAT,
	T_TRUE,
	T_FALSE,
	T_AND,
	T_OR,
	T_NOT,
	T_IN,
	T_EXISTS,
	T_HAS_ID,
} tok_type;

typedef struct tok {
	tok_type type;
	size_t pos; /* byte offset in the text */
	size_t len; /* bytes of text */
	char *str;  /* T_IDENT, T_STRING: owned, NUL-terminated */
	int64_t i;  /* T_INT */
	double d;   /* T_FLOAT (and T_INT as a double) */
} tok;

typedef struct parser {
	const char *s;
	size_t n;
	size_t pos; /* next byte to lex */
	tok cur;    /* lookahead */
	int rc;	    /* first error, SH_OK while none */
	int nest;
	char *err;
	size_t errlen;
} parser;

static void perr(parser *p, size_t pos, const char *fmt, ...)
{
	if (p->rc != SH_OK)
		return;
	p->rc = SH_EINVAL;
	if (!p->err || p->errlen == 0)
		return;
	int k = snprintf(p->err, p->errlen, "at offset %zu: ", pos);
	if (k < 0 || (size_t)k >= p->errlen)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(p->err + k, p->errlen - (size_t)k, fmt, ap);
	va_end(ap);
}

static void nomem(parser *p)
{
	if (p->rc == SH_OK) {
		p->rc = SH_ENOMEM;
		if (p->err && p->errlen)
			snprintf(p->err, p->errlen, "out of memory");
	}
}

static const char *tok_name(tok_type t)
{
	static const char *const names[] = {
	    "end of input", "'('",  "')'",     "'['",	   "']'",
	    "','",	    "'='",  "'!='",    "'<'",	   "'<='",
	    "'>'",	    "'>='", "a field", "a string", "an integer",
	    "a number",	    "true", "false",   "and",	   "or",
	    "not",	    "in",   "exists",  "has_id",
	};
	return names[t];
}

/* ---- Tokenizer ----------------------------------------------------------- */

static bool is_ident_start(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_ident_char(char c)
{
	return is_ident_start(c) || (c >= '0' && c <= '9');
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Appends one code point as UTF-8 to buf (room for 4 more bytes). */
static size_t put_utf8(char *buf, uint32_t cp)
{
	if (cp < 0x80) {
		buf[0] = (char)cp;
		return 1;
	} else if (cp < 0x800) {
		buf[0] = (char)(0xc0 | (cp >> 6));
		buf[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	} else if (cp < 0x10000) {
		buf[0] = (char)(0xe0 | (cp >> 12));
		buf[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		buf[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	buf[0] = (char)(0xf0 | (cp >> 18));
	buf[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	buf[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	buf[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

static bool read_hex4(parser *p, size_t at, uint32_t *out)
{
	uint32_t v = 0;
	if (at + 4 > p->n)
		return false;
	for (size_t k = 0; k < 4; k++) {
		int h = hexval(p->s[at + k]);
		if (h < 0)
			return false;
		v = (v << 4) | (uint32_t)h;
	}
	*out = v;
	return true;
}

/* Lexes a string literal starting at the opening quote. The decoded form is
 * never longer than the source, so one buffer of the source's size holds
 * it. UTF-8 validity of the bytes is checked later (sh_filter_validate). */
static void lex_string(parser *p, tok *t)
{
	size_t i = p->pos + 1;
	char *buf = malloc(p->n - p->pos + 1);
	size_t o = 0;
	if (!buf) {
		nomem(p);
		return;
	}
	for (;;) {
		if (i >= p->n) {
			perr(p, t->pos, "unterminated string");
			goto fail;
		}
		unsigned char c = (unsigned char)p->s[i];
		if (c == '"') {
			i++;
			break;
		}
		if (c < 0x20) {
			perr(p, i, "control character in string");
			goto fail;
		}
		if (c != '\\') {
			buf[o++] = (char)c;
			i++;
			continue;
		}
		if (i + 1 >= p->n) {
			perr(p, t->pos, "unterminated string");
			goto fail;
		}
		char e = p->s[i + 1];
		i += 2;
		switch (e) {
		case '"':
		case '\\':
		case '/':
			buf[o++] = e;
			break;
		case 'n':
			buf[o++] = '\n';
			break;
		case 't':
			buf[o++] = '\t';
			break;
		case 'r':
			buf[o++] = '\r';
			break;
		case 'u': {
			uint32_t cp, lo;
			if (!read_hex4(p, i, &cp)) {
				perr(p, i - 2, "bad \\u escape");
				goto fail;
			}
			i += 4;
			if (cp >= 0xdc00 && cp <= 0xdfff) {
				perr(p, i - 6, "lone low surrogate");
				goto fail;
			}
			if (cp >= 0xd800 && cp <= 0xdbff) {
				if (i + 6 > p->n || p->s[i] != '\\' ||
				    p->s[i + 1] != 'u' ||
				    !read_hex4(p, i + 2, &lo) || lo < 0xdc00 ||
				    lo > 0xdfff) {
					perr(p, i - 6, "unpaired surrogate");
					goto fail;
				}
				i += 6;
				cp = 0x10000 + ((cp - 0xd800) << 10) +
				     (lo - 0xdc00);
			}
			if (cp == 0) {
				perr(p, i - 6, "NUL in string");
				goto fail;
			}
			/* 6 or 12 source bytes become at most 4 */
			o += put_utf8(buf + o, cp);
			break;
		}
		default:
			perr(p, i - 2, "unknown escape \\%c", e);
			goto fail;
		}
	}
	buf[o] = '\0';
	/* Give back the rest of the worst-case buffer: a list of many
	 * strings must not hold the remaining text's size once per string. */
	char *shrunk = realloc(buf, o + 1);
	t->type = T_STRING;
	t->str = shrunk ? shrunk : buf;
	p->pos = i;
	return;
fail:
	free(buf);
}

static void lex_number(parser *p, tok *t)
{
	size_t i = p->pos;
	bool is_float = false;
	if (p->s[i] == '-')
		i++;
	if (i >= p->n || !is_digit(p->s[i])) {
		perr(p, t->pos, "bad number");
		return;
	}
	while (i < p->n && is_digit(p->s[i]))
		i++;
	if (i < p->n && p->s[i] == '.') {
		is_float = true;
		i++;
		if (i >= p->n || !is_digit(p->s[i])) {
			perr(p, t->pos,
			     "bad number: digits expected after '.'");
			return;
		}
		while (i < p->n && is_digit(p->s[i]))
			i++;
	}
	if (i < p->n && (p->s[i] == 'e' || p->s[i] == 'E')) {
		is_float = true;
		i++;
		if (i < p->n && (p->s[i] == '+' || p->s[i] == '-'))
			i++;
		if (i >= p->n || !is_digit(p->s[i])) {
			perr(p, t->pos,
			     "bad number: digits expected in exponent");
			return;
		}
		while (i < p->n && is_digit(p->s[i]))
			i++;
	}
	if (i < p->n && (is_ident_char(p->s[i]) || p->s[i] == '.')) {
		perr(p, t->pos, "bad number");
		return;
	}
	size_t len = i - p->pos;
	char small[64];
	char *copy = len < sizeof(small) ? small : malloc(len + 1);
	if (!copy) {
		nomem(p);
		return;
	}
	memcpy(copy, p->s + p->pos, len);
	copy[len] = '\0';
	errno = 0;
	if (is_float) {
		t->type = T_FLOAT;
		t->d = strtod(copy, NULL);
		if (!isfinite(t->d))
			perr(p, t->pos, "number out of range");
	} else {
		t->type = T_INT;
		long long v = strtoll(copy, NULL, 10);
		if (errno == ERANGE)
			perr(p, t->pos, "integer out of int64 range");
		t->i = v;
		t->d = (double)v;
	}
	if (copy != small)
		free(copy);
	p->pos = i;
}

static bool word_is(const char *s, size_t n, const char *w)
{
	size_t k = strlen(w);
	if (n != k)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c >= 'A' && c <= 'Z')
			c = (char)(c - 'A' + 'a');
		if (c != w[i])
			return false;
	}
	return true;
}

static void lex_word(parser *p, tok *t)
{
	static const struct {
		const char *w;
		tok_type t;
	} kw[] = {
	    {"and", T_AND},   {"or", T_OR},	    {"not", T_NOT},
	    {"in", T_IN},     {"exists", T_EXISTS}, {"has_id", T_HAS_ID},
	    {"true", T_TRUE}, {"false", T_FALSE},
	};
	size_t i = p->pos;
	bool dotted = false;
	for (;;) {
		while (i < p->n && is_ident_char(p->s[i]))
			i++;
		if (i + 1 < p->n && p->s[i] == '.' &&
		    is_ident_start(p->s[i + 1])) {
			dotted = true;
			i++;
			continue;
		}
		break;
	}
	if (i < p->n && p->s[i] == '.') {
		perr(p, i, "bad field path");
		return;
	}
	size_t len = i - p->pos;
	p->pos = i;
	if (!dotted) {
		for (size_t k = 0; k < sizeof(kw) / sizeof(kw[0]); k++) {
			if (word_is(p->s + t->pos, len, kw[k].w)) {
				t->type = kw[k].t;
				return;
			}
		}
	}
	t->str = malloc(len + 1);
	if (!t->str) {
		nomem(p);
		return;
	}
	memcpy(t->str, p->s + t->pos, len);
	t->str[len] = '\0';
	t->type = T_IDENT;
}

/* Lexes the next token into p->cur (freeing the previous one). On error
 * p->cur is T_EOF and p->rc is set. */
static void advance(parser *p)
{
	tok *t = &p->cur;
	free(t->str);
	memset(t, 0, sizeof(*t));
	t->type = T_EOF;
	if (p->rc != SH_OK)
		return;
	while (p->pos < p->n && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
				 p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
		p->pos++;
	t->pos = p->pos;
	if (p->pos >= p->n)
		return;
	char c = p->s[p->pos];
	char c1 = p->pos + 1 < p->n ? p->s[p->pos + 1] : '\0';
	size_t start = p->pos;
	switch (c) {
	case '(':
		t->type = T_LPAREN;
		p->pos++;
		break;
	case ')':
		t->type = T_RPAREN;
		p->pos++;
		break;
	case '[':
		t->type = T_LBRACK;
		p->pos++;
		break;
	case ']':
		t->type = T_RBRACK;
		p->pos++;
		break;
	case ',':
		t->type = T_COMMA;
		p->pos++;
		break;
	case '=':
		t->type = T_EQ;
		p->pos += c1 == '=' ? 2 : 1; /* "==" is accepted as "=" */
		break;
	case '!':
		if (c1 != '=') {
			perr(p, start,
			     "unexpected '!' (did you mean '!=' or "
			     "'not'?)");
			return;
		}
		t->type = T_NE;
		p->pos += 2;
		break;
	case '<':
		t->type = c1 == '=' ? T_LE : T_LT;
		p->pos += c1 == '=' ? 2 : 1;
		break;
	case '>':
		t->type = c1 == '=' ? T_GE : T_GT;
		p->pos += c1 == '=' ? 2 : 1;
		break;
	case '"':
		lex_string(p, t);
		break;
	default:
		if (c == '-' || is_digit(c))
			lex_number(p, t);
		else if (is_ident_start(c))
			lex_word(p, t);
		else if ((unsigned char)c >= 0x20 && (unsigned char)c < 0x7f)
			perr(p, start, "unexpected character '%c'", c);
		else
			perr(p, start, "unexpected byte 0x%02x",
			     (unsigned char)c);
	}
	t->len = p->pos - start;
	if (p->rc != SH_OK) {
		free(t->str);
		memset(t, 0, sizeof(*t));
		t->type = T_EOF;
	}
}

static bool expect(parser *p, tok_type tt, const char *what)
{
	if (p->rc != SH_OK)
		return false;
	if (p->cur.type != tt) {
		perr(p, p->cur.pos, "expected %s, got %s", what,
		     tok_name(p->cur.type));
		return false;
	}
	advance(p);
	return p->rc == SH_OK;
}

/* ---- Building helpers ---------------------------------------------------- */

/* Moves clause i of src's list socc to the end of dst's list docc. src's
 * slot is zeroed so freeing src later does not free what moved. */
static int move_cond(sh_filter *dst, sh_occur docc, sh_filter *src,
		     sh_occur socc, size_t i)
{
	if (dst->n[docc] == dst->cap[docc]) {
		size_t ncap = dst->cap[docc] ? dst->cap[docc] * 2 : 4;
		sh_cond *nc = realloc(dst->conds[docc], ncap * sizeof(*nc));
		if (!nc)
			return SH_ENOMEM;
		dst->conds[docc] = nc;
		dst->cap[docc] = ncap;
	}
	dst->conds[docc][dst->n[docc]++] = src->conds[socc][i];
	memset(&src->conds[socc][i], 0, sizeof(sh_cond));
	return SH_OK;
}

/* Moves every clause of list socc of src into list docc of dst. */
static int move_all(sh_filter *dst, sh_occur docc, sh_filter *src,
		    sh_occur socc)
{
	for (size_t i = 0; i < src->n[socc]; i++)
		if (move_cond(dst, docc, src, socc, i) != SH_OK)
			return SH_ENOMEM;
	return SH_OK;
}

static bool only(const sh_filter *f, sh_occur occ, size_t n)
{
	for (int o = 0; o < SH_OCCUR_COUNT; o++)
		if (f->n[o] != (o == (int)occ ? n : 0))
			return false;
	return true;
}

/* Adds operand x (consumed) to list occ of r, nesting it as a filter. */
static void add_nested(parser *p, sh_filter *r, sh_occur occ, sh_filter *x)
{
	int rc = sh_filter_add_nested(r, occ, x);
	if (rc != SH_OK) {
		sh_filter_free(x);
		nomem(p);
	}
}

/* r := r AND x (x consumed). */
static void and_into(parser *p, sh_filter *r, sh_filter *x)
{
	int rc = SH_OK;
	if (x->n[SH_SHOULD] == 0 || r->n[SH_SHOULD] == 0) {
		/* Merging lists is exact: a node passes when all its musts
		 * pass, none of its must_nots and one of its shoulds, and
		 * at most one side has shoulds. */
		for (int o = 0; o < SH_OCCUR_COUNT && rc == SH_OK; o++)
			rc = move_all(r, (sh_occur)o, x, (sh_occur)o);
		sh_filter_free(x);
		if (rc != SH_OK)
			nomem(p);
		return;
	}
	add_nested(p, r, SH_MUST, x);
}

/* r := r OR x (x consumed); r holds only shoulds. */
static void or_into(parser *p, sh_filter *r, sh_filter *x)
{
	int rc;
	if (only(x, SH_MUST, 1))
		rc = move_cond(r, SH_SHOULD, x, SH_MUST, 0);
	else if (x->n[SH_MUST] == 0 && x->n[SH_MUST_NOT] == 0 &&
		 x->n[SH_SHOULD] > 0)
		rc = move_all(r, SH_SHOULD, x, SH_SHOULD);
	else {
		add_nested(p, r, SH_SHOULD, x);
		return;
	}
	sh_filter_free(x);
	if (rc != SH_OK)
		nomem(p);
}

/* NOT x (x consumed). */
static sh_filter *negate(parser *p, sh_filter *x)
{
	sh_filter *r;
	if (sh_filter_new(&r) != SH_OK) {
		sh_filter_free(x);
		nomem(p);
		return NULL;
	}
	int rc;
	if (only(x, SH_MUST, 1))
		rc = move_cond(r, SH_MUST_NOT, x, SH_MUST, 0);
	else if (only(x, SH_MUST_NOT, 1))
		rc = move_cond(r, SH_MUST, x, SH_MUST_NOT, 0);
	else {
		add_nested(p, r, SH_MUST_NOT, x);
		goto out;
	}
	sh_filter_free(x);
	if (rc != SH_OK)
		nomem(p);
out:
	if (p->rc != SH_OK) {
		sh_filter_free(r);
		return NULL;
	}
	return r;
}

/* ---- Parser -------------------------------------------------------------- */

static sh_filter *parse_or(parser *p);

static bool is_literal(tok_type t)
{
	return t == T_STRING || t == T_INT || t == T_FLOAT || t == T_TRUE ||
	       t == T_FALSE;
}

/* key = literal, as a one-clause filter. */
static sh_filter *equality(parser *p, const char *key, const tok *lit)
{
	sh_filter *f;
	int rc;
	if (sh_filter_new(&f) != SH_OK) {
		nomem(p);
		return NULL;
	}
	switch (lit->type) {
	case T_STRING:
		rc = sh_filter_add_match_keyword(f, SH_MUST, key, lit->str);
		break;
	case T_INT:
		rc = sh_filter_add_match_integer(f, SH_MUST, key, lit->i);
		break;
	case T_TRUE:
	case T_FALSE:
		rc = sh_filter_add_match_bool(f, SH_MUST, key,
					      lit->type == T_TRUE);
		break;
	default: {
		sh_range r = {.has_gte = true,
			      .has_lte = true,
			      .gte = lit->d,
			      .lte = lit->d};
		rc = sh_filter_add_range(f, SH_MUST, key, &r);
	}
	}
	if (rc != SH_OK) {
		sh_filter_free(f);
		nomem(p);
		return NULL;
	}
	return f;
}

/* field [not] in [ literal, ... ]; the current token is '['. */
static sh_filter *parse_in(parser *p, const char *key)
{
	size_t cap = 0, n = 0;
	tok *lits = NULL;
	sh_filter *f = NULL;
	bool all_str = true, all_int = true;
	if (!expect(p, T_LBRACK, "'['"))
		return NULL;
	for (;;) {
		if (!is_literal(p->cur.type)) {
			perr(p, p->cur.pos, "expected a literal, got %s",
			     tok_name(p->cur.type));
			goto out;
		}
		if (n == SH_FILTER_MAX_SET) {
			perr(p, p->cur.pos, "more than %d values in a set",
			     SH_FILTER_MAX_SET);
			goto out;
		}
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 8;
			tok *nl = realloc(lits, ncap * sizeof(*nl));
			if (!nl) {
				nomem(p);
				goto out;
			}
			lits = nl;
			cap = ncap;
		}
		lits[n] = p->cur;
		p->cur.str = NULL; /* moved */
		all_str &= lits[n].type == T_STRING;
		all_int &= lits[n].type == T_INT;
		n++;
		advance(p);
		if (p->cur.type == T_COMMA) {
			advance(p);
			continue;
		}
		if (!expect(p, T_RBRACK, "',' or ']'"))
			goto out;
		break;
	}
	if (sh_filter_new(&f) != SH_OK) {
		nomem(p);
		goto out;
	}
	int rc = SH_OK;
	if (all_str) {
		const char **v = malloc(n * sizeof(*v));
		if (!v) {
			rc = SH_ENOMEM;
		} else {
			for (size_t i = 0; i < n; i++)
				v[i] = lits[i].str;
			rc = sh_filter_add_match_any_keyword(f, SH_MUST, key, v,
							     n);
			free(v);
		}
	} else if (all_int) {
		int64_t *v = malloc(n * sizeof(*v));
		if (!v) {
			rc = SH_ENOMEM;
		} else {
			for (size_t i = 0; i < n; i++)
				v[i] = lits[i].i;
			rc = sh_filter_add_match_any_integer(f, SH_MUST, key, v,
							     n);
			free(v);
		}
	} else {
		/* Mixed kinds, floats or bools: a should of equalities. */
		for (size_t i = 0; i < n && p->rc == SH_OK; i++) {
			sh_filter *e = equality(p, key, &lits[i]);
			if (e)
				or_into(p, f, e);
		}
	}
	if (rc != SH_OK)
		nomem(p);
out:
	for (size_t i = 0; i < n; i++)
		free(lits[i].str);
	free(lits);
	if (p->rc != SH_OK) {
		sh_filter_free(f);
		return NULL;
	}
	return f;
}

/* The part after a field name. */
static sh_filter *parse_comparison(parser *p, const char *key)
{
	tok_type op = p->cur.type;
	size_t oppos = p->cur.pos;
	switch (op) {
	case T_EQ:
	case T_NE: {
		advance(p);
		if (!is_literal(p->cur.type)) {
			perr(p, p->cur.pos,
			     "expected a literal after %s, got %s",
			     tok_name(op), tok_name(p->cur.type));
			return NULL;
		}
		sh_filter *f = equality(p, key, &p->cur);
		advance(p);
		if (f && p->rc != SH_OK) {
			sh_filter_free(f);
			return NULL;
		}
		return f && op == T_NE ? negate(p, f) : f;
	}
	case T_LT:
	case T_LE:
	case T_GT:
	case T_GE: {
		advance(p);
		if (p->cur.type != T_INT && p->cur.type != T_FLOAT) {
			perr(p, p->cur.pos,
			     "expected a number after %s, got %s", tok_name(op),
			     tok_name(p->cur.type));
			return NULL;
		}
		sh_range r = {0};
		double d = p->cur.d;
		advance(p);
		if (p->rc != SH_OK)
			return NULL;
		if (op == T_LT)
			r.has_lt = true, r.lt = d;
		else if (op == T_LE)
			r.has_lte = true, r.lte = d;
		else if (op == T_GT)
			r.has_gt = true, r.gt = d;
		else
			r.has_gte = true, r.gte = d;
		sh_filter *f;
		if (sh_filter_new(&f) != SH_OK) {
			nomem(p);
			return NULL;
		}
		if (sh_filter_add_range(f, SH_MUST, key, &r) != SH_OK) {
			sh_filter_free(f);
			nomem(p);
			return NULL;
		}
		return f;
	}
	case T_IN:
		advance(p);
		return parse_in(p, key);
	case T_NOT: {
		advance(p);
		if (!expect(p, T_IN, "'in' after 'not'"))
			return NULL;
		sh_filter *f = parse_in(p, key);
		return f ? negate(p, f) : NULL;
	}
	default: {
		/* A bare field: field = true. */
		tok t = {.type = T_TRUE, .pos = oppos};
		return equality(p, key, &t);
	}
	}
}

static sh_filter *parse_primary(parser *p)
{
	sh_filter *f = NULL;
	switch (p->cur.type) {
	case T_LPAREN:
		if (++p->nest > PARSE_MAX_NEST) {
			perr(p, p->cur.pos, "nested deeper than %d levels",
			     PARSE_MAX_NEST);
			return NULL;
		}
		advance(p);
		f = parse_or(p);
		p->nest--;
		if (f && !expect(p, T_RPAREN, "')'")) {
			sh_filter_free(f);
			return NULL;
		}
		return f;
	case T_EXISTS: {
		advance(p);
		if (!expect(p, T_LPAREN, "'(' after exists"))
			return NULL;
		if (p->cur.type != T_IDENT) {
			perr(p, p->cur.pos, "expected a field, got %s",
			     tok_name(p->cur.type));
			return NULL;
		}
		if (sh_filter_new(&f) != SH_OK ||
		    sh_filter_add_exists(f, SH_MUST, p->cur.str) != SH_OK) {
			sh_filter_free(f);
			nomem(p);
			return NULL;
		}
		advance(p);
		if (!expect(p, T_RPAREN, "')'")) {
			sh_filter_free(f);
			return NULL;
		}
		return f;
	}
	case T_HAS_ID: {
		sh_pid *ids = NULL;
		size_t n = 0;
		advance(p);
		if (!expect(p, T_LPAREN, "'(' after has_id"))
			return NULL;
		ids = malloc(SH_FILTER_MAX_SET * sizeof(*ids));
		if (!ids) {
			nomem(p);
			return NULL;
		}
		for (;;) {
			if (n == SH_FILTER_MAX_SET) {
				perr(p, p->cur.pos, "more than %d ids",
				     SH_FILTER_MAX_SET);
				break;
			}
			if (p->cur.type == T_INT && p->cur.i >= 0) {
				ids[n++] = sh_pid_u64((uint64_t)p->cur.i);
			} else if (p->cur.type == T_STRING) {
				if (sh_pid_str(p->cur.str, strlen(p->cur.str),
					       &ids[n]) != SH_OK) {
					perr(p, p->cur.pos,
					     "bad string id (1..%d bytes of "
					     "UTF-8)",
					     SH_PID_MAX_STR);
					break;
				}
				n++;
			} else {
				perr(p, p->cur.pos,
				     "expected an id (string or non-negative "
				     "integer), got %s",
				     tok_name(p->cur.type));
				break;
			}
			advance(p);
			if (p->cur.type == T_COMMA) {
				advance(p);
				continue;
			}
			expect(p, T_RPAREN, "',' or ')'");
			break;
		}
		if (p->rc == SH_OK &&
		    (sh_filter_new(&f) != SH_OK ||
		     sh_filter_add_has_id(f, SH_MUST, ids, n) != SH_OK))
			nomem(p);
		free(ids);
		if (p->rc != SH_OK) {
			sh_filter_free(f);
			return NULL;
		}
		return f;
	}
	case T_IDENT: {
		char *key = p->cur.str;
		p->cur.str = NULL; /* keep it past advance() */
		advance(p);
		f = p->rc == SH_OK ? parse_comparison(p, key) : NULL;
		free(key);
		return f;
	}
	default:
		perr(p, p->cur.pos, "expected a condition, got %s",
		     tok_name(p->cur.type));
		return NULL;
	}
}

static sh_filter *parse_unary(parser *p)
{
	if (p->cur.type != T_NOT)
		return parse_primary(p);
	if (++p->nest > PARSE_MAX_NEST) {
		perr(p, p->cur.pos, "nested deeper than %d levels",
		     PARSE_MAX_NEST);
		return NULL;
	}
	advance(p);
	sh_filter *x = parse_unary(p);
	p->nest--;
	return x ? negate(p, x) : NULL;
}

/* A chain "x OP y OP z" of sub-expressions joined into one filter by join
 * (and → must, or → should); a lone sub-expression is returned as is. */
static sh_filter *parse_chain(parser *p, tok_type op,
			      sh_filter *(*sub)(parser *),
			      void (*join)(parser *, sh_filter *, sh_filter *))
{
	sh_filter *x = sub(p);
	if (!x || p->cur.type != op)
		return x;
	sh_filter *r;
	if (sh_filter_new(&r) != SH_OK) {
		sh_filter_free(x);
		nomem(p);
		return NULL;
	}
	join(p, r, x);
	while (p->rc == SH_OK && p->cur.type == op) {
		advance(p);
		x = sub(p);
		if (x)
			join(p, r, x);
	}
	if (p->rc != SH_OK) {
		sh_filter_free(r);
		return NULL;
	}
	return r;
}

static sh_filter *parse_and(parser *p)
{
	return parse_chain(p, T_AND, parse_unary, and_into);
}

static sh_filter *parse_or(parser *p)
{
	return parse_chain(p, T_OR, parse_and, or_into);
}

int sh_filter_parse(const char *text, sh_filter **out, char *err, size_t errlen)
{
	parser p = {.err = err, .errlen = errlen, .rc = SH_OK};
	if (err && errlen)
		err[0] = '\0';
	if (!text || !out) {
		if (err && errlen)
			snprintf(err, errlen, "no filter text");
		return SH_EINVAL;
	}
	*out = NULL;
	p.s = text;
	p.n = strnlen(text, SH_FILTER_MAX_TEXT + 1);
	if (p.n > SH_FILTER_MAX_TEXT) {
		perr(&p, SH_FILTER_MAX_TEXT, "filter text longer than %d bytes",
		     SH_FILTER_MAX_TEXT);
		return p.rc;
	}
	advance(&p);
	sh_filter *f = NULL;
	if (p.rc == SH_OK && p.cur.type == T_EOF) {
		perr(&p, 0, "empty filter");
	} else if (p.rc == SH_OK) {
		f = parse_or(&p);
		if (f && p.cur.type != T_EOF)
			perr(&p, p.cur.pos, "unexpected %s after the filter",
			     tok_name(p.cur.type));
	}
	free(p.cur.str);
	if (p.rc != SH_OK) {
		sh_filter_free(f);
		return p.rc;
	}
	char verr[200];
	if (sh_filter_validate(f, verr, sizeof(verr)) != SH_OK) {
		if (err && errlen)
			snprintf(err, errlen, "invalid filter: %s", verr);
		sh_filter_free(f);
		return SH_EINVAL;
	}
	*out = f;
	return SH_OK;
}
