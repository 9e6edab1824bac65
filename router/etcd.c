/* The etcd v3 client over the HTTP/JSON gateway. See etcd.h. */
#include "etcd.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"

/* CURLOPT_PREREQFUNCTION tells whether a request may have reached etcd,
 * which decides whether another endpoint may be tried (see etcd.h). */
#if LIBCURL_VERSION_NUM < 0x075000
#error "libcurl 7.80 or later is needed (CURLOPT_PREREQFUNCTION)"
#endif

/* Bytes of a server's text quoted in an error message. */
#define ETCD_QUOTE 160

struct sh_etcd {
	size_t n;		       /* endpoints */
	char ep[SH_ETCD_MAX_ENDPOINTS] /* "http://host:port", no '/' after */
	       [SH_ETCD_MAX_URL + 1];
	int timeout_ms;		    /* of each get and cas */
	struct curl_slist *headers; /* the same for every request; curl
				       only reads it, so handles of many
				       threads share it */
	atomic_size_t prefer;	    /* the endpoint that answered last:
				       a hint, read and written relaxed */
};

/* ---- libcurl, once per process ------------------------------------------ */

/* curl_global_init is not to be called twice at once; its state lives as
 * long as the process (no curl_global_cleanup: another client may be
 * open, and the memory stays reachable). */
static pthread_once_t etcd_once = PTHREAD_ONCE_INIT;
static CURLcode etcd_init_rc = CURLE_FAILED_INIT;

