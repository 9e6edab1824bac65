/* Integration tests of the etcd client (router/etcd.h).
 *
 * Offline: the base64 codec, argument checks, an endpoint where nothing
 * listens, and fake HTTP servers on loopback that answer garbage, a
 * truncated body, 20 MiB, wrong JSON, or a watch stream split into tiny
 * writes. Live: a real etcd ($SHOAL_ETCD_BIN, default /usr/bin/etcd) on
 * free 127.0.0.1 ports with its data in a mkdtemp folder: get, cas,
 * revisions, binary values, watches, racing writers, endpoint lists.
 *
 * etcd is always stopped and its folder removed: in the group teardown,
 * in an atexit handler, and, should the test crash, by etcd itself
 * (PR_SET_PDEATHSIG) and by a reaper process that waits for the test to
 * die. Without etcd the offline tests run and the program exits 77 (a
 * skip for meson) unless one of them failed. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "error.h"
#include "etcd.h"

/* ---- Helpers ------------------------------------------------------------ */

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* A port on 127.0.0.1 that was free a moment ago. */
static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t al = sizeof(a);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) ||
	    getsockname(fd, (struct sockaddr *)&a, &al)) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	return ntohs(a.sin_port);
}

static int rm_one(const char *path, const struct stat *st, int flag,
		  struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

static void rmrf(const char *dir)
{
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- etcd, started and always stopped ------------------------------------ */

static struct {
	char dir[512];	 /* mkdtemp folder: data/ and etcd.log */
	pid_t pid;	 /* etcd */
	pid_t reaper;	 /* cleans up should this process die */
	int reaper_pipe; /* write end (see start_reaper) */
	char url[64];	 /* http://127.0.0.1:<client port> */
	sh_etcd *cli;	 /* a client of url */
} g = {.pid = -1, .reaper = -1, .reaper_pipe = -1};

static const char *etcd_bin(void)
{
	const char *b = getenv("SHOAL_ETCD_BIN");
	return b && *b ? b : "/usr/bin/etcd";
}

/* Messages to the reaper: 'p' and etcd's pid when it starts one, 'x'
 * for a clean stop. */
static void tell_reaper(char tag, pid_t pid)
{
	char m[1 + sizeof(pid_t)];
	m[0] = tag;
	memcpy(m + 1, &pid, sizeof(pid));
	if (g.reaper_pipe >= 0) {
		ssize_t w = write(g.reaper_pipe, m, sizeof(m));
		(void)w;
	}
}

static void etcd_stop(void)
{
	sh_etcd_close(g.cli);
	g.cli = NULL;
	/* The reaper first, told that all is well (not just the end of the
	 * pipe), so that it never kills etcd's pid once reaped. */
	if (g.reaper_pipe >= 0) {
		tell_reaper('x', 0);
		close(g.reaper_pipe);
		g.reaper_pipe = -1;
	}
	if (g.reaper > 0) {
		waitpid(g.reaper, NULL, 0);
		g.reaper = -1;
	}
	if (g.pid > 0) {
		kill(g.pid, SIGKILL);
		waitpid(g.pid, NULL, 0);
		g.pid = -1;
	}
	if (*g.dir) {
		rmrf(g.dir);
		*g.dir = 0;
	}
}

/* A process that reads a pipe until this test ends: 'x' means a clean
 * stop (etcd_stop does the rest); the end of the pipe without it means
 * the test died (a crash, a signal), and the reaper kills the last etcd
 * it was told of and removes the folder. Started before etcd, so no
 * moment of the test is left uncovered. */
static int start_reaper(void)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC))
		return -1;
	pid_t pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (pid == 0) {
		close(p[1]);
		pid_t etcd = -1;
		char m[1 + sizeof(pid_t)];
		for (;;) {
			ssize_t r = read(p[0], m, sizeof(m));
			if (r < 0 && errno == EINTR)
				continue;
			if (r != (ssize_t)sizeof(m))
				break;
			if (m[0] == 'x')
				_exit(0);
			memcpy(&etcd, m + 1, sizeof(etcd));
		}
		if (etcd > 0)
			kill(etcd, SIGKILL);
		/* etcd goes when killed (and by PR_SET_PDEATHSIG); give it
		 * a moment to let go of its files before they go. */
		for (int i = 0; i < 100 && etcd > 0 && kill(etcd, 0) == 0; i++)
			sleep_ms(10);
		rmrf(g.dir);
		_exit(0);
	}
	close(p[0]);
	g.reaper = pid;
	g.reaper_pipe = p[1];
	return 0;
}

static void print_log_tail(void)
{
	char path[600];
	snprintf(path, sizeof(path), "%s/etcd.log", g.dir);
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	static char buf[4096];
	fseek(f, 0, SEEK_END);
	long end = ftell(f);
	fseek(f, end > 4000 ? end - 4000 : 0, SEEK_SET);
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = 0;
	fclose(f);
	print_message("etcd log (tail):\n%s\n", buf);
}

/* One try at starting etcd on fresh ports; 0 when it answers. */
static int etcd_try_start(void)
{
	int cport = free_port(), pport = free_port();
	if (cport < 0 || pport < 0 || cport == pport)
		return -1;
	char data[600], log[600], curl_[64], purl[64], cluster[96];
	snprintf(data, sizeof(data), "%s/data", g.dir);
	snprintf(log, sizeof(log), "%s/etcd.log", g.dir);
	snprintf(curl_, sizeof(curl_), "http://127.0.0.1:%d", cport);
	snprintf(purl, sizeof(purl), "http://127.0.0.1:%d", pport);
	snprintf(cluster, sizeof(cluster), "shoal-test=%s", purl);
	rmrf(data);
	const char *argv[] = {etcd_bin(),   "--name",
			      "shoal-test", "--data-dir",
			      data,	    "--listen-client-urls",
			      curl_,	    "--advertise-client-urls",
			      curl_,	    "--listen-peer-urls",
			      purl,	    "--initial-advertise-peer-urls",
			      purl,	    "--initial-cluster",
			      cluster,	    "--initial-cluster-state",
			      "new",	    "--initial-cluster-token",
			      "shoal-test", "--logger",
			      "zap",	    "--log-outputs",
			      "stderr",	    NULL};
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	g.pid = pid;
	tell_reaper('p', pid);
	snprintf(g.url, sizeof(g.url), "%s", curl_);
	char err[256];
	if (sh_etcd_open(g.url, 2000, &g.cli, err, sizeof(err)))
		return -1;
	/* Up to 30 s: the first start writes its WAL and elects itself. */
	for (int64_t end = now_ms() + 30000; now_ms() < end; sleep_ms(50)) {
		if (waitpid(g.pid, NULL, WNOHANG) == g.pid) {
			g.pid = -1;
			break;
		}
		sh_etcd_kv kv;
		int rc = sh_etcd_get(g.cli, "/shoal/test/probe", &kv, err,
				     sizeof(err));
		sh_etcd_kv_clear(&kv);
		if (rc == SH_ENOTFOUND)
			return 0;
	}
	print_message("etcd on %s did not answer: %s\n", g.url, err);
	print_log_tail();
	sh_etcd_close(g.cli);
	g.cli = NULL;
	if (g.pid > 0) {
		kill(g.pid, SIGKILL);
		waitpid(g.pid, NULL, 0);
		g.pid = -1;
	}
	return -1;
}

