/*
 * Payload filters: the language a search, a scroll, a count or a delete uses
 * to say which points it wants.
 *
 * A filter is a tree. Each node (an sh_filter) has three lists of clauses:
 *
 *   must      every clause passes
 *   should    at least one clause passes (when the list is not empty)
 *   must_not  no clause passes
 *
 * and a clause is either a condition on the point or a nested filter. A
 * filter with no clauses passes every point. These are Qdrant's semantics.
 *
 * ## Conditions
 *
 *   match     key; one value or any of a set. Value kinds: keyword (a UTF-8
 *             string), integer (int64), bool.
 *   range     key; any of gt / gte / lt / lte (doubles); applies to numbers,
 *             integer and float alike.
 *   exists    key is present and not null.
 *   has_id    the point's id is one of a set of sh_pid.
 *
 * ## How a key finds a value in the payload
 *
 * A payload is a JSON object (cJSON). A key is a field name, or a dotted path
 * "a.b.c" that walks nested objects: "a" in the payload, "b" in that object,
 * and so on. A field name that itself contains a dot cannot be addressed (keys
 * with empty segments, "a..b" or ".a", are rejected by sh_filter_validate).
 * Only objects are walked: an array met before the last segment ends the walk
 * (the key is missing). When a JSON object holds the same name twice the first
 * wins (cJSON's order).
 *
 * The value found decides, per condition:
 *
 *   - A missing key, or JSON null, passes no match, range or exists (so
 *     "must_not match x" passes points that have no x at all).
 *   - Arrays: a condition passes when ANY element of the array passes it
 *     (["red", "blue"] matches "blue"; [3, 50] is in range gt 40). Only one
 *     level: an element that is itself an array or object matches nothing.
 *     A range is checked element by element: [3, 50] is not in gt 10 lt 20.
 *   - Types never convert: a keyword match passes only strings, an integer
 *     match only numbers, a bool match only true/false. "5" does not match 5.
 *   - Integer match: a number passes when it is integral, within int64 and
 *     equal (5.0 matches 5, 5.5 matches nothing). cJSON keeps every number as
 *     a double, so integers beyond 2^53 in a payload have already lost their
 *     low bits when parsed.
 *   - Range: numbers only; NaN is in no range.
 *   - exists: present, not null, and not an array without a non-null element
 *     ([] and [null] count as absent, Qdrant's is_empty).
 *   - has_id looks at the point id, not the payload.
 *
 * ## Ownership and threads
 *
 * An sh_filter owns everything in it: keys and values are copied by the
 * builders. It is a plain tree with no hidden state: once built, any number
 * of threads may call sh_filter_eval on it at once. Building is not
 * thread-safe.
 *
 * The struct is transparent so that the planner (payload.c) can walk it;
 * treat it as read-only and change it only through the builders.
 */
#ifndef SH_FILTER_H
#define SH_FILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pid.h"

typedef struct cJSON cJSON;

/* ---- Limits (sh_filter_validate) ----------------------------------------- */

/* Nesting depth: the root is depth 1. Bounds the evaluator's recursion. */
#define SH_FILTER_MAX_DEPTH 16
/* Conditions in the whole tree (a nested filter counts as one more). */
#define SH_FILTER_MAX_CONDITIONS 1024
/* Values in one match-any or has_id set. */
#define SH_FILTER_MAX_SET 4096
/* Key length in bytes: longer than any sane field path. */
#define SH_FILTER_MAX_KEY 256
/* Keyword length in bytes: a payload is at most 64 KiB (DESIGN.md). */
#define SH_FILTER_MAX_KEYWORD 65536
/* Text form length in bytes (sh_filter_parse). */
#define SH_FILTER_MAX_TEXT 65536

/* Which list of a node a clause goes to. */
typedef enum sh_occur {
	SH_MUST = 0,
	SH_SHOULD = 1,
	SH_MUST_NOT = 2,
} sh_occur;
#define SH_OCCUR_COUNT 3