static void etcd_global_init(void)
{
	etcd_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- Base64 ------------------------------------------------------------- */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t sh_etcd_b64_encoded_len(size_t n)
{
	return (n / 3 + (n % 3 != 0)) * 4;
}

int sh_etcd_b64_encode(const void *src, size_t n, char *dst, size_t cap,
		       size_t *outlen)
{
	/* n / 3 * 4 cannot overflow; the + 4 only near SIZE_MAX, where no
	 * buffer of cap bytes exists anyway. */
	if (n / 3 > (SIZE_MAX - 5) / 4 || cap < sh_etcd_b64_encoded_len(n) + 1)
		return SH_ETOOBIG;
	const unsigned char *s = src;
	size_t o = 0, i = 0;
	for (; i + 3 <= n; i += 3) {
		uint32_t v =
		    (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
		dst[o++] = b64_alphabet[v >> 18];
		dst[o++] = b64_alphabet[(v >> 12) & 63];
		dst[o++] = b64_alphabet[(v >> 6) & 63];
		dst[o++] = b64_alphabet[v & 63];
	}
	if (i < n) {
		uint32_t v = (uint32_t)s[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)s[i + 1] << 8;
		dst[o++] = b64_alphabet[v >> 18];
		dst[o++] = b64_alphabet[(v >> 12) & 63];
		dst[o++] = i + 1 < n ? b64_alphabet[(v >> 6) & 63] : '=';
		dst[o++] = '=';
	}
	dst[o] = 0;
	if (outlen)
		*outlen = o;
	return SH_OK;
}

/* Value of a base64 character, or -1. */
static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int sh_etcd_b64_decode(const char *src, size_t n, void *dst, size_t cap,
		       size_t *outlen)
{
	if (n % 4)
		return SH_ECORRUPT;
	if (cap < n / 4 * 3 + 1)
		return SH_ETOOBIG;
	const unsigned char *s = (const unsigned char *)src;
	unsigned char *d = dst;
	size_t o = 0;
	for (size_t i = 0; i < n; i += 4) {
		bool last = i + 4 == n;
		int pad = 0;
		if (last && s[i + 3] == '=')
			pad = s[i + 2] == '=' ? 2 : 1;
		int v[4];
		for (int k = 0; k < 4 - pad; k++) {
			v[k] = b64_value(s[i + k]);
			if (v[k] < 0)
				return SH_ECORRUPT;
		}
		uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12;
		if (pad < 2)
			w |= (uint32_t)v[2] << 6;
		if (pad < 1)
			w |= (uint32_t)v[3];
		/* Unused bits must be zero: one encoding per byte string. */
		if ((pad == 2 && (w & 0xffff)) || (pad == 1 && (w & 0xff)))
			return SH_ECORRUPT;
		d[o++] = (unsigned char)(w >> 16);
		if (pad < 2)
			d[o++] = (unsigned char)(w >> 8);
		if (pad < 1)
			d[o++] = (unsigned char)w;
	}
	d[o] = 0;
	if (outlen)
		*outlen = o;
	return SH_OK;
}

/* ---- Opening ------------------------------------------------------------ */

/* Checks and stores one endpoint, s[0..n) with spaces trimmed. */
static int add_endpoint(sh_etcd *e, const char *s, size_t n, char *err,
			size_t errlen)
{
	while (n && (*s == ' ' || *s == '\t'))
		s++, n--;
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	while (n && s[n - 1] == '/')
		n--;
	if (n == 0)
		return sh_errf(err, errlen, SH_EINVAL,
			       "etcd endpoints: an empty endpoint in the list");
	if (e->n == SH_ETCD_MAX_ENDPOINTS)
		return sh_errf(err, errlen, SH_EINVAL,
			       "etcd endpoints: more than %d",
			       SH_ETCD_MAX_ENDPOINTS);
	if (n > SH_ETCD_MAX_URL)
		return sh_errf(err, errlen, SH_EINVAL,
			       "etcd endpoint %zu: longer than %d bytes",
			       e->n + 1, SH_ETCD_MAX_URL);
	size_t scheme = 0;
	if (n > 7 && strncmp(s, "http://", 7) == 0)
		scheme = 7;
	else if (n > 8 && strncmp(s, "https://", 8) == 0)
		scheme = 8;
	if (!scheme)
		return sh_errf(err, errlen, SH_EINVAL,
			       "etcd endpoint '%.*s': not http://host:port",
			       (int)n, s);
	for (size_t i = scheme; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c <= ' ' || c >= 0x7f || c == '/' || c == '?' || c == '#' ||
		    c == '@')
			return sh_errf(err, errlen, SH_EINVAL,
				       "etcd endpoint '%.*s': only "
				       "scheme://host:port, no path",
				       (int)n, s);
	}
	memcpy(e->ep[e->n], s, n);
	e->ep[e->n][n] = 0;
	e->n++;
	return SH_OK;
}

int sh_etcd_open(const char *endpoints, int timeout_ms, sh_etcd **out,
		 char *err, size_t errlen)
{
	*out = NULL;
	if (!endpoints || !*endpoints)
		return sh_errf(err, errlen, SH_EINVAL, "no etcd endpoint");
	if (timeout_ms <= 0)
		return sh_errf(err, errlen, SH_EINVAL,
			       "etcd timeout_ms must be > 0, not %d",
			       timeout_ms);
	pthread_once(&etcd_once, etcd_global_init);
	if (etcd_init_rc != CURLE_OK)
		return sh_errf(err, errlen, SH_EIO, "curl_global_init: %s",
			       curl_easy_strerror(etcd_init_rc));
	int rc;
	sh_etcd *e = calloc(1, sizeof(*e));
	if (!e)
		return sh_errf(err, errlen, SH_ENOMEM, "out of memory");
	e->timeout_ms = timeout_ms;
	atomic_init(&e->prefer, 0);
	for (const char *p = endpoints;;) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		rc = add_endpoint(e, p, len, err, errlen);
		if (rc)
			goto fail;
		if (!comma)
			break;
		p = comma + 1;
	}
	/* Expect: off, or curl waits for a "100 Continue" before a large
	 * body. */
	const char *hdrs[] = {"Content-Type: application/json",
			      "Accept: application/json", "Expect:"};
	for (size_t i = 0; i < sizeof(hdrs) / sizeof(hdrs[0]); i++) {
		struct curl_slist *l = curl_slist_append(e->headers, hdrs[i]);
		if (!l) {
			rc = sh_errf(err, errlen, SH_ENOMEM, "out of memory");
			goto fail;
		}
		e->headers = l;
	}
	*out = e;
	return SH_OK;
fail:
	sh_etcd_close(e);
	return rc;
}

void sh_etcd_close(sh_etcd *e)
{
	if (!e)
		return;
	curl_slist_free_all(e->headers);
	free(e);
}

void sh_etcd_kv_clear(sh_etcd_kv *kv)
{
	if (!kv)
		return;
	free(kv->value);
	memset(kv, 0, sizeof(*kv));
}

/* ---- One HTTP exchange -------------------------------------------------- */

/* The state of one call on one endpoint, shared with curl's callbacks. */
typedef struct etcd_call {
	CURL *h;
	const char *ep; /* the endpoint being tried, for messages */
	char *err;	/* the caller's message buffer */
	size_t errlen;
	char curlerr[CURL_ERROR_SIZE];
	bool sent; /* the request may have reached etcd (the connection was
		      up when curl was about to send it) */
	int fail;  /* set by a callback that stopped the transfer: its code,
		      with its message in err */
	char *buf; /* the response body (a watch: the bytes not yet parsed) */
	size_t len, cap;

	/* sh_etcd_wait only. */
	bool watch;
	const char *key; /* the watched key, to check events against */
	int64_t after;	 /* after_revision */
	long status;	 /* HTTP status, read at the first body bytes */
	bool done;	 /* a message ended the wait: code in fail (SH_OK
			    included), revision in mod */
	int64_t mod;
	size_t scan;  /* bytes of buf already scanned for objects */
	size_t start; /* where the open object begins (depth > 0) */
	size_t depth; /* of '{' and '[' outside strings */
	bool in_str, esc;
} etcd_call;