static int live_setup(void **state)
{
	const char *base = getenv("TMPDIR");
	snprintf(g.dir, sizeof(g.dir), "%s/shoal-etcd-XXXXXX",
		 base && *base ? base : "/tmp");
	if (!mkdtemp(g.dir)) {
		*g.dir = 0;
		return -1;
	}
	if (start_reaper())
		return -1;
	/* A port taken between free_port and etcd's bind: try again. */
	for (int i = 0; i < 3; i++)
		if (etcd_try_start() == 0)
			return 0;
	return -1;
}

static int live_teardown(void **state)
{
	etcd_stop();
	return 0;
}

/* A raw POST to the live etcd, for what the client does not do
 * (compaction, delete). Returns the HTTP status, or -1. */
static long raw_post(const char *path, const char *body)
{
	char url[128];
	snprintf(url, sizeof(url), "%s%s", g.url, path);
	CURL *h = curl_easy_init();
	if (!h)
		return -1;
	FILE *null = fopen("/dev/null", "w");
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(h, CURLOPT_PROXY, "");
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 5000L);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, null);
	long status = -1;
	if (curl_easy_perform(h) == CURLE_OK)
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(h);
	if (null)
		fclose(null);
	return status;
}

static void b64(const char *s, char *out, size_t cap)
{
	assert_int_equal(sh_etcd_b64_encode(s, strlen(s), out, cap, NULL),
			 SH_OK);
}

/* ---- A fake HTTP server on loopback ---------------------------------------
 */

/* Answers each connection with head, fill_len bytes of fill, then tail,
 * in writes of piece bytes (0: as large as possible) 2 ms apart, and
 * closes. Its configuration is set before the thread starts and never
 * changes. */
typedef struct fake {
	const char *head;
	size_t fill_len;
	char fill;
	const char *tail;
	size_t piece;
	int delay_ms; /* before answering */
	int fd, port;
	atomic_bool stop;
	pthread_t th;
	char url[64];
} fake;

static void send_all(int fd, const char *p, size_t n, size_t piece)
{
	while (n) {
		size_t k = piece && piece < n ? piece : n;
		ssize_t w = send(fd, p, k, MSG_NOSIGNAL);
		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
		if (piece)
			sleep_ms(2);
	}
}

/* Reads one request: headers, then Content-Length bytes (so that closing
 * does not reset the connection before the client has read the answer). */
static void read_request(int fd)
{
	static _Thread_local char buf[1 << 16];
	size_t n = 0;
	char *end = NULL;
	while (!end && n < sizeof(buf) - 1) {
		ssize_t r = recv(fd, buf + n, sizeof(buf) - 1 - n, 0);
		if (r <= 0)
			return;
		n += (size_t)r;
		buf[n] = 0;
		end = strstr(buf, "\r\n\r\n");
	}
	if (!end)
		return;
	size_t want = 0;
	const char *cl = strcasestr(buf, "\r\nContent-Length:");
	if (cl)
		want = strtoul(cl + 17, NULL, 10);
	size_t have = n - (size_t)(end + 4 - buf);
	while (have < want) {
		ssize_t r = recv(fd, buf, sizeof(buf), 0);
		if (r <= 0)
			return;
		have += (size_t)r;
	}
}

static void *fake_main(void *arg)
{
	fake *f = arg;
	while (!atomic_load(&f->stop)) {
		struct pollfd p = {.fd = f->fd, .events = POLLIN};
		if (poll(&p, 1, 20) <= 0)
			continue;
		int c = accept(f->fd, NULL, NULL);
		if (c < 0)
			continue;
		int one = 1;
		setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		read_request(c);
		sleep_ms(f->delay_ms);
		send_all(c, f->head, strlen(f->head), f->piece);
		static _Thread_local char blk[1 << 16];
		memset(blk, f->fill, sizeof(blk));
		for (size_t left = f->fill_len; left;) {
			size_t k = left < sizeof(blk) ? left : sizeof(blk);
			ssize_t w = send(c, blk, k, MSG_NOSIGNAL);
			if (w <= 0)
				break;
			left -= (size_t)w;
		}
		if (f->tail)
			send_all(c, f->tail, strlen(f->tail), f->piece);
		close(c);
	}
	return NULL;
}