typedef enum sh_cond_kind {
	SH_COND_MATCH = 0,
	SH_COND_RANGE = 1,
	SH_COND_EXISTS = 2,
	SH_COND_HAS_ID = 3,
	SH_COND_NESTED = 4,
} sh_cond_kind;

typedef enum sh_match_kind {
	SH_MATCH_KEYWORD = 0,
	SH_MATCH_INTEGER = 1,
	SH_MATCH_BOOL = 2,
} sh_match_kind;

/* A range: each bound applies when its has_ flag is set. */
typedef struct sh_range {
	bool has_gt, has_gte, has_lt, has_lte;
	double gt, gte, lt, lte;
} sh_range;

/* True when d is inside every bound r sets (NaN is in no range). The one
 * range test of the evaluator and the payload indexes. */
bool sh_range_contains(const sh_range *r, double d);

typedef struct sh_filter sh_filter;

/* One clause. Only the members of its kind are meaningful. */
typedef struct sh_cond {
	sh_cond_kind kind;
	char *key; /* MATCH, RANGE, EXISTS: owned, NUL-terminated */
	/* MATCH: nvals >= 1 values of one kind; nvals 1 is "match one" */
	sh_match_kind mkind;
	size_t nvals;
	char **keywords;   /* SH_MATCH_KEYWORD: nvals owned strings */
	int64_t *integers; /* SH_MATCH_INTEGER: nvals values */
	bool boolean;	   /* SH_MATCH_BOOL (always one value) */
	sh_range range;	   /* RANGE */
	sh_pid *ids;	   /* HAS_ID: nids ids, owned */
	size_t nids;
	sh_filter *sub; /* NESTED: owned */
} sh_cond;

struct sh_filter {
	sh_cond *conds[SH_OCCUR_COUNT]; /* indexed by sh_occur */
	size_t n[SH_OCCUR_COUNT];
	size_t cap[SH_OCCUR_COUNT];
};

/* ---- Building ------------------------------------------------------------ */

/* Creates an empty filter (passes everything). Returns SH_OK or SH_ENOMEM.
 * *out is the caller's: free with sh_filter_free(). */
int sh_filter_new(sh_filter **out);

/* Frees the filter and every nested filter. NULL is fine. */
void sh_filter_free(sh_filter *f);

/*
 * Each builder appends one clause to list `occ` of f, copying key and values.
 * They return SH_OK, SH_ENOMEM, or SH_EINVAL for NULL pointers, an occ out
 * of range or an empty set (n == 0); on error f is unchanged. Limits (key
 * length, set size, depth...) are checked by sh_filter_validate, not here.
 * Strings are NUL-terminated.
 */
int sh_filter_add_match_keyword(sh_filter *f, sh_occur occ, const char *key,
				const char *value);
int sh_filter_add_match_integer(sh_filter *f, sh_occur occ, const char *key,
				int64_t value);
int sh_filter_add_match_bool(sh_filter *f, sh_occur occ, const char *key,
			     bool value);
int sh_filter_add_match_any_keyword(sh_filter *f, sh_occur occ, const char *key,
				    const char *const *values, size_t n);
int sh_filter_add_match_any_integer(sh_filter *f, sh_occur occ, const char *key,
				    const int64_t *values, size_t n);
int sh_filter_add_range(sh_filter *f, sh_occur occ, const char *key,
			const sh_range *r);
int sh_filter_add_exists(sh_filter *f, sh_occur occ, const char *key);
int sh_filter_add_has_id(sh_filter *f, sh_occur occ, const sh_pid *ids,
			 size_t n);
/* Takes ownership of sub on SH_OK (free f, not sub); on error sub stays the
 * caller's. sub must not be f or contain f. */
int sh_filter_add_nested(sh_filter *f, sh_occur occ, sh_filter *sub);

/* Number of clauses in the whole tree, nested filters counted as one each
 * plus their own clauses. */
size_t sh_filter_count(const sh_filter *f);

/* True when f has no clauses (passes everything). */
bool sh_filter_is_empty(const sh_filter *f);

/* ---- Checking and evaluating --------------------------------------------- */