/* Appends to c->buf within SH_ETCD_MAX_RESPONSE. SH_OK, SH_ECORRUPT or
 * SH_ENOMEM, with a message. */
static int call_append(etcd_call *c, const char *p, size_t n)
{
	if (n > SH_ETCD_MAX_RESPONSE - c->len)
		return sh_errf(c->err, c->errlen, SH_ECORRUPT,
			       "etcd %s: a response over %u bytes: not etcd",
			       c->ep, SH_ETCD_MAX_RESPONSE);
	if (c->len + n + 1 > c->cap) {
		size_t cap = c->cap ? c->cap : 4096;
		while (cap < c->len + n + 1)
			cap *= 2;
		char *b = realloc(c->buf, cap);
		if (!b)
			return sh_errf(c->err, c->errlen, SH_ENOMEM,
				       "out of memory");
		c->buf = b;
		c->cap = cap;
	}
	memcpy(c->buf + c->len, p, n);
	c->len += n;
	c->buf[c->len] = 0;
	return SH_OK;
}

/* Copies at most ETCD_QUOTE bytes of a server's text into out (cap
 * ETCD_QUOTE + 1), printable ASCII only: the text is untrusted. */
static void quote(const char *s, size_t n, char *out)
{
	size_t o = 0;
	for (size_t i = 0; i < n && o < ETCD_QUOTE; i++) {
		unsigned char ch = (unsigned char)s[i];
		out[o++] = ch >= ' ' && ch < 0x7f ? (char)ch : '?';
	}
	out[o] = 0;
}

/* The message of a parsed error: {"error": "...", "message": "..."} (a
 * unary answer) or {"error": {"message": "..."}} (a stream's). Writes it
 * to out and returns true, or false when j holds none. */
static bool error_json(const cJSON *j, char *out)
{
	if (!cJSON_IsObject(j))
		return false;
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "message");
	const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
	if (!cJSON_IsString(m) && cJSON_IsObject(e))
		m = cJSON_GetObjectItemCaseSensitive(e, "message");
	if (!cJSON_IsString(m))
		m = e;
	if (!cJSON_IsString(m))
		return false;
	quote(m->valuestring, strlen(m->valuestring), out);
	return true;
}

/* The message of an error body, else the body's text itself. */
static void error_text(const char *body, size_t n, char *out)
{
	cJSON *j = cJSON_ParseWithLength(body, n);
	if (!error_json(j, out))
		quote(body, n, out);
	if (!*out)
		snprintf(out, ETCD_QUOTE + 1, "(no body)");
	cJSON_Delete(j);
}

static int watch_feed(etcd_call *c);

static size_t on_body(char *p, size_t size, size_t nmemb, void *arg)
{
	etcd_call *c = arg;
	size_t n = size * nmemb;
	if (c->watch && !c->status)
		curl_easy_getinfo(c->h, CURLINFO_RESPONSE_CODE, &c->status);
	int rc = call_append(c, p, n);
	if (rc == SH_OK && c->watch && c->status == 200)
		rc = watch_feed(c);
	if (rc != SH_OK)
		c->fail = rc;
	if (rc != SH_OK || c->done)
		return 0; /* stops the transfer */
	return n;
}

static int on_prereq(void *arg, char *conn_primary_ip, char *conn_local_ip,
		     int conn_primary_port, int conn_local_port)
{
	etcd_call *c = arg;
	c->sent = true;
	return CURL_PREREQFUNC_OK;
}

/* What a transfer that reached an endpoint came to (see etcd_post). */
static int call_outcome(etcd_call *c, CURLcode cr, long status, const char *why)
{
	if (c->done)
		return SH_OK;
	if (c->fail != SH_OK)
		return c->fail;
	if (cr == CURLE_OPERATION_TIMEDOUT)
		return sh_errf(c->err, c->errlen, SH_ETIMEDOUT,
			       "etcd %s: no answer in time: %s", c->ep, why);
	if (cr == CURLE_FILESIZE_EXCEEDED)
		return sh_errf(c->err, c->errlen, SH_ECORRUPT,
			       "etcd %s: a response over %u bytes: not etcd",
			       c->ep, SH_ETCD_MAX_RESPONSE);
	if (cr != CURLE_OK)
		return sh_errf(c->err, c->errlen, SH_EIO, "etcd %s: %s", c->ep,
			       why);
	if (status != 200) {
		char msg[ETCD_QUOTE + 1];
		error_text(c->buf ? c->buf : "", c->len, msg);
		return sh_errf(c->err, c->errlen, SH_EIO,
			       "etcd %s: HTTP %ld: %s", c->ep, status, msg);
	}
	return SH_OK;
}