static void fake_start(fake *f)
{
	f->fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(f->fd >= 0);
	struct sockaddr_in a = {.sin_family = AF_INET};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t al = sizeof(a);
	assert_int_equal(bind(f->fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(f->fd, 16), 0);
	assert_int_equal(getsockname(f->fd, (struct sockaddr *)&a, &al), 0);
	f->port = ntohs(a.sin_port);
	snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%d", f->port);
	atomic_init(&f->stop, false);
	assert_int_equal(pthread_create(&f->th, NULL, fake_main, f), 0);
}

static void fake_stop(fake *f)
{
	atomic_store(&f->stop, true);
	pthread_join(f->th, NULL);
	close(f->fd);
}

/* Runs get, cas and wait against a fake answering as f says; returns the
 * three codes (and checks each call left no value behind). */
static void fake_calls(fake *f, int rc[3], char *err, size_t errlen)
{
	fake_start(f);
	sh_etcd *e;
	assert_int_equal(sh_etcd_open(f->url, 5000, &e, err, errlen), SH_OK);
	sh_etcd_kv kv;
	rc[0] = sh_etcd_get(e, "k", &kv, err, errlen);
	if (rc[0] != SH_OK) {
		assert_null(kv.value);
	}
	sh_etcd_kv_clear(&kv);
	rc[1] = sh_etcd_cas(e, "k", "v", 1, 0, NULL, err, errlen);
	rc[2] = sh_etcd_wait(e, "k", 0, 5000, NULL, err, errlen);
	sh_etcd_close(e);
	fake_stop(f);
}

#define HTTP_OK "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"

/* ---- Offline tests ------------------------------------------------------ */

static void test_b64_matches_rfc4648_vectors(void **state)
{
	const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
	const char *out[] = {"",	 "Zg==",     "Zm8=",	"Zm9v",
			     "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
	for (size_t i = 0; i < 7; i++) {
		char enc[16], dec[16];
		size_t n;
		assert_int_equal(sh_etcd_b64_encode(in[i], strlen(in[i]), enc,
						    sizeof(enc), &n),
				 SH_OK);
		assert_string_equal(enc, out[i]);
		assert_int_equal(n, strlen(out[i]));
		assert_int_equal(sh_etcd_b64_encoded_len(strlen(in[i])), n);
		assert_int_equal(
		    sh_etcd_b64_decode(enc, n, dec, sizeof(dec), &n), SH_OK);
		assert_int_equal(n, strlen(in[i]));
		assert_memory_equal(dec, in[i], n);
		assert_int_equal(dec[n], 0);
	}
}

static void test_b64_round_trips_every_byte_and_length(void **state)
{
	unsigned char src[300], dec[301];
	char enc[401];
	uint32_t s = 12345;
	for (size_t len = 0; len <= sizeof(src); len++) {
		for (size_t i = 0; i < len; i++) {
			s = s * 1103515245u + 12345u;
			src[i] = len == 256 ? (unsigned char)i
					    : (unsigned char)(s >> 16);
		}
		size_t n, m;
		assert_int_equal(
		    sh_etcd_b64_encode(src, len, enc, sizeof(enc), &n), SH_OK);
		assert_int_equal(
		    sh_etcd_b64_decode(enc, n, dec, sizeof(dec), &m), SH_OK);
		assert_int_equal(m, len);
		assert_memory_equal(dec, src, len);
	}
}

static void test_b64_decoder_rejects_bad_input(void **state)
{
	const char *bad[] = {
	    "Zm9",	/* not a multiple of 4 */
	    "Zm9v!A==", /* outside the alphabet */
	    "Zm 9v",	/* space */
	    "Z===",	/* three pads */
	    "====",	/* only pads */
	    "=Zm9",	/* pad first */
	    "Zm=v",	/* pad in the middle */
	    "Zg==Zm9v", /* pad before the end */
	    "Zh==",	/* unused bits set */
	    "Zm9=",	/* unused bits set */
	    "Zm9v-_==", /* URL alphabet */
	};
	char dec[16];
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(sh_etcd_b64_decode(bad[i], strlen(bad[i]), dec,
						    sizeof(dec), NULL),
				 SH_ECORRUPT);
	/* Embedded NUL: the length, not strlen, is the input. */
	assert_int_equal(sh_etcd_b64_decode("Zm\0v", 4, dec, sizeof(dec), NULL),
			 SH_ECORRUPT);
	/* Too small a buffer is said, never overrun. */
	char enc[4];
	assert_int_equal(sh_etcd_b64_encode("foo", 3, enc, 4, NULL),
			 SH_ETOOBIG);
	assert_int_equal(sh_etcd_b64_decode("Zm9v", 4, dec, 3, NULL),
			 SH_ETOOBIG);
}

static void test_open_rejects_malformed_endpoints(void **state)
{
	const char *bad[] = {"",
			     "127.0.0.1:2379",
			     "ftp://127.0.0.1:2379",
			     "http://",
			     "http://127.0.0.1:2379/v3",
			     "http://a:1,,http://b:2",
			     "http://a:1,",
			     "http://a b:1",
			     "http://user@a:1"};
	char err[256];
	sh_etcd *e = (sh_etcd *)1;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = 0;
		assert_int_equal(
		    sh_etcd_open(bad[i], 1000, &e, err, sizeof(err)),
		    SH_EINVAL);
		assert_null(e);
		assert_true(err[0]);
	}
	char many[2048] = "";
	for (int i = 0; i <= SH_ETCD_MAX_ENDPOINTS; i++)
		snprintf(many + strlen(many), sizeof(many) - strlen(many),
			 "%shttp://127.0.0.1:%d", i ? "," : "", 1000 + i);
	assert_int_equal(sh_etcd_open(many, 1000, &e, err, sizeof(err)),
			 SH_EINVAL);
	assert_int_equal(
	    sh_etcd_open("http://127.0.0.1:1", 0, &e, err, sizeof(err)),
	    SH_EINVAL);
	assert_int_equal(sh_etcd_open(" http://127.0.0.1:1/ , "
				      "https://localhost:2 ",
				      1000, &e, err, sizeof(err)),
			 SH_OK);
	/* Bad arguments of the calls, before any network. */
	sh_etcd_kv kv;
	assert_int_equal(sh_etcd_get(e, "", &kv, err, sizeof(err)), SH_EINVAL);
	assert_int_equal(sh_etcd_get(e, NULL, &kv, err, sizeof(err)),
			 SH_EINVAL);
	assert_int_equal(
	    sh_etcd_cas(e, "k", "v", 1, -1, NULL, err, sizeof(err)), SH_EINVAL);
	assert_int_equal(sh_etcd_cas(e, "k", "v", SH_ETCD_MAX_VALUE + 1, 0,
				     NULL, err, sizeof(err)),
			 SH_ETOOBIG);
	assert_int_equal(sh_etcd_wait(e, "k", 0, 0, NULL, err, sizeof(err)),
			 SH_EINVAL);
	assert_int_equal(sh_etcd_wait(e, "k", -1, 100, NULL, err, sizeof(err)),
			 SH_EINVAL);
	sh_etcd_close(e);
	sh_etcd_close(NULL);
	sh_etcd_kv_clear(NULL);
}

static void test_dead_endpoint_is_eio_naming_it_quickly(void **state)
{
	int port = free_port();
	char url[64], err[512];
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
	sh_etcd *e;
	assert_int_equal(sh_etcd_open(url, 5000, &e, err, sizeof(err)), SH_OK);
	int64_t t0 = now_ms();
	sh_etcd_kv kv;
	assert_int_equal(sh_etcd_get(e, "k", &kv, err, sizeof(err)), SH_EIO);
	assert_non_null(strstr(err, url));
	assert_null(kv.value);
	err[0] = 0;
	assert_int_equal(sh_etcd_cas(e, "k", "v", 1, 0, NULL, err, sizeof(err)),
			 SH_EIO);
	assert_non_null(strstr(err, url));
	err[0] = 0;
	assert_int_equal(sh_etcd_wait(e, "k", 0, 5000, NULL, err, sizeof(err)),
			 SH_EIO);
	assert_non_null(strstr(err, url));
	assert_true(now_ms() - t0 < 2000);
	sh_etcd_close(e);
}

static void test_garbage_body_is_ecorrupt(void **state)
{
	fake f = {.head = HTTP_OK "Content-Length: 23\r\n\r\n"
				  "this is not JSON at all"};
	int rc[3];
	char err[512];
	fake_calls(&f, rc, err, sizeof(err));
	assert_int_equal(rc[0], SH_ECORRUPT);
	assert_int_equal(rc[1], SH_ECORRUPT);
	assert_int_equal(rc[2], SH_ECORRUPT);
}

static void test_not_http_is_eio(void **state)
{
	fake f = {.head = "SSH-2.0-OpenSSH_9.2\r\nnonsense\r\n\r\n"};
	int rc[3];
	char err[512];
	fake_calls(&f, rc, err, sizeof(err));
	for (int i = 0; i < 3; i++)
		assert_true(rc[i] == SH_EIO || rc[i] == SH_ECORRUPT);
}

static void test_truncated_body_is_eio(void **state)
{
	fake f = {.head = HTTP_OK
		  "Content-Length: 1000\r\n\r\n"
		  "{\"header\":{\"revision\":\"5\"},\"kvs\":[{\"ke"};
	int rc[3];
	char err[512];
	fake_calls(&f, rc, err, sizeof(err));
	assert_int_equal(rc[0], SH_EIO);
	assert_int_equal(rc[1], SH_EIO);
	/* A watch stream cut inside a message. */
	assert_true(rc[2] == SH_EIO || rc[2] == SH_ECORRUPT);
}

static void test_20mib_body_is_refused(void **state)
{
	/* With a Content-Length: refused by its header. */
	fake f = {.head = HTTP_OK "Content-Length: 20971520\r\n\r\n"
				  "{\"header\":{\"revision\":\"5\"},\"x\":\"",
		  .fill = 'a',
		  .fill_len = 20u << 20};
	int rc[3];
	char err[512];
	fake_calls(&f, rc, err, sizeof(err));
	assert_int_equal(rc[0], SH_ECORRUPT);
	assert_int_equal(rc[1], SH_ECORRUPT);
	assert_int_equal(rc[2], SH_ECORRUPT);
	/* Without one (read until close), and one endless watch message. */
	fake g2 = {.head = HTTP_OK "Connection: close\r\n\r\n"
				   "{\"result\":{\"x\":\"",
		   .fill = 'a',
		   .fill_len = 20u << 20};
	fake_calls(&g2, rc, err, sizeof(err));
	assert_int_equal(rc[0], SH_ECORRUPT);
	assert_int_equal(rc[1], SH_ECORRUPT);
	assert_int_equal(rc[2], SH_ECORRUPT);
	/* Deep nesting is bounded too (cJSON's nesting limit). */
	fake g3 = {.head = HTTP_OK "Connection: close\r\n\r\n",
		   .fill = '[',
		   .fill_len = 4u << 20};
	fake_calls(&g3, rc, err, sizeof(err));
	assert_int_equal(rc[0], SH_ECORRUPT);
	assert_int_equal(rc[2], SH_ECORRUPT);
}

static void test_http_error_is_eio_with_its_message(void **state)
{
	const char *body = "{\"error\":\"boom\",\"message\":\"etcdserver: "
			   "boom\",\"code\":2}";
	char head[512];
	snprintf(head, sizeof(head),
		 "HTTP/1.1 500 Internal Server Error\r\n"
		 "Content-Type: application/json\r\n"
		 "Content-Length: %zu\r\n\r\n%s",
		 strlen(body), body);
	fake f = {.head = head};
	int rc[3];
	char err[512];
	fake_start(&f);
	sh_etcd *e;
	assert_int_equal(sh_etcd_open(f.url, 5000, &e, err, sizeof(err)),
			 SH_OK);
	sh_etcd_kv kv;
	rc[0] = sh_etcd_get(e, "k", &kv, err, sizeof(err));
	assert_int_equal(rc[0], SH_EIO);
	assert_non_null(strstr(err, "HTTP 500"));
	assert_non_null(strstr(err, "etcdserver: boom"));
	assert_non_null(strstr(err, f.url));
	sh_etcd_close(e);
	fake_stop(&f);
}

/* A server that takes the request and does not answer in time. */
static void test_no_answer_in_time_is_etimedout(void **state)
{
	fake f = {.head = HTTP_OK "Content-Length: 2\r\n\r\n{}",
		  .delay_ms = 1500};
	fake_start(&f);
	sh_etcd *e;
	char err[512];
	assert_int_equal(sh_etcd_open(f.url, 300, &e, err, sizeof(err)), SH_OK);
	int64_t t0 = now_ms();
	sh_etcd_kv kv;
	assert_int_equal(sh_etcd_get(e, "k", &kv, err, sizeof(err)),
			 SH_ETIMEDOUT);
	assert_non_null(strstr(err, f.url));
	int64_t took = now_ms() - t0;
	assert_true(took >= 250 && took < 1400);
	sh_etcd_close(e);
	fake_stop(&f);
}

/* JSON that is not what etcd sends, each a SH_ECORRUPT of get. */
static void test_wrong_json_is_ecorrupt(void **state)
{
	char k64[16], head[512];
	b64("k", k64, sizeof(k64));
	const char *bodies[] = {
	    "[]",
	    "{}",
	    "{\"header\":{}}",
	    "{\"header\":{\"revision\":\"abc\"}}",
	    "{\"header\":{\"revision\":\"-3\"}}",
	    "{\"header\":{\"revision\":\"99999999999999999999\"}}",
	    "{\"header\":{\"revision\":1.5}}",
	    "{\"header\":{\"revision\":true}}",
	    "{\"header\":{\"revision\":\"5\"},\"kvs\":{}}",
	    "{\"header\":{\"revision\":\"5\"},\"kvs\":[1]}",
	    "{\"header\":{\"revision\":\"5\"},\"kvs\":[{\"key\":\"!!!!\","
	    "\"mod_revision\":\"3\"}]}",
	    /* another key */
	    "{\"header\":{\"revision\":\"5\"},\"kvs\":[{\"key\":\"b3RoZXI=\","
	    "\"mod_revision\":\"3\"}]}",
	    /* mod_revision missing, or above the store's */
	    "{\"header\":{\"revision\":\"5\"},\"kvs\":[{\"key\":\"%s\"}]}",
	    "{\"header\":{\"revision\":\"5\"},\"kvs\":[{\"key\":\"%s\","
	    "\"mod_revision\":\"6\"}]}",
	    /* a value that is not base64 */
	    "{\"header\":{\"revision\":\"5\"},\"kvs\":[{\"key\":\"%s\","
	    "\"mod_revision\":\"3\",\"value\":\"abc\"}]}",
	    "{\"header\":{\"revision\":\"5\"},\"kvs\":[{\"key\":\"%s\","
	    "\"mod_revision\":\"3\",\"value\":7}]}",
	    /* two kvs for one key */
	    "{\"header\":{\"revision\":\"5\"},\"kvs\":[{\"key\":\"%s\","
	    "\"mod_revision\":\"3\"},{\"key\":\"%s\",\"mod_revision\":\"3\"}]}",
	};
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		char body[400];
		snprintf(body, sizeof(body), bodies[i], k64, k64);
		snprintf(head, sizeof(head),
			 HTTP_OK "Content-Length: %zu\r\n\r\n%s", strlen(body),
			 body);
		fake f = {.head = head};
		fake_start(&f);
		sh_etcd *e;
		char err[512];
		assert_int_equal(
		    sh_etcd_open(f.url, 5000, &e, err, sizeof(err)), SH_OK);
		sh_etcd_kv kv;
		int rc = sh_etcd_get(e, "k", &kv, err, sizeof(err));
		if (rc != SH_ECORRUPT)
			fail_msg("body %zu (%s): %s: %s", i, body,
				 sh_errname(rc), err);
		assert_null(kv.value);
		sh_etcd_close(e);
		fake_stop(&f);
	}
}

