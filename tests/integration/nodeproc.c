/* See nodeproc.h. */
#include "nodeproc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "error.h"

void np_tmpdir(char *buf, size_t cap)
{
	const char *base = getenv("TMPDIR");
	snprintf(buf, cap, "%s/shoal-test-XXXXXX",
		 base && *base ? base : "/tmp");
	if (!mkdtemp(buf))
		fail_msg("mkdtemp: %s", strerror(errno));
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

void np_rmrf(const char *dir)
{
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

void np_sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

double np_now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int read_ready(nodeproc *p)
{
	FILE *f = fopen(p->ready, "r");
	if (!f)
		return -1;
	char line[512];
	int got = 0;
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = 0;
		if (strncmp(line, "listen=", 7) == 0) {
			snprintf(p->url, sizeof(p->url), "%s", line + 7);
			got++;
		} else if (strncmp(line, "metrics=", 8) == 0) {
			snprintf(p->metrics, sizeof(p->metrics), "%s",
				 line + 8);
		}
	}
	fclose(f);
	return got || *p->metrics ? 0 : -1;
}

int np_start(nodeproc *p, const char *data_dir, const char *const *extra)
{
	return np_start_bin(p, "SHOAL_NODE_BIN", data_dir, extra);
}

int np_start_bin(nodeproc *p, const char *bin_env, const char *data_dir,
		 const char *const *extra)
{
	const char *args[64];
	int a = 0;
	args[a++] = "--listen";
	args[a++] = "tcp://127.0.0.1:0";
	args[a++] = "--data-dir";
	args[a++] = data_dir;
	args[a++] = "--threads";
	args[a++] = "4";
	for (int i = 0; extra && extra[i] && a < 63; i++)
		args[a++] = extra[i];
	args[a] = NULL;
	return np_spawn(p, bin_env, data_dir, args);
}

int np_spawn(nodeproc *p, const char *bin_env, const char *name,
	     const char *const *args)
{
	const char *bin = getenv(bin_env);
	if (!bin)
		fail_msg("%s is not set", bin_env);
	memset(p, 0, sizeof(*p));
	snprintf(p->data_dir, sizeof(p->data_dir), "%s", name);
	snprintf(p->ready, sizeof(p->ready), "%s.ready", name);
	snprintf(p->log, sizeof(p->log), "%s.log", name);
	unlink(p->ready);
	const char *argv[72];
	int a = 0;
	argv[a++] = bin;
	argv[a++] = "--metrics";
	argv[a++] = "127.0.0.1:0";
	argv[a++] = "--ready-file";
	argv[a++] = p->ready;
	for (int i = 0; args && args[i] && a < 70; i++)
		argv[a++] = args[i];
	argv[a] = NULL;
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		int fd = open(p->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (fd >= 0) {
			dup2(fd, 2);
			dup2(fd, 1);
			close(fd);
		}
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	p->pid = pid;
	for (int waited = 0; waited < 60000; waited += 10) {
		if (read_ready(p) == 0)
			return 0;
		int st;
		if (waitpid(pid, &st, WNOHANG) == pid) {
			p->pid = 0;
			print_error("%s exited during start (see %s)\n", bin,
				    p->log);
			return -1;
		}
		np_sleep_ms(10);
	}
	np_stop(p, SIGKILL);
	return -1;
}

int np_stop(nodeproc *p, int sig)
{
	if (p->pid <= 0)
		return -1;
	kill(p->pid, sig);
	int st = -1;
	for (int waited = 0; waited < 20000; waited += 5) {
		if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
			p->pid = 0;
			return st;
		}
		np_sleep_ms(5);
	}
	kill(p->pid, SIGKILL);
	waitpid(p->pid, &st, 0);
	p->pid = 0;
	return -1;
}

/* A TCP port on 127.0.0.1 that was free a moment ago. */
static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	int port = -1;
	if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
		port = ntohs(sa.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

int np_start_etcd(nodeproc *p, const char *dir)
{
	const char *bin = getenv("SHOAL_ETCD_BIN");
	if (!bin || access(bin, X_OK) != 0)
		return -1;
	for (int attempt = 0; attempt < 3; attempt++) {
		int cport = free_port(), pport = free_port();
		if (cport < 0 || pport < 0 || cport == pport)
			continue;
		memset(p, 0, sizeof(*p));
		snprintf(p->data_dir, sizeof(p->data_dir), "%s/data", dir);
		snprintf(p->log, sizeof(p->log), "%s/etcd.log", dir);
		snprintf(p->url, sizeof(p->url), "http://127.0.0.1:%d", cport);
		snprintf(p->metrics, sizeof(p->metrics), "%s", p->url);
		char purl[64], cluster[96];
		snprintf(purl, sizeof(purl), "http://127.0.0.1:%d", pport);
		snprintf(cluster, sizeof(cluster), "shoal-test=%s", purl);
		np_rmrf(p->data_dir);
		const char *argv[] = {
		    bin,	  "--name",
		    "shoal-test", "--data-dir",
		    p->data_dir,  "--listen-client-urls",
		    p->url,	  "--advertise-client-urls",
		    p->url,	  "--listen-peer-urls",
		    purl,	  "--initial-advertise-peer-urls",
		    purl,	  "--initial-cluster",
		    cluster,	  NULL};
		pid_t parent = getpid();
		pid_t pid = fork();
		if (pid < 0)
			return -1;
		if (pid == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() != parent)
				_exit(127);
			int fd =
			    open(p->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
			if (fd >= 0) {
				dup2(fd, 1);
				dup2(fd, 2);
				close(fd);
			}
			execv(bin, (char *const *)argv);
			_exit(127);
		}
		p->pid = pid;
		/* Up to 30 s: the first start writes its WAL and elects
		 * itself. */
		for (int waited = 0; waited < 30000; waited += 50) {
			int st;
			char *body = np_http_get(p, "/health", &st);
			bool ok = body && strstr(body, "\"health\":\"true\"");
			free(body);
			if (ok)
				return 0;
			if (waitpid(pid, &st, WNOHANG) == pid) {
				p->pid = 0;
				break;
			}
			np_sleep_ms(50);
		}
		np_stop(p, SIGKILL);
	}
	return -1;
}

long np_log_size(const nodeproc *p)
{
	struct stat st;
	return stat(p->log, &st) == 0 ? (long)st.st_size : 0;
}

char *np_log_since(const nodeproc *p, long off)
{
	FILE *f = fopen(p->log, "r");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	long end = ftell(f);
	fseek(f, off, SEEK_SET);
	size_t n = end > off ? (size_t)(end - off) : 0;
	char *buf = malloc(n + 1);
	assert_non_null(buf);
	n = fread(buf, 1, n, f);
	buf[n] = 0;
	fclose(f);
	return buf;
}

char *np_http_get(const nodeproc *p, const char *path, int *status)
{
	unsigned port;
	char host[64];
	if (sscanf(p->metrics, "http://%63[^:]:%u", host, &port) != 2)
		return NULL;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_port = htons((uint16_t)port)};
	inet_pton(AF_INET, host, &sa.sin_addr);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	char req[256];
	int n = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\n\r\n", path);
	if (write(fd, req, (size_t)n) != n) {
		close(fd);
		return NULL;
	}
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	for (;;) {
		if (len + 4096 > cap) {
			cap *= 2;
			buf = realloc(buf, cap);
		}
		ssize_t r = read(fd, buf + len, cap - len - 1);
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	buf[len] = 0;
	*status = 0;
	sscanf(buf, "HTTP/%*s %d", status);
	char *body = strstr(buf, "\r\n\r\n");
	char *out = strdup(body ? body + 4 : "");
	free(buf);
	return out;
}

Shoal__V1__Response *np_call(sh_rpc *c, Shoal__V1__Request *rq)
{
	Shoal__V1__Response *rs = NULL;
	char err[256];
	int rc = sh_rpc_call(c, rq, &rs, err, sizeof(err));
	if (rc)
		fail_msg("rpc: %s: %s", sh_errname(rc), err);
	return rs;
}

int np_create(sh_rpc *c, const char *name, uint32_t dim,
	      Shoal__V1__Metric metric, const char *const *indexes)
{
	Shoal__V1__CollectionConfig cfg = SHOAL__V1__COLLECTION_CONFIG__INIT;
	cfg.name = (char *)name;
	cfg.dim = dim;
	cfg.metric = metric;
	Shoal__V1__PayloadIndex pi[16], *pp[16];
	size_t ni = 0;
	for (; indexes && indexes[ni] && ni < 16; ni++) {
		shoal__v1__payload_index__init(&pi[ni]);
		static char fields[16][64];
		const char *colon = strchr(indexes[ni], ':');
		snprintf(fields[ni], sizeof(fields[ni]), "%.*s",
			 (int)(colon - indexes[ni]), indexes[ni]);
		pi[ni].field = fields[ni];
		pi[ni].type = strcmp(colon + 1, "keyword") == 0
				  ? SHOAL__V1__PAYLOAD_TYPE__KEYWORD
			      : strcmp(colon + 1, "integer") == 0
				  ? SHOAL__V1__PAYLOAD_TYPE__INTEGER
			      : strcmp(colon + 1, "float") == 0
				  ? SHOAL__V1__PAYLOAD_TYPE__FLOAT
				  : SHOAL__V1__PAYLOAD_TYPE__BOOL;
		pp[ni] = &pi[ni];
	}
	cfg.indexes = pp;
	cfg.n_indexes = ni;
	Shoal__V1__CreateCollectionRequest cr =
	    SHOAL__V1__CREATE_COLLECTION_REQUEST__INIT;
	cr.config = &cfg;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_CREATE_COLLECTION;
	rq.create_collection = &cr;
	Shoal__V1__Response *rs = np_call(c, &rq);
	int code = rs->code;
	sh_wire_free_response(rs);
	return code;
}

int np_upsert1(sh_rpc *c, const char *coll, uint64_t id, const float *v,
	       uint32_t dim, const char *payload, uint64_t version, int *status)
{
	Shoal__V1__PointId pid = SHOAL__V1__POINT_ID__INIT;
	pid.kind_case = SHOAL__V1__POINT_ID__KIND_NUM;
	pid.num = id;
	Shoal__V1__Point pt = SHOAL__V1__POINT__INIT, *pp = &pt;
	pt.id = &pid;
	pt.vector = (float *)v;
	pt.n_vector = dim;
	pt.payload_json = (char *)(payload ? payload : "");
	pt.version = version;
	Shoal__V1__UpsertRequest up = SHOAL__V1__UPSERT_REQUEST__INIT;
	up.collection = (char *)coll;
	up.points = &pp;
	up.n_points = 1;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_UPSERT;
	rq.upsert = &up;
	Shoal__V1__Response *rs = np_call(c, &rq);
	int code = rs->code;
	if (status && code == 0 && rs->upsert && rs->upsert->n_statuses == 1)
		*status = rs->upsert->statuses[0]->code;
	sh_wire_free_response(rs);
	return code;
}

int np_delete(sh_rpc *c, const char *coll, const uint64_t *ids, size_t n,
	      uint64_t version, int *statuses)
{
	Shoal__V1__PointId *pid = calloc(n, sizeof(*pid));
	Shoal__V1__PointRef *refs = calloc(n, sizeof(*refs));
	Shoal__V1__PointRef **pr = calloc(n, sizeof(*pr));
	for (size_t i = 0; i < n; i++) {
		shoal__v1__point_id__init(&pid[i]);
		pid[i].kind_case = SHOAL__V1__POINT_ID__KIND_NUM;
		pid[i].num = ids[i];
		shoal__v1__point_ref__init(&refs[i]);
		refs[i].id = &pid[i];
		refs[i].version = version;
		pr[i] = &refs[i];
	}
	Shoal__V1__PointRefs prs = SHOAL__V1__POINT_REFS__INIT;
	prs.refs = pr;
	prs.n_refs = n;
	Shoal__V1__DeleteRequest d = SHOAL__V1__DELETE_REQUEST__INIT;
	d.collection = (char *)coll;
	d.selector_case = SHOAL__V1__DELETE_REQUEST__SELECTOR_IDS;
	d.ids = &prs;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_DELETE;
	rq.delete_ = &d;
	Shoal__V1__Response *rs = np_call(c, &rq);
	int code = rs->code;
	for (size_t i = 0;
	     statuses && code == 0 && i < n && i < rs->delete_->n_statuses; i++)
		statuses[i] = rs->delete_->statuses[i]->code;
	sh_wire_free_response(rs);
	free(pid);
	free(refs);
	free(pr);
	return code;
}

int64_t np_count(sh_rpc *c, const char *coll, const Shoal__V1__Filter *f)
{
	Shoal__V1__CountRequest cr = SHOAL__V1__COUNT_REQUEST__INIT;
	cr.collection = (char *)coll;
	cr.filter = (Shoal__V1__Filter *)f;
	cr.exact = 1;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_COUNT;
	rq.count = &cr;
	Shoal__V1__Response *rs = np_call(c, &rq);
	int64_t v = rs->code ? -(int64_t)rs->code : (int64_t)rs->count->count;
	sh_wire_free_response(rs);
	return v;
}

int np_write_point(sh_rpc *c, const char *coll, uint64_t id, const float *v,
		   uint32_t dim, uint64_t version, uint32_t timeout_ms)
{
	Shoal__V1__PointId pid = SHOAL__V1__POINT_ID__INIT;
	pid.kind_case = SHOAL__V1__POINT_ID__KIND_NUM;
	pid.num = id;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.timeout_ms = timeout_ms;
	Shoal__V1__UpsertRequest up = SHOAL__V1__UPSERT_REQUEST__INIT;
	Shoal__V1__DeleteRequest dl = SHOAL__V1__DELETE_REQUEST__INIT;
	Shoal__V1__PointRefs refs = SHOAL__V1__POINT_REFS__INIT;
	Shoal__V1__PointRef ref = SHOAL__V1__POINT_REF__INIT, *rp = &ref;
	Shoal__V1__Point pt = SHOAL__V1__POINT__INIT, *pp = &pt;
	if (!v) {
		ref.id = &pid;
		ref.version = version;
		refs.refs = &rp;
		refs.n_refs = 1;
		dl.collection = (char *)coll;
		dl.selector_case = SHOAL__V1__DELETE_REQUEST__SELECTOR_IDS;
		dl.ids = &refs;
		rq.op_case = SHOAL__V1__REQUEST__OP_DELETE;
		rq.delete_ = &dl;
	} else {
		pt.id = &pid;
		pt.vector = (float *)v;
		pt.n_vector = dim;
		pt.version = version;
		up.collection = (char *)coll;
		up.points = &pp;
		up.n_points = 1;
		rq.op_case = SHOAL__V1__REQUEST__OP_UPSERT;
		rq.upsert = &up;
	}
	Shoal__V1__Response *rs = NULL;
	char err[256];
	if (sh_rpc_call(c, &rq, &rs, err, sizeof(err)) != SH_OK)
		return SH_ETIMEDOUT;
	int code = rs->code;
	sh_wire_free_response(rs);
	return code;
}