/* Checks the limits above: depth <= SH_FILTER_MAX_DEPTH, at most
 * SH_FILTER_MAX_CONDITIONS clauses, sets of 1..SH_FILTER_MAX_SET values, keys
 * of 1..SH_FILTER_MAX_KEY bytes with no empty dotted segment, keywords valid
 * UTF-8 of at most SH_FILTER_MAX_KEYWORD bytes, ranges with at least one
 * bound, no NaN bound and lower <= upper (the larger of gt/gte against the
 * smaller of lt/lte). Returns SH_OK, or SH_EINVAL with a message in err
 * (optional; NUL-terminated, truncated to errlen). Read-only; any thread.
 * Every filter that comes from outside must pass this before eval or
 * planning: those trust the limits (recursion depth). */
int sh_filter_validate(const sh_filter *f, char *err, size_t errlen);

/* True when the point passes. id may be NULL (has_id then fails); payload
 * may be NULL, meaning the empty object; a payload that is not an object is
 * treated as empty. Read-only, no allocation; any thread. */
bool sh_filter_eval(const sh_filter *f, const sh_pid *id, const cJSON *payload);

/* The value a key names in a payload (see "How a key finds a value"), or
 * NULL when missing. Shared with the payload index so that both read a
 * payload the same way. */
const cJSON *sh_filter_lookup(const cJSON *payload, const char *key);

/* True when a key names a value for the purposes of exists (present, not
 * null, not an array without a non-null element). v may be NULL. */
bool sh_filter_value_exists(const cJSON *v);

/* True when a JSON number is an integer in the sense of integer match
 * (finite, integral, within int64); sets *out. */
bool sh_filter_number_as_int64(double d, int64_t *out);

/* ---- Text form ----------------------------------------------------------- */

/*
 * Parses the short text form used by the CLI and the SDKs:
 *
 *   category = "shoes" and price < 100 and in_stock
 *   (color in ["red", "blue"] or not exists(color)) and qty >= 1
 *
 * Grammar (keywords and, or, not, in, exists, has_id, true, false are
 * lowercase or uppercase; whitespace is free):
 *
 *   filter  := or EOF
 *   or      := and ( "or" and )*
 *   and     := unary ( "and" unary )*
 *   unary   := "not" unary | primary
 *   primary := "(" or ")"
 *            | "exists" "(" field ")"
 *            | "has_id" "(" id ( "," id )* ")"        id := string | integer
 *            | field ( "=" | "!=" ) literal
 *            | field ( "<" | "<=" | ">" | ">=" ) number
 *            | field [ "not" ] "in" "[" literal ( "," literal )* "]"
 *            | field                                   means field = true
 *   field   := [A-Za-z_][A-Za-z0-9_]* ( "." [A-Za-z_][A-Za-z0-9_]* )*
 *   literal := string | number | "true" | "false"
 *   string  := '"' chars '"'  escapes \" \\ \/ \n \t \r \uXXXX; UTF-8
 *   number  := -?digits ( "." digits )? ( [eE] [+-]? digits )?
 *              integer when it has neither "." nor exponent (must fit int64)
 *
 * Meaning: and → must, or → should, not → must_not (a != b is
 * not (a = b): it passes points without a). field = string / integer / bool
 * is a match; field = float is the range [x, x]; comparisons are ranges; in
 * [...] of all strings or all integers is a match-any, otherwise a should of
 * equalities; exists(f) is exists; has_id(...) is has_id (non-negative
 * integers are u64 ids, strings are string ids).
 *
 * Returns SH_OK with *out set (the caller's, free with sh_filter_free), or
 * SH_EINVAL with a message naming the byte offset of the error in err
 * (optional), SH_ENOMEM. Input over SH_FILTER_MAX_TEXT bytes or nested more
 * than SH_FILTER_MAX_DEPTH * 4 levels is rejected; the result has passed
 * sh_filter_validate. Any thread.
 */
int sh_filter_parse(const char *text, sh_filter **out, char *err,
		    size_t errlen);

#endif