/* int64 as JSON numbers, not strings, and missing zero fields: read. */
static void test_numbers_and_missing_fields_are_read(void **state)
{
	char k64[16], head[512], body[300];
	b64("k", k64, sizeof(k64));
	snprintf(body, sizeof(body),
		 "{\"header\":{\"revision\":5},\"kvs\":[{\"key\":\"%s\","
		 "\"mod_revision\":3}],\"count\":1}",
		 k64);
	snprintf(head, sizeof(head), HTTP_OK "Content-Length: %zu\r\n\r\n%s",
		 strlen(body), body);
	fake f = {.head = head};
	fake_start(&f);
	sh_etcd *e;
	char err[512];
	assert_int_equal(sh_etcd_open(f.url, 5000, &e, err, sizeof(err)),
			 SH_OK);
	sh_etcd_kv kv;
	assert_int_equal(sh_etcd_get(e, "k", &kv, err, sizeof(err)), SH_OK);
	assert_int_equal(kv.len, 0); /* no "value": empty */
	assert_non_null(kv.value);
	assert_int_equal(kv.value[0], 0);
	assert_int_equal(kv.mod_revision, 3);
	assert_int_equal(kv.revision, 5);
	sh_etcd_kv_clear(&kv);
	/* A failed txn has no "succeeded". */
	assert_int_equal(sh_etcd_cas(e, "k", "v", 1, 3, NULL, err, sizeof(err)),
			 SH_ESTALE);
	sh_etcd_close(e);
	fake_stop(&f);
}