/*
 * POSTs body to path on the endpoints in turn (from the preferred one)
 * until one takes the request, within deadline (a now_ms() time);
 * connect_cap_ms caps each endpoint's connect time. On entry c holds the
 * watch fields (or zeroes) and err/errlen; on exit c->buf holds the
 * response of the endpoint that took the request (c->ep) and the caller
 * frees it.
 *
 * Returns SH_OK (HTTP 200, the whole body received; a watch: a message
 * ended it, its code in c->fail), SH_EIO (no endpoint took it, or an HTTP
 * or transfer error), SH_ETIMEDOUT (taken, no answer in time),
 * SH_ECORRUPT, SH_ENOMEM; each with a message naming the endpoint.
 */
static int etcd_post(sh_etcd *e, const char *path, const char *body,
		     size_t blen, int64_t deadline, int connect_cap_ms,
		     etcd_call *c)
{
	char tried[512] = "";
	size_t first = atomic_load_explicit(&e->prefer, memory_order_relaxed);
	if (first >= e->n)
		first = 0;
	for (size_t k = 0; k < e->n; k++) {
		size_t i = (first + k) % e->n;
		int64_t left = deadline - now_ms();
		if (left <= 0)
			break;
		/* Share what is left among the endpoints still to try, so
		 * that one that swallows SYNs does not take all of it. */
		int64_t conn = left / (int64_t)(e->n - k);
		if (conn > connect_cap_ms)
			conn = connect_cap_ms;
		if (conn < 1)
			conn = 1;
		char url[SH_ETCD_MAX_URL + 32];
		snprintf(url, sizeof(url), "%s%s", e->ep[i], path);
		c->ep = e->ep[i];
		c->sent = false;
		c->fail = SH_OK;
		c->len = 0;
		c->status = 0;
		c->done = false;
		c->scan = c->start = c->depth = 0;
		c->in_str = c->esc = false;
		c->curlerr[0] = 0;
		c->h = curl_easy_init();
		if (!c->h)
			return sh_errf(c->err, c->errlen, SH_ENOMEM,
				       "curl_easy_init failed");
		CURL *h = c->h;
		curl_easy_setopt(h, CURLOPT_URL, url);
#if LIBCURL_VERSION_NUM >= 0x075500
		curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#else
		curl_easy_setopt(h, CURLOPT_PROTOCOLS,
				 (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
		curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(h, CURLOPT_PROXY, "");
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, e->headers);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
				 (curl_off_t)blen);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)left);
		curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)conn);
		/* A watch bounds each message instead (watch_feed). */
		if (!c->watch)
			curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE,
					 (curl_off_t)SH_ETCD_MAX_RESPONSE);
		curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
		curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
		curl_easy_setopt(h, CURLOPT_PREREQFUNCTION, on_prereq);
		curl_easy_setopt(h, CURLOPT_PREREQDATA, c);
		curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->curlerr);
		CURLcode cr = curl_easy_perform(h);
		long status = 0;
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
		curl_easy_cleanup(h);
		c->h = NULL;
		const char *why =
		    c->curlerr[0] ? c->curlerr : curl_easy_strerror(cr);
		if (cr != CURLE_OK && !c->sent && c->fail == SH_OK) {
			/* Never sent: the next endpoint may have it. */
			size_t t = strlen(tried);
			snprintf(tried + t, sizeof(tried) - t, "%s%s: %s",
				 t ? "; " : "", e->ep[i], why);
			continue;
		}
		int rc = call_outcome(c, cr, status, why);
		/* An endpoint that took the request but failed it (a member
		 * cut off from its quorum answers "no leader" at once) is not
		 * retried for this request, which may have been applied, but
		 * the next call starts at the next endpoint. A watch that
		 * saw no change in time is no failure. */
		bool ok = rc == SH_OK || rc == SH_ENOMEM ||
			  (c->watch && rc == SH_ETIMEDOUT);
		size_t next = ok ? i : (i + 1) % e->n;
		atomic_store_explicit(&e->prefer, next, memory_order_relaxed);
		return rc;
	}
	if (!*tried)
		snprintf(tried, sizeof(tried), "no time left to connect");
	return sh_errf(c->err, c->errlen, SH_EIO, "etcd unreachable: %s",
		       tried);
}

/* ---- Reading answers ---------------------------------------------------- */

