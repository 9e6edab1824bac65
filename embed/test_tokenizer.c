/*
 * The BERT tokenizer on hand-checked cases, against a small vocab.txt
 * written to a temporary directory (so the rules are tested without the
 * model), and, when the model is installed (SHOAL_MODEL_DIR), a few cases
 * against its tokenizer.json.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "bert.h"
#include "error.h"

/* id = index */
static const char *const vocab[] = {
    "[PAD]",  "[UNK]", "[CLS]", "[SEP]", "hello",  "world", ",",  "!",
    "cafe",   "naive", "un",	"##aff", "##able", "中",    "的", "$",
    "5",      "a",     "##a",	"—",	 "«",	   "»",	    "^",  "x",
    "resume", "'",     "s",	"e",	 "##e",	   "##llo", "he", "ι",
    "[MASK]", "[",     "]",	"sep",	 "省",
};
#define NV (int)(sizeof(vocab) / sizeof(vocab[0]))

static char g_dir[64];
static struct sh_wordpiece *g_tok;

static int id_of(const char *s)
{
	for (int i = 0; i < NV; i++)
		if (!strcmp(vocab[i], s))
			return i;
	fail_msg("token %s not in the test vocabulary", s);
	return -1;
}

static int setup(void **state)
{
	char path[128];
	snprintf(g_dir, sizeof(g_dir), "/tmp/shoal-tok-XXXXXX");
	if (!mkdtemp(g_dir))
		return -1;
	snprintf(path, sizeof(path), "%s/vocab.txt", g_dir);
	FILE *f = fopen(path, "w");
	if (!f)
		return -1;
	for (int i = 0; i < NV; i++)
		fprintf(f, "%s\n", vocab[i]);
	fclose(f);
	char err[256];
	if (sh_wordpiece_load(g_dir, &g_tok, err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	char path[128];
	sh_wordpiece_free(g_tok);
	snprintf(path, sizeof(path), "%s/vocab.txt", g_dir);
	unlink(path);
	rmdir(g_dir);
	return 0;
}

/* Encodes text[0..len) and compares with the space-separated tokens in
 * want (without [CLS] / [SEP], which are checked here). */
static void expect_n(const char *text, size_t len, int max_tokens,
		     const char *want)
{
	int32_t ids[512];
	int n = -1;
	char err[256];
	int rc = sh_wordpiece_encode(g_tok, text, len, ids, max_tokens, &n, err,
				     sizeof(err));
	if (rc)
		fail_msg("encode \"%s\": %s", text, err);
	char buf[1024];
	snprintf(buf, sizeof(buf), "%s", want);
	int32_t exp[512];
	int ne = 0;
	exp[ne++] = id_of("[CLS]");
	for (char *s = strtok(buf, " "); s; s = strtok(NULL, " "))
		exp[ne++] = id_of(s);
	exp[ne++] = id_of("[SEP]");
	if (n != ne || memcmp(ids, exp, (size_t)n * sizeof(int32_t))) {
		char got[2048] = "";
		size_t o = 0;
		for (int i = 0; i < n && o < sizeof(got) - 32; i++)
			o += (size_t)snprintf(
			    got + o, sizeof(got) - o, "%s ",
			    ids[i] >= 0 && ids[i] < NV ? vocab[ids[i]] : "?");
		fail_msg("\"%s\": got [%s], want [CLS] %s [SEP]", text, got,
			 want);
	}
}

static void expect(const char *text, const char *want)
{
	expect_n(text, strlen(text), 512, want);
}

static void test_lowercase_and_punctuation_split(void **state)
{
	expect("Hello, World!", "hello , world !");
	expect("HELLO!!", "hello ! !");
	expect("$5", "$ 5");
	expect("x^x", "x ^ x"); /* ASCII symbols are punctuation */
	expect("hello—world", "hello — world"); /* Pd */
	expect("«hello»", "« hello »");		/* Pi / Pf */
	expect("he's", "he ' s");
}

static void test_accents_are_stripped(void **state)
{
	expect("Café naïve", "cafe naive");
	expect("CAFÉ", "cafe");
	expect("re\xcc\x81sume\xcc\x81", "resume"); /* combining acute */
	expect("ÉÈÊË", "e ##e ##e ##e");
	/* U+0390: iota with dialytika and tonos, decomposes to iota + marks */
	expect("\xce\x90", "ι");
}

static void test_cjk_characters_are_split(void **state)
{
	expect("中的", "中 的");
	expect("hello中world", "hello 中 world");
}

static void test_control_characters_are_removed(void **state)
{
	expect("hel\x01lo", "hello");
	expect_n("hel\0lo", 6, 512, "hello");
	expect("hel\xe2\x80\x8blo", "hello");	   /* U+200B, Cf */
	expect("hel\xef\xbf\xbdlo", "hello");	   /* U+FFFD */
	expect("hello\tworld\r\n", "hello world"); /* whitespace, not control */
	expect("hello\xe3\x80\x80world", "hello world"); /* U+3000 */
	expect("hello\xc2\xa0world", "hello world");	 /* NBSP */
}

/* Added tokens are matched in the raw text, case-sensitively, as Hugging
 * Face's tokenizer does: a literal "[SEP]" is the [SEP] token. */
static void test_literal_special_tokens_are_special(void **state)
{
	expect("hello [SEP] world", "hello [SEP] world");
	expect("x[MASK]x", "x [MASK] x");
	expect("[CLS][CLS]", "[CLS] [CLS]");
	expect("[sep]", "[ sep ]");
	expect("[SEP", "[ sep");
	expect_n("hello [SEP] world", 17, 3, "hello");
	expect_n("hello [SEP] world", 17, 4, "hello [SEP]");
}

/* Where Hugging Face's tokenizer (the reference) differs from the original
 * Python BERT: unassigned code points are kept ([UNK]), and CJK extension E
 * below U+2B920 is not split out. Compatibility ideographs are their NFD
 * twins. */
static void test_unicode_edge_cases_follow_hugging_face(void **state)
{
	expect("\xcd\xb8", "[UNK]");		/* U+0378, unassigned */
	expect("hello\xcd\xb8", "[UNK]");	/* part of the word */
	expect("\xef\xa5\xad", "省");		/* U+F96D -> U+7701 */
	expect("x\xf0\xab\xa1\xac", "[UNK]");	/* U+2B86C, one word */
	expect("x\xf0\xab\xa4\xa0", "x [UNK]"); /* U+2B920, split */
	expect("\xee\x80\x80hello", "hello");	/* U+E000, private use */
}

static void test_empty_and_blank_texts_are_cls_sep(void **state)
{
	expect("", "");
	expect("  \t\n  ", "");
	expect("\x01\x02", "");
}

static void test_wordpiece_longest_match_and_unknown(void **state)
{
	expect("unaffable", "un ##aff ##able");
	expect("hello", "hello"); /* whole word beats he + ##llo */
	expect("zzz", "[UNK]");
	expect("unzzz hello", "[UNK] hello"); /* a failed word is one [UNK] */
	expect("😀", "[UNK]");
}

static void test_word_over_100_chars_is_unk(void **state)
{
	char w[128];
	char want[512] = "a";
	memset(w, 'a', 100);
	w[100] = '\0';
	for (int i = 1; i < 100; i++)
		strcat(want, " ##a");
	expect(w, want);
	memset(w, 'a', 101);
	w[101] = '\0';
	expect(w, "[UNK]");
	/* 101 chars that are 2 bytes each: counted in characters */
	char u[256] = "";
	for (int i = 0; i < 101; i++)
		strcat(u, "\xc3\xa1"); /* á -> a */
	expect(u, "[UNK]");
}

static void test_truncation_keeps_cls_and_sep(void **state)
{
	expect_n("hello world hello world", 23, 4, "hello world");
	expect_n("hello world", 11, 2, "");
	expect_n("unaffable", 9, 3, "un");
	expect_n("unaffable", 9, 4, "un ##aff");
	int32_t ids[4];
	int n;
	assert_int_equal(
	    sh_wordpiece_encode(g_tok, "x", 1, ids, 1, &n, NULL, 0), SH_EINVAL);
}

static void test_invalid_utf8_is_rejected(void **state)
{
	static const char *const bad[] = {
	    "\xff",	      "abc\xc3",	  "\xc0\xaf",
	    "\xed\xa0\x80",   "\xf4\x90\x80\x80", "\x80",
	    "hello \xe2\x82",
	};
	char err[256];
	int32_t ids[64];
	int n;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(sh_wordpiece_encode(g_tok, bad[i],
						     strlen(bad[i]), ids, 64,
						     &n, err, sizeof(err)),
				 SH_EINVAL);
		assert_non_null(strstr(err, "UTF-8"));
	}
	/* also past the truncation point */
	assert_int_equal(sh_wordpiece_encode(g_tok, "hello world \xff", 13, ids,
					     3, &n, err, sizeof(err)),
			 SH_EINVAL);
}

static void test_missing_vocabulary_is_clean_error(void **state)
{
	struct sh_wordpiece *t = NULL;
	char err[256];
	assert_int_equal(
	    sh_wordpiece_load("/nonexistent/shoal", &t, err, sizeof(err)),
	    SH_ENOTFOUND);
	assert_null(t);
	assert_non_null(strstr(err, "/nonexistent/shoal"));
}

/* With the real model's tokenizer.json: ids of a few well-known tokens. */
static void test_model_tokenizer_json(void **state)
{
	const char *dir = getenv("SHOAL_MODEL_DIR");
	char probe[4096];
	snprintf(probe, sizeof(probe), "%s/tokenizer.json", dir ? dir : "");
	if (!dir || access(probe, R_OK)) {
		print_message("no model tokenizer.json: skipped\n");
		skip();
	}
	struct sh_wordpiece *t;
	char err[256];
	assert_int_equal(sh_wordpiece_load(dir, &t, err, sizeof(err)), SH_OK);
	int32_t ids[32];
	int n;
	const char *text = "Hello, world! UNAFFABLE";
	assert_int_equal(sh_wordpiece_encode(t, text, strlen(text), ids, 32, &n,
					     err, sizeof(err)),
			 SH_OK);
	/* bert-base-uncased ids: [CLS] hello , world ! una ##ffa ##ble [SEP]
	 * (greedy: ##ffa is longer than ##ff) */
	static const int32_t want[] = {101,   7592,  1010, 2088, 999,
				       14477, 20961, 3468, 102};
	assert_int_equal(n, 9);
	assert_memory_equal(ids, want, sizeof(want));
	sh_wordpiece_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_lowercase_and_punctuation_split),
	    cmocka_unit_test(test_accents_are_stripped),
	    cmocka_unit_test(test_cjk_characters_are_split),
	    cmocka_unit_test(test_control_characters_are_removed),
	    cmocka_unit_test(test_literal_special_tokens_are_special),
	    cmocka_unit_test(test_unicode_edge_cases_follow_hugging_face),
	    cmocka_unit_test(test_empty_and_blank_texts_are_cls_sep),
	    cmocka_unit_test(test_wordpiece_longest_match_and_unknown),
	    cmocka_unit_test(test_word_over_100_chars_is_unk),
	    cmocka_unit_test(test_truncation_keeps_cls_and_sep),
	    cmocka_unit_test(test_invalid_utf8_is_rejected),
	    cmocka_unit_test(test_missing_vocabulary_is_clean_error),
	    cmocka_unit_test(test_model_tokenizer_json),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