/* A watch stream in 3-byte writes, two messages without a newline between
 * them, then the event: the client reassembles it. */
static void test_watch_stream_split_in_tiny_writes_is_read(void **state)
{
	char k64[16], head[1024];
	b64("k", k64, sizeof(k64));
	snprintf(head, sizeof(head),
		 HTTP_OK "Connection: close\r\n\r\n"
			 "{\"result\":{\"header\":{\"revision\":\"5\"},"
			 "\"created\":true}}"
			 "{\"result\":{\"header\":{\"revision\":\"5\"},"
			 "\"x\":\"a } brace { and \\\" quote\"}}\n"
			 "\n{\"result\":{\"events\":[{\"kv\":{\"key\":\"%s\","
			 "\"mod_revision\":\"7\",\"value\":\"dg==\"}}]}}\n",
		 k64);
	fake f = {.head = head, .piece = 3};
	fake_start(&f);
	sh_etcd *e;
	char err[512];
	assert_int_equal(sh_etcd_open(f.url, 5000, &e, err, sizeof(err)),
			 SH_OK);
	int64_t mod = 0;
	int rc = sh_etcd_wait(e, "k", 4, 10000, &mod, err, sizeof(err));
	if (rc)
		fail_msg("%s: %s", sh_errname(rc), err);
	assert_int_equal(mod, 7);
	/* The same event, at or below after_revision: not etcd. */
	assert_int_equal(sh_etcd_wait(e, "k", 7, 10000, &mod, err, sizeof(err)),
			 SH_ECORRUPT);
	/* For another key: not etcd either. */
	assert_int_equal(
	    sh_etcd_wait(e, "k2", 4, 10000, &mod, err, sizeof(err)),
	    SH_ECORRUPT);
	sh_etcd_close(e);
	fake_stop(&f);
}

static void test_watch_stream_that_ends_or_cancels_is_eio(void **state)
{
	fake f = {.head = HTTP_OK "Connection: close\r\n\r\n"
				  "{\"result\":{\"created\":true}}\n"};
	int rc[3];
	char err[512];
	fake_calls(&f, rc, err, sizeof(err));
	assert_int_equal(rc[2], SH_EIO);
	fake c = {.head = HTTP_OK
		  "Connection: close\r\n\r\n"
		  "{\"result\":{\"created\":true}}\n"
		  "{\"result\":{\"canceled\":true,"
		  "\"cancel_reason\":\"mvcc: required revision is a "
		  "future revision\"}}\n"};
	fake_calls(&c, rc, err, sizeof(err));
	assert_int_equal(rc[2], SH_EIO);
	assert_non_null(strstr(err, "future revision"));
	fake x = {.head =
		      HTTP_OK "Connection: close\r\n\r\n"
			      "{\"error\":{\"grpc_code\":14,\"http_code\":503,"
			      "\"message\":\"etcdserver: no leader\"}}\n"};
	fake_calls(&x, rc, err, sizeof(err));
	assert_int_equal(rc[2], SH_EIO);
	assert_non_null(strstr(err, "no leader"));
}