/* An int64 member: a JSON string of decimal digits or an integral number;
 * missing is 0. SH_OK or SH_ECORRUPT (no message). */
static int json_i64(const cJSON *obj, const char *name, int64_t *v)
{
	const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, name);
	*v = 0;
	if (!j)
		return SH_OK;
	if (cJSON_IsNumber(j)) {
		double d = j->valuedouble;
		/* Within 2^53, doubles hold integers exactly. */
		if (!(d >= -9007199254740992.0 && d <= 9007199254740992.0))
			return SH_ECORRUPT;
		int64_t i = (int64_t)d;
		if ((double)i != d)
			return SH_ECORRUPT;
		*v = i;
		return SH_OK;
	}
	if (!cJSON_IsString(j))
		return SH_ECORRUPT;
	const char *s = j->valuestring;
	bool neg = *s == '-';
	s += neg;
	if (!*s || strlen(s) > 19)
		return SH_ECORRUPT;
	uint64_t u = 0;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return SH_ECORRUPT;
		u = u * 10 + (uint64_t)(*s - '0');
	}
	if (u > (uint64_t)INT64_MAX)
		return SH_ECORRUPT;
	*v = neg ? -(int64_t)u : (int64_t)u;
	return SH_OK;
}

/* A bool member; missing is false. SH_OK or SH_ECORRUPT. */
static int json_bool(const cJSON *obj, const char *name, bool *v)
{
	const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, name);
	*v = false;
	if (!j)
		return SH_OK;
	if (!cJSON_IsBool(j))
		return SH_ECORRUPT;
	*v = cJSON_IsTrue(j);
	return SH_OK;
}

/* A bytes member (base64), decoded into a malloc'd NUL-terminated copy;
 * missing is empty. SH_OK, SH_ECORRUPT or SH_ENOMEM. */
static int json_bytes(const cJSON *obj, const char *name, char **p, size_t *len)
{
	const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, name);
	const char *s = "";
	*p = NULL;
	*len = 0;
	if (j && !cJSON_IsString(j))
		return SH_ECORRUPT;
	if (j)
		s = j->valuestring;
	size_t n = strlen(s), cap = n / 4 * 3 + 1;
	char *d = malloc(cap);
	if (!d)
		return SH_ENOMEM;
	int rc = sh_etcd_b64_decode(s, n, d, cap, len);
	if (rc) {
		free(d);
		return SH_ECORRUPT;
	}
	*p = d;
	return SH_OK;
}

/* Whether obj's bytes member name is key. SH_OK, SH_ECORRUPT, SH_ENOMEM. */
static int json_key_is(const cJSON *obj, const char *name, const char *key)
{
	char *k;
	size_t n;
	int rc = json_bytes(obj, name, &k, &n);
	if (rc)
		return rc;
	if (n != strlen(key) || memcmp(k, key, n) != 0)
		rc = SH_ECORRUPT;
	free(k);
	return rc;
}

/* The body as a JSON object with a header holding a revision > 0 (every
 * unary answer has one). SH_OK with *root, SH_ECORRUPT, SH_ENOMEM. */
static int parse_answer(etcd_call *c, const char *what, cJSON **root,
			int64_t *revision)
{
	*root = cJSON_ParseWithLength(c->buf ? c->buf : "", c->len);
	if (!cJSON_IsObject(*root))
		goto corrupt;
	const cJSON *hdr = cJSON_GetObjectItemCaseSensitive(*root, "header");
	if (!cJSON_IsObject(hdr) || json_i64(hdr, "revision", revision) ||
	    *revision <= 0)
		goto corrupt;
	return SH_OK;
corrupt:
	cJSON_Delete(*root);
	*root = NULL;
	return sh_errf(c->err, c->errlen, SH_ECORRUPT,
		       "etcd %s: %s answer is not JSON with header.revision",
		       c->ep, what);
}

static int check_key(const char *key, char *err, size_t errlen)
{
	size_t n = key ? strlen(key) : 0;
	if (n == 0 || n > SH_ETCD_MAX_KEY)
		return sh_errf(err, errlen, SH_EINVAL,
			       "etcd key: 1..%d bytes, not %zu",
			       SH_ETCD_MAX_KEY, n);
	return SH_OK;
}

/* Base64 of key in a malloc'd string, or NULL. */
static char *key64(const char *key)
{
	size_t n = strlen(key), cap = sh_etcd_b64_encoded_len(n) + 1;
	char *k = malloc(cap);
	if (k)
		sh_etcd_b64_encode(key, n, k, cap, NULL);
	return k;
}

/* ---- Get ---------------------------------------------------------------- */

/* The kv of key in a range answer (root), into out (whose revision is
 * set). SH_OK, SH_ENOTFOUND, SH_ECORRUPT, SH_ENOMEM, with a message. */