/* ---- Live tests --------------------------------------------------------- */

static void test_get_missing_key_is_notfound_with_revision(void **state)
{
	sh_etcd_kv kv;
	char err[512];
	assert_int_equal(
	    sh_etcd_get(g.cli, "/t/missing", &kv, err, sizeof(err)),
	    SH_ENOTFOUND);
	assert_null(kv.value);
	assert_true(kv.revision >= 1);
	assert_int_equal(kv.mod_revision, 0);
}

static void test_cas_create_then_create_again_is_stale(void **state)
{
	char err[512];
	int64_t rev = 0;
	assert_int_equal(
	    sh_etcd_cas(g.cli, "/t/create", "a", 1, 0, &rev, err, sizeof(err)),
	    SH_OK);
	assert_true(rev > 1);
	int64_t rev2 = -1;
	assert_int_equal(
	    sh_etcd_cas(g.cli, "/t/create", "b", 1, 0, &rev2, err, sizeof(err)),
	    SH_ESTALE);
	assert_int_equal(rev2, -1);
	sh_etcd_kv kv;
	assert_int_equal(sh_etcd_get(g.cli, "/t/create", &kv, err, sizeof(err)),
			 SH_OK);
	assert_int_equal(kv.len, 1);
	assert_string_equal(kv.value, "a");
	assert_int_equal(kv.mod_revision, rev);
	assert_true(kv.revision >= rev);
	sh_etcd_kv_clear(&kv);
	assert_null(kv.value);
}

static void test_cas_with_current_revision_wins_stale_one_loses(void **state)
{
	char err[512];
	const char *doc = "{\"format\":1,\"epoch\":1}";
	int64_t r1, r2;
	assert_int_equal(sh_etcd_cas(g.cli, "/t/map", doc, strlen(doc), 0, &r1,
				     err, sizeof(err)),
			 SH_OK);
	sh_etcd_kv kv;
	assert_int_equal(sh_etcd_get(g.cli, "/t/map", &kv, err, sizeof(err)),
			 SH_OK);
	assert_int_equal(kv.len, strlen(doc));
	assert_memory_equal(kv.value, doc, kv.len);
	assert_int_equal(kv.mod_revision, r1);
	sh_etcd_kv_clear(&kv);
	const char *doc2 = "{\"format\":1,\"epoch\":2}";
	assert_int_equal(sh_etcd_cas(g.cli, "/t/map", doc2, strlen(doc2), r1,
				     &r2, err, sizeof(err)),
			 SH_OK);
	assert_true(r2 > r1);
	/* r1 is stale now. */
	assert_int_equal(sh_etcd_cas(g.cli, "/t/map", doc, strlen(doc), r1,
				     NULL, err, sizeof(err)),
			 SH_ESTALE);
	assert_true(err[0]);
	assert_int_equal(sh_etcd_get(g.cli, "/t/map", &kv, err, sizeof(err)),
			 SH_OK);
	assert_int_equal(kv.mod_revision, r2);
	assert_memory_equal(kv.value, doc2, kv.len);
	sh_etcd_kv_clear(&kv);
}

static void test_binary_100k_and_empty_values_round_trip(void **state)
{
	size_t n = 100 * 1024;
	unsigned char *v = malloc(n);
	assert_non_null(v);
	for (size_t i = 0; i < n; i++)
		v[i] = (unsigned char)(i * 7 + (i >> 8));
	v[0] = 0;
	v[n / 2] = 0;
	v[n - 1] = 0;
	char err[512];
	int64_t rev;
	assert_int_equal(
	    sh_etcd_cas(g.cli, "/t/bin", v, n, 0, &rev, err, sizeof(err)),
	    SH_OK);
	sh_etcd_kv kv;
	assert_int_equal(sh_etcd_get(g.cli, "/t/bin", &kv, err, sizeof(err)),
			 SH_OK);
	assert_int_equal(kv.len, n);
	assert_memory_equal(kv.value, v, n);
	assert_int_equal(kv.value[n], 0);
	assert_int_equal(kv.mod_revision, rev);
	/* Empty (the gateway omits the value then), NULL allowed. */
	assert_int_equal(sh_etcd_cas(g.cli, "/t/bin", NULL, 0, kv.mod_revision,
				     &rev, err, sizeof(err)),
			 SH_OK);
	sh_etcd_kv_clear(&kv);
	assert_int_equal(sh_etcd_get(g.cli, "/t/bin", &kv, err, sizeof(err)),
			 SH_OK);
	assert_int_equal(kv.len, 0);
	assert_non_null(kv.value);
	assert_int_equal(kv.mod_revision, rev);
	sh_etcd_kv_clear(&kv);
	/* A key with bytes JSON would need to escape. */
	const char *key = "/t/\"quoted\"\\ key\n";
	assert_int_equal(
	    sh_etcd_cas(g.cli, key, "x", 1, 0, &rev, err, sizeof(err)), SH_OK);
	assert_int_equal(sh_etcd_get(g.cli, key, &kv, err, sizeof(err)), SH_OK);
	assert_string_equal(kv.value, "x");
	sh_etcd_kv_clear(&kv);
	free(v);
}

typedef struct writer {
	const char *key;
	int delay_ms;
	int64_t expect, got;
	int rc;
	char err[256];
} writer;

static void *writer_main(void *arg)
{
	writer *w = arg;
	sleep_ms(w->delay_ms);
	w->rc = sh_etcd_cas(g.cli, w->key, "changed", 7, w->expect, &w->got,
			    w->err, sizeof(w->err));
	return NULL;
}