static int range_kv(const etcd_call *c, const cJSON *root, const char *key,
		    sh_etcd_kv *out)
{
	const cJSON *kvs = cJSON_GetObjectItemCaseSensitive(root, "kvs");
	if (kvs && !cJSON_IsArray(kvs))
		goto corrupt;
	int nkv = cJSON_GetArraySize(kvs);
	if (nkv == 0)
		return sh_errf(c->err, c->errlen, SH_ENOTFOUND,
			       "etcd key %.*s: none", ETCD_QUOTE, key);
	const cJSON *kv = cJSON_GetArrayItem(kvs, 0);
	if (nkv != 1 || !cJSON_IsObject(kv))
		goto corrupt;
	int rc = json_key_is(kv, "key", key);
	if (rc == SH_OK &&
	    (json_i64(kv, "mod_revision", &out->mod_revision) ||
	     out->mod_revision <= 0 || out->mod_revision > out->revision))
		rc = SH_ECORRUPT;
	if (rc == SH_OK)
		rc = json_bytes(kv, "value", &out->value, &out->len);
	if (rc == SH_OK)
		return SH_OK;
	if (rc == SH_ENOMEM)
		return sh_errf(c->err, c->errlen, SH_ENOMEM, "out of memory");
corrupt:
	return sh_errf(c->err, c->errlen, SH_ECORRUPT,
		       "etcd %s: range answer: kvs is not one kv of the key "
		       "with base64 key and value and 0 < mod_revision <= "
		       "header.revision",
		       c->ep);
}

int sh_etcd_get(sh_etcd *e, const char *key, sh_etcd_kv *out, char *err,
		size_t errlen)
{
	memset(out, 0, sizeof(*out));
	int rc = check_key(key, err, errlen);
	if (rc)
		return rc;
	etcd_call c = {.err = err, .errlen = errlen};
	cJSON *root = NULL;
	char *body = NULL, *k = key64(key);
	size_t cap = k ? strlen(k) + 16 : 0;
	if (k)
		body = malloc(cap);
	if (!body) {
		rc = sh_errf(err, errlen, SH_ENOMEM, "out of memory");
		goto fail;
	}
	int blen = snprintf(body, cap, "{\"key\":\"%s\"}", k);
	rc = etcd_post(e, "/v3/kv/range", body, (size_t)blen,
		       now_ms() + e->timeout_ms, e->timeout_ms, &c);
	if (rc)
		goto fail;
	rc = parse_answer(&c, "range", &root, &out->revision);
	if (rc)
		goto fail;
	rc = range_kv(&c, root, key, out);
fail:
	if (rc != SH_OK && rc != SH_ENOTFOUND)
		sh_etcd_kv_clear(out);
	cJSON_Delete(root);
	free(body);
	free(k);
	free(c.buf);
	return rc;
}

/* ---- Compare-and-swap --------------------------------------------------- */

int sh_etcd_cas(sh_etcd *e, const char *key, const void *val, size_t len,
		int64_t expect_mod_revision, int64_t *new_mod_revision,
		char *err, size_t errlen)
{
	int rc = check_key(key, err, errlen);
	if (rc)
		return rc;
	if (expect_mod_revision < 0)
		return sh_errf(err, errlen, SH_EINVAL,
			       "etcd cas: expect_mod_revision %" PRId64 " < 0",
			       expect_mod_revision);
	if (len > SH_ETCD_MAX_VALUE)
		return sh_errf(err, errlen, SH_ETOOBIG,
			       "etcd cas: a value of %zu bytes (at most %u)",
			       len, SH_ETCD_MAX_VALUE);
	if (!val && len)
		return sh_errf(err, errlen, SH_EINVAL, "etcd cas: no value");
	etcd_call c = {.err = err, .errlen = errlen};
	cJSON *root = NULL;
	char *body = NULL, *k = key64(key);
	size_t klen = k ? strlen(k) : 0;
	size_t cap = 2 * klen + sh_etcd_b64_encoded_len(len) + 256;
	if (k)
		body = malloc(cap);
	if (!body) {
		rc = sh_errf(err, errlen, SH_ENOMEM, "out of memory");
		goto fail;
	}
	int n = snprintf(body, cap,
			 "{\"compare\":[{\"key\":\"%s\",\"target\":\"MOD\","
			 "\"result\":\"EQUAL\",\"mod_revision\":\"%" PRId64
			 "\"}],\"success\":[{\"request_put\":{\"key\":\"%s\","
			 "\"value\":\"",
			 k, expect_mod_revision, k);
	size_t blen = (size_t)n, vlen;
	sh_etcd_b64_encode(val ? val : "", len, body + blen, cap - blen, &vlen);
	blen += vlen;
	blen += (size_t)snprintf(body + blen, cap - blen, "\"}}]}");
	rc = etcd_post(e, "/v3/kv/txn", body, blen, now_ms() + e->timeout_ms,
		       e->timeout_ms, &c);
	if (rc)
		goto fail;
	int64_t rev;
	rc = parse_answer(&c, "txn", &root, &rev);
	if (rc)
		goto fail;
	bool ok;
	if (json_bool(root, "succeeded", &ok))
		rc = sh_errf(err, errlen, SH_ECORRUPT,
			     "etcd %s: txn answer: succeeded is not a bool",
			     c.ep);
	else if (!ok)
		rc = sh_errf(err, errlen, SH_ESTALE,
			     "etcd key %.*s: mod_revision is not %" PRId64
			     " (changed by someone else)",
			     ETCD_QUOTE, key, expect_mod_revision);
	/* The put is the transaction's only write: it happened at the
	 * revision the header gives, now the key's mod_revision. */
	else if (rev <= expect_mod_revision)
		rc = sh_errf(err, errlen, SH_ECORRUPT,
			     "etcd %s: txn answer: revision %" PRId64
			     " not above %" PRId64,
			     c.ep, rev, expect_mod_revision);
	else if (new_mod_revision)
		*new_mod_revision = rev;
fail:
	cJSON_Delete(root);
	free(body);
	free(k);
	free(c.buf);
	return rc;
}