static void test_wait_sees_cas_from_another_thread(void **state)
{
	char err[512];
	int64_t r0;
	assert_int_equal(
	    sh_etcd_cas(g.cli, "/t/watch", "v0", 2, 0, &r0, err, sizeof(err)),
	    SH_OK);
	sh_etcd_kv kv;
	assert_int_equal(sh_etcd_get(g.cli, "/t/watch", &kv, err, sizeof(err)),
			 SH_OK);
	writer w = {.key = "/t/watch", .delay_ms = 200, .expect = r0};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, writer_main, &w), 0);
	int64_t t0 = now_ms(), mod = 0;
	int rc = sh_etcd_wait(g.cli, "/t/watch", kv.revision, 10000, &mod, err,
			      sizeof(err));
	int64_t took = now_ms() - t0;
	pthread_join(th, NULL);
	if (rc)
		fail_msg("wait: %s: %s", sh_errname(rc), err);
	assert_int_equal(w.rc, SH_OK);
	assert_int_equal(mod, w.got);
	assert_true(took >= 150 && took < 5000);
	sh_etcd_kv_clear(&kv);
}

static void test_wait_returns_at_once_for_an_earlier_change(void **state)
{
	char err[512];
	int64_t r1, r2, mod = 0;
	assert_int_equal(
	    sh_etcd_cas(g.cli, "/t/early", "a", 1, 0, &r1, err, sizeof(err)),
	    SH_OK);
	assert_int_equal(
	    sh_etcd_cas(g.cli, "/t/early", "b", 1, r1, &r2, err, sizeof(err)),
	    SH_OK);
	int64_t t0 = now_ms();
	/* Both changes are after r1 - 1: the first of them is reported. */
	assert_int_equal(sh_etcd_wait(g.cli, "/t/early", r1 - 1, 10000, &mod,
				      err, sizeof(err)),
			 SH_OK);
	assert_int_equal(mod, r1);
	assert_int_equal(
	    sh_etcd_wait(g.cli, "/t/early", r1, 10000, &mod, err, sizeof(err)),
	    SH_OK);
	assert_int_equal(mod, r2);
	assert_true(now_ms() - t0 < 2000);
}

static void test_wait_times_out_when_nothing_changes(void **state)
{
	char err[512];
	sh_etcd_kv kv;
	assert_int_equal(sh_etcd_get(g.cli, "/t/quiet", &kv, err, sizeof(err)),
			 SH_ENOTFOUND);
	int64_t t0 = now_ms(), mod = -1;
	assert_int_equal(sh_etcd_wait(g.cli, "/t/quiet", kv.revision, 300, &mod,
				      err, sizeof(err)),
			 SH_ETIMEDOUT);
	int64_t took = now_ms() - t0;
	assert_true(took >= 250 && took < 3000);
	assert_int_equal(mod, -1);
	assert_non_null(strstr(err, "300 ms"));
}

static void test_wait_sees_a_delete(void **state)
{
	char err[512], k64[64], body[128];
	int64_t r1, mod = 0;
	assert_int_equal(
	    sh_etcd_cas(g.cli, "/t/del", "a", 1, 0, &r1, err, sizeof(err)),
	    SH_OK);
	b64("/t/del", k64, sizeof(k64));
	snprintf(body, sizeof(body), "{\"key\":\"%s\"}", k64);
	assert_int_equal(raw_post("/v3/kv/deleterange", body), 200);
	assert_int_equal(
	    sh_etcd_wait(g.cli, "/t/del", r1, 10000, &mod, err, sizeof(err)),
	    SH_OK);
	assert_true(mod > r1);
	sh_etcd_kv kv;
	assert_int_equal(sh_etcd_get(g.cli, "/t/del", &kv, err, sizeof(err)),
			 SH_ENOTFOUND);
	assert_true(kv.revision >= mod);
	/* Gone: create (expect 0) works again. */
	assert_int_equal(
	    sh_etcd_cas(g.cli, "/t/del", "b", 1, 0, NULL, err, sizeof(err)),
	    SH_OK);
}

#define RACERS 8
#define ROUNDS 20

typedef struct racer {
	pthread_barrier_t *go;
	int64_t expect, got;
	int id, rc;
	char err[256];
} racer;

static void *racer_main(void *arg)
{
	racer *r = arg;
	char val[24];
	snprintf(val, sizeof(val), "racer-%d", r->id);
	pthread_barrier_wait(r->go);
	r->rc = sh_etcd_cas(g.cli, "/t/race", val, strlen(val), r->expect,
			    &r->got, r->err, sizeof(r->err));
	return NULL;
}

static void test_racing_cas_on_one_revision_exactly_one_wins(void **state)
{
	char err[512];
	int64_t rev = 0;
	for (int round = 0; round < ROUNDS; round++) {
		pthread_barrier_t go;
		pthread_barrier_init(&go, NULL, RACERS);
		racer r[RACERS];
		pthread_t th[RACERS];
		for (int i = 0; i < RACERS; i++) {
			r[i] = (racer){.go = &go, .expect = rev, .id = i};
			assert_int_equal(
			    pthread_create(&th[i], NULL, racer_main, &r[i]), 0);
		}
		int wins = 0, winner = -1;
		for (int i = 0; i < RACERS; i++) {
			pthread_join(th[i], NULL);
			if (r[i].rc == SH_OK) {
				wins++;
				winner = i;
			} else if (r[i].rc != SH_ESTALE) {
				fail_msg("racer %d: %s: %s", i,
					 sh_errname(r[i].rc), r[i].err);
			}
		}
		pthread_barrier_destroy(&go);
		assert_int_equal(wins, 1);
		sh_etcd_kv kv;
		assert_int_equal(
		    sh_etcd_get(g.cli, "/t/race", &kv, err, sizeof(err)),
		    SH_OK);
		char want[24];
		snprintf(want, sizeof(want), "racer-%d", winner);
		assert_string_equal(kv.value, want);
		assert_int_equal(kv.mod_revision, r[winner].got);
		rev = kv.mod_revision;
		sh_etcd_kv_clear(&kv);
	}
}

static void test_list_with_a_dead_endpoint_first_works(void **state)
{
	char list[160], err[512];
	int dead = free_port();
	snprintf(list, sizeof(list), "http://127.0.0.1:%d, %s", dead, g.url);
	sh_etcd *e;
	assert_int_equal(sh_etcd_open(list, 5000, &e, err, sizeof(err)), SH_OK);
	int64_t rev, mod = 0;
	assert_int_equal(
	    sh_etcd_cas(e, "/t/list", "a", 1, 0, &rev, err, sizeof(err)),
	    SH_OK);
	sh_etcd_kv kv;
	assert_int_equal(sh_etcd_get(e, "/t/list", &kv, err, sizeof(err)),
			 SH_OK);
	assert_string_equal(kv.value, "a");
	assert_int_equal(
	    sh_etcd_wait(e, "/t/list", rev - 1, 5000, &mod, err, sizeof(err)),
	    SH_OK);
	assert_int_equal(mod, rev);
	sh_etcd_kv_clear(&kv);
	sh_etcd_close(e);
	/* All dead: EIO naming each. */
	int dead2 = free_port();
	snprintf(list, sizeof(list), "http://127.0.0.1:%d,http://127.0.0.1:%d",
		 dead, dead2);
	assert_int_equal(sh_etcd_open(list, 5000, &e, err, sizeof(err)), SH_OK);
	assert_int_equal(sh_etcd_get(e, "/t/list", &kv, err, sizeof(err)),
			 SH_EIO);
	char u1[64], u2[64];
	snprintf(u1, sizeof(u1), "127.0.0.1:%d", dead);
	snprintf(u2, sizeof(u2), "127.0.0.1:%d", dead2);
	assert_non_null(strstr(err, u1));
	assert_non_null(strstr(err, u2));
	sh_etcd_close(e);
}

/* A member that takes requests and fails them (as one cut off from its
 * quorum does): the call fails, the next one starts at the next member. */
static void test_endpoint_that_failed_is_not_asked_first_next(void **state)
{
	const char *body = "{\"error\":\"etcdserver: no leader\","
			   "\"message\":\"etcdserver: no leader\",\"code\":14}";
	char head[512], list[160], err[512];
	snprintf(head, sizeof(head),
		 "HTTP/1.1 503 Service Unavailable\r\n"
		 "Content-Length: %zu\r\n\r\n%s",
		 strlen(body), body);
	fake f = {.head = head};
	fake_start(&f);
	snprintf(list, sizeof(list), "%s,%s", f.url, g.url);
	sh_etcd *e;
	assert_int_equal(sh_etcd_open(list, 5000, &e, err, sizeof(err)), SH_OK);
	sh_etcd_kv kv;
	assert_int_equal(sh_etcd_get(e, "/t/missing", &kv, err, sizeof(err)),
			 SH_EIO);
	assert_non_null(strstr(err, "no leader"));
	assert_non_null(strstr(err, f.url));
	assert_int_equal(sh_etcd_get(e, "/t/missing", &kv, err, sizeof(err)),
			 SH_ENOTFOUND);
	/* It stays with the member that answered. */
	assert_int_equal(sh_etcd_get(e, "/t/missing", &kv, err, sizeof(err)),
			 SH_ENOTFOUND);
	sh_etcd_close(e);
	fake_stop(&f);
}

/* Last of the live tests: it compacts the history the others watch. */
static void test_wait_on_a_compacted_revision_returns_ok(void **state)
{
	char err[512], body[64];
	int64_t r1, r2, mod = -1;
	assert_int_equal(
	    sh_etcd_cas(g.cli, "/t/compact", "a", 1, 0, &r1, err, sizeof(err)),
	    SH_OK);
	assert_int_equal(
	    sh_etcd_cas(g.cli, "/t/compact", "b", 1, r1, &r2, err, sizeof(err)),
	    SH_OK);
	snprintf(body, sizeof(body), "{\"revision\":\"%lld\"}", (long long)r2);
	assert_int_equal(raw_post("/v3/kv/compaction", body), 200);
	int64_t t0 = now_ms();
	assert_int_equal(sh_etcd_wait(g.cli, "/t/compact", r1 - 1, 10000, &mod,
				      err, sizeof(err)),
			 SH_OK);
	assert_int_equal(mod, 0);
	assert_true(now_ms() - t0 < 2000);
}

static void cleanup_at_exit(void)
{
	etcd_stop();
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	atexit(cleanup_at_exit);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	const struct CMUnitTest offline[] = {
	    cmocka_unit_test(test_b64_matches_rfc4648_vectors),
	    cmocka_unit_test(test_b64_round_trips_every_byte_and_length),
	    cmocka_unit_test(test_b64_decoder_rejects_bad_input),
	    cmocka_unit_test(test_open_rejects_malformed_endpoints),
	    cmocka_unit_test(test_dead_endpoint_is_eio_naming_it_quickly),
	    cmocka_unit_test(test_garbage_body_is_ecorrupt),
	    cmocka_unit_test(test_not_http_is_eio),
	    cmocka_unit_test(test_truncated_body_is_eio),
	    cmocka_unit_test(test_20mib_body_is_refused),
	    cmocka_unit_test(test_http_error_is_eio_with_its_message),
	    cmocka_unit_test(test_no_answer_in_time_is_etimedout),
	    cmocka_unit_test(test_wrong_json_is_ecorrupt),
	    cmocka_unit_test(test_numbers_and_missing_fields_are_read),
	    cmocka_unit_test(test_watch_stream_split_in_tiny_writes_is_read),
	    cmocka_unit_test(test_watch_stream_that_ends_or_cancels_is_eio),
	};
	const struct CMUnitTest live[] = {
	    cmocka_unit_test(test_get_missing_key_is_notfound_with_revision),
	    cmocka_unit_test(test_cas_create_then_create_again_is_stale),
	    cmocka_unit_test(
		test_cas_with_current_revision_wins_stale_one_loses),
	    cmocka_unit_test(test_binary_100k_and_empty_values_round_trip),
	    cmocka_unit_test(test_wait_sees_cas_from_another_thread),
	    cmocka_unit_test(test_wait_returns_at_once_for_an_earlier_change),
	    cmocka_unit_test(test_wait_times_out_when_nothing_changes),
	    cmocka_unit_test(test_wait_sees_a_delete),
	    cmocka_unit_test(test_racing_cas_on_one_revision_exactly_one_wins),
	    cmocka_unit_test(test_list_with_a_dead_endpoint_first_works),
	    cmocka_unit_test(test_endpoint_that_failed_is_not_asked_first_next),
	    cmocka_unit_test(test_wait_on_a_compacted_revision_returns_ok),
	};
	int failed =
	    cmocka_run_group_tests_name("etcd_offline", offline, NULL, NULL);
	if (failed)
		return failed;
	if (access(etcd_bin(), X_OK) != 0) {
		printf("skip: no etcd at %s (apt-get install etcd-server)\n",
		       etcd_bin());
		return 77;
	}
	return cmocka_run_group_tests_name("etcd_live", live, live_setup,
					   live_teardown);
}