/* ---- Watch -------------------------------------------------------------- */

/*
 * One watch message. Returns SH_OK with c->done set when it ends the wait
 * (c->fail: the outcome, c->mod: the revision), SH_OK alone to read on
 * (created, progress), or an error code with its message.
 */
static int watch_message(etcd_call *c, const cJSON *m)
{
	const cJSON *res = cJSON_GetObjectItemCaseSensitive(m, "result");
	const cJSON *er = cJSON_GetObjectItemCaseSensitive(m, "error");
	char msg[ETCD_QUOTE + 1];
	if (er) {
		if (!error_json(m, msg))
			snprintf(msg, sizeof(msg),
				 "an error without a message");
		return sh_errf(c->err, c->errlen, SH_EIO, "etcd %s: watch: %s",
			       c->ep, msg);
	}
	if (!cJSON_IsObject(res))
		return sh_errf(c->err, c->errlen, SH_ECORRUPT,
			       "etcd %s: a watch message without result",
			       c->ep);
	bool canceled;
	int64_t compact;
	if (json_bool(res, "canceled", &canceled) ||
	    json_i64(res, "compact_revision", &compact) || compact < 0)
		goto corrupt;
	if (canceled) {
		c->done = true;
		if (compact > 0) {
			/* History before compact is gone: the key may have
			 * changed in it; the caller re-reads. */
			c->fail = SH_OK;
			c->mod = 0;
			return SH_OK;
		}
		const cJSON *r =
		    cJSON_GetObjectItemCaseSensitive(res, "cancel_reason");
		if (cJSON_IsString(r))
			quote(r->valuestring, strlen(r->valuestring), msg);
		else
			snprintf(msg, sizeof(msg), "no reason given");
		c->fail =
		    sh_errf(c->err, c->errlen, SH_EIO,
			    "etcd %s: the watch was cancelled: %s", c->ep, msg);
		return SH_OK;
	}
	const cJSON *evs = cJSON_GetObjectItemCaseSensitive(res, "events");
	if (evs && !cJSON_IsArray(evs))
		goto corrupt;
	if (cJSON_GetArraySize(evs) == 0)
		return SH_OK;
	/* Events come in revision order from start_revision: the first is
	 * the first change after after_revision. */
	const cJSON *ev = cJSON_GetArrayItem(evs, 0);
	const cJSON *kv = cJSON_GetObjectItemCaseSensitive(ev, "kv");
	const cJSON *type = cJSON_GetObjectItemCaseSensitive(ev, "type");
	if (!cJSON_IsObject(kv))
		goto corrupt;
	if (type && !(cJSON_IsString(type) &&
		      (strcmp(type->valuestring, "PUT") == 0 ||
		       strcmp(type->valuestring, "DELETE") == 0)))
		goto corrupt;
	int rc = json_key_is(kv, "key", c->key);
	if (rc == SH_ENOMEM)
		return sh_errf(c->err, c->errlen, SH_ENOMEM, "out of memory");
	int64_t mod;
	if (rc || json_i64(kv, "mod_revision", &mod) || mod <= c->after)
		goto corrupt;
	c->done = true;
	c->fail = SH_OK;
	c->mod = mod;
	return SH_OK;
corrupt:
	return sh_errf(c->err, c->errlen, SH_ECORRUPT,
		       "etcd %s: a watch message that is not etcd's (canceled, "
		       "compact_revision, events[0].kv of the key with "
		       "mod_revision > %" PRId64 ")",
		       c->ep, c->after);
}

/*
 * Finds the complete JSON objects in c->buf from c->scan on, handles each
 * and keeps only the bytes of an unfinished one. Objects are framed by
 * their braces (outside strings), so a message split across writes, or
 * several in one, or with or without newlines between them, are all
 * read alike; the scan resumes where it stopped, so each byte is scanned
 * once. Returns SH_OK (c->done may be set) or an error with its message.
 */
static int watch_feed(etcd_call *c)
{
	size_t i = c->scan;
	for (; i < c->len && !c->done; i++) {
		char ch = c->buf[i];
		if (c->depth == 0) {
			if (ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t')
				continue;
			if (ch != '{')
				return sh_errf(c->err, c->errlen, SH_ECORRUPT,
					       "etcd %s: a watch stream that "
					       "is not JSON objects",
					       c->ep);
			c->start = i;
			c->depth = 1;
			continue;
		}
		if (c->in_str) {
			if (c->esc)
				c->esc = false;
			else if (ch == '\\')
				c->esc = true;
			else if (ch == '"')
				c->in_str = false;
			continue;
		}
		if (ch == '"')
			c->in_str = true;
		else if (ch == '{' || ch == '[')
			c->depth++;
		else if ((ch == '}' || ch == ']') && --c->depth == 0) {
			cJSON *m = cJSON_ParseWithLength(c->buf + c->start,
							 i + 1 - c->start);
			if (!cJSON_IsObject(m)) {
				cJSON_Delete(m);
				return sh_errf(c->err, c->errlen, SH_ECORRUPT,
					       "etcd %s: a watch message that "
					       "is not JSON",
					       c->ep);
			}
			int rc = watch_message(c, m);
			cJSON_Delete(m);
			if (rc)
				return rc;
		}
	}
	size_t keep = c->depth ? c->start : i;
	memmove(c->buf, c->buf + keep, c->len - keep);
	c->len -= keep;
	c->buf[c->len] = 0;
	c->start = 0;
	c->scan = i - keep;
	return SH_OK;
}

int sh_etcd_wait(sh_etcd *e, const char *key, int64_t after_revision,
		 int timeout_ms, int64_t *mod_revision, char *err,
		 size_t errlen)
{
	int rc = check_key(key, err, errlen);
	if (rc)
		return rc;
	if (after_revision < 0 || after_revision == INT64_MAX)
		return sh_errf(err, errlen, SH_EINVAL,
			       "etcd wait: after_revision %" PRId64
			       " out of range",
			       after_revision);
	if (timeout_ms <= 0)
		return sh_errf(err, errlen, SH_EINVAL,
			       "etcd wait: timeout_ms must be > 0, not %d",
			       timeout_ms);
	etcd_call c = {.err = err,
		       .errlen = errlen,
		       .watch = true,
		       .key = key,
		       .after = after_revision};
	char *body = NULL, *k = key64(key);
	size_t cap = k ? strlen(k) + 96 : 0;
	if (k)
		body = malloc(cap);
	if (!body) {
		rc = sh_errf(err, errlen, SH_ENOMEM, "out of memory");
		goto fail;
	}
	int blen = snprintf(body, cap,
			    "{\"create_request\":{\"key\":\"%s\","
			    "\"start_revision\":\"%" PRId64 "\"}}",
			    k, after_revision + 1);
	int connect_cap =
	    e->timeout_ms < timeout_ms ? e->timeout_ms : timeout_ms;
	rc = etcd_post(e, "/v3/watch", body, (size_t)blen,
		       now_ms() + timeout_ms, connect_cap, &c);
	if (rc == SH_ETIMEDOUT)
		rc = sh_errf(err, errlen, SH_ETIMEDOUT,
			     "etcd key %.*s: no change in %d ms", ETCD_QUOTE,
			     key, timeout_ms);
	else if (rc == SH_OK && c.done) {
		rc = c.fail;
		if (rc == SH_OK && mod_revision)
			*mod_revision = c.mod;
	} else if (rc == SH_OK && c.depth)
		rc = sh_errf(err, errlen, SH_ECORRUPT,
			     "etcd %s: the watch stream ended inside a "
			     "message",
			     c.ep);
	else if (rc == SH_OK)
		rc = sh_errf(err, errlen, SH_EIO,
			     "etcd %s: the watch stream ended before a change",
			     c.ep);
fail:
	free(body);
	free(k);
	free(c.buf);
	return rc;
}
