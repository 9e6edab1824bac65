/* Kafka test helpers: see kafkatest.h. */
#include "kafkatest.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int64_t kt_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static uint64_t rand_u64(void)
{
	struct timespec ts;
	static _Atomic uint64_t ctr;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t z = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^
		     ((uint64_t)getpid() << 16) ^ atomic_fetch_add(&ctr, 1);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

/* ---- the mock cluster process -------------------------------------------- */

static int read_ready(const char *path, kt_mock *m)
{
	char buf[1024];
	FILE *f = fopen(path, "r");
	size_t n;

	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	if (strncmp(buf, "bootstrap=", 10))
		return -1;
	char *nl = strchr(buf, '\n');
	if (!nl || (size_t)(nl - buf - 10) >= sizeof(m->bootstrap))
		return -1;
	*nl = '\0';
	strcpy(m->bootstrap, buf + 10);
	return 0;
}

static void rm_dir(kt_mock *m)
{
	char path[128];

	if (!m->dir[0])
		return;
	snprintf(path, sizeof(path), "%s/ready", m->dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/ready.tmp", m->dir);
	unlink(path);
	rmdir(m->dir);
	m->dir[0] = '\0';
}

int kt_mock_start(kt_mock *m, const char *bin, int brokers,
		  const char *const *topics)
{
	char ready[128], nb[16];
	const char **argv;
	size_t nt = 0, i, a = 0;
	pid_t parent = getpid();

	memset(m, 0, sizeof(*m));
	m->status = -1;
	if (!bin || brokers < 1)
		return -1;
	while (topics && topics[nt])
		nt++;
	argv = calloc(6 + 2 * nt, sizeof(*argv));
	if (!argv)
		return -1;
	const char *tmp = getenv("TMPDIR");
	snprintf(m->dir, sizeof(m->dir), "%s/kt-mock-XXXXXX",
		 tmp && *tmp && strlen(tmp) < 40 ? tmp : "/tmp");
	if (!mkdtemp(m->dir)) {
		fprintf(stderr, "kafkatest: mkdtemp %s: %s\n", m->dir,
			strerror(errno));
		m->dir[0] = '\0';
		free(argv);
		return -1;
	}
	snprintf(ready, sizeof(ready), "%s/ready", m->dir);
	snprintf(nb, sizeof(nb), "%d", brokers);
	argv[a++] = bin;
	argv[a++] = "--brokers";
	argv[a++] = nb;
	argv[a++] = "--ready-file";
	argv[a++] = ready;
	for (i = 0; i < nt; i++) {
		argv[a++] = "--topic";
		argv[a++] = topics[i];
	}
	argv[a] = NULL;

	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		fprintf(stderr, "kafkatest: fork: %s\n", strerror(errno));
		free(argv);
		rm_dir(m);
		return -1;
	}
	if (pid == 0) {
		/* The mock must never outlive the test. */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) || getppid() != parent)
			_exit(127);
		int fd = open("/dev/null", O_WRONLY);
		if (fd >= 0) {
			dup2(fd, STDOUT_FILENO);
			close(fd);
		}
		execv(bin, (char *const *)argv);
		/* only async-signal-safe calls between fork and exec */
		static const char msg[] = "kafkatest: cannot exec the mock\n";
		if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0)
			_exit(126);
		_exit(127);
	}
	free(argv);
	m->pid = pid;

	int64_t deadline = kt_now_ms() + 30000;
	while (kt_now_ms() < deadline) {
		int st;
		if (read_ready(ready, m) == 0)
			return 0;
		if (waitpid(pid, &st, WNOHANG) == pid) {
			fprintf(stderr, "kafkatest: %s exited early (%s %d)\n",
				bin, WIFEXITED(st) ? "status" : "signal",
				WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
			m->pid = 0;
			m->status = st;
			rm_dir(m);
			return -1;
		}
		sleep_ms(20);
	}
	fprintf(stderr, "kafkatest: %s not ready after 30 s\n", bin);
	kt_mock_stop(m);
	return -1;
}

void kt_mock_stop(kt_mock *m)
{
	if (m->pid > 0) {
		int st = -1;
		int64_t deadline = kt_now_ms() + 10000;
		kill(m->pid, SIGTERM);
		for (;;) {
			pid_t r = waitpid(m->pid, &st, WNOHANG);
			if (r == m->pid || (r < 0 && errno != EINTR))
				break;
			if (kt_now_ms() >= deadline) {
				fprintf(stderr,
					"kafkatest: mock %ld ignored "
					"SIGTERM, killing it\n",
					(long)m->pid);
				kill(m->pid, SIGKILL);
				while (waitpid(m->pid, &st, 0) < 0 &&
				       errno == EINTR)
					;
				break;
			}
			sleep_ms(10);
		}
		m->status = st;
		if (!WIFEXITED(st) || WEXITSTATUS(st))
			fprintf(stderr, "kafkatest: mock exited with %s %d\n",
				WIFEXITED(st) ? "status" : "signal",
				WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
		m->pid = 0;
	}
	rm_dir(m);
}

/* ---- producer
 * ---------------------------------------------------------------- */

struct kt_pstate {
	atomic_long produced;
	atomic_long delivered;
	atomic_long failed;
};

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
	struct kt_pstate *st = opaque;

	if (msg->err) {
		if (atomic_fetch_add(&st->failed, 1) < 5)
			fprintf(stderr,
				"kafkatest: delivery to %s [%d] "
				"failed: %s\n",
				rd_kafka_topic_name(msg->rkt), msg->partition,
				rd_kafka_err2str(msg->err));
	} else {
		atomic_fetch_add(&st->delivered, 1);
	}
}

static int set(rd_kafka_conf_t *c, const char *k, const char *v, char *err,
	       size_t errlen)
{
	char e[256];
	if (rd_kafka_conf_set(c, k, v, e, sizeof(e)) == RD_KAFKA_CONF_OK)
		return 0;
	if (err && errlen)
		snprintf(err, errlen, "%s=%s: %s", k, v, e);
	return -1;
}

rd_kafka_t *kt_producer_new(const char *bootstrap, char *err, size_t errlen)
{
	rd_kafka_conf_t *c = rd_kafka_conf_new();
	struct kt_pstate *st = calloc(1, sizeof(*st));
	rd_kafka_t *p;

	if (!st) {
		rd_kafka_conf_destroy(c);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (set(c, "bootstrap.servers", bootstrap, err, errlen) ||
	    set(c, "acks", "all", err, errlen) ||
	    set(c, "enable.idempotence", "false", err, errlen) ||
	    set(c, "linger.ms", "5", err, errlen) ||
	    set(c, "message.timeout.ms", "30000", err, errlen) ||
	    set(c, "log_level", "4", err, errlen)) {
		rd_kafka_conf_destroy(c);
		free(st);
		return NULL;
	}
	rd_kafka_conf_set_dr_msg_cb(c, dr_cb);
	rd_kafka_conf_set_opaque(c, st);
	p = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, errlen);
	if (!p) {
		rd_kafka_conf_destroy(c);
		free(st);
	}
	return p;
}

void kt_producer_destroy(rd_kafka_t *p)
{
	if (!p)
		return;
	struct kt_pstate *st = rd_kafka_opaque(p);
	rd_kafka_destroy(p);
	free(st);
}

int kt_produce(rd_kafka_t *p, const char *topic, int32_t partition,
	       const void *key, size_t keylen, const void *value, size_t len,
	       const char *const *headers)
{
	struct kt_pstate *st = rd_kafka_opaque(p);
	rd_kafka_headers_t *hdrs = NULL;
	rd_kafka_resp_err_t err;
	size_t nh = 0;

	if (headers) {
		while (headers[nh])
			nh += 2;
		hdrs = rd_kafka_headers_new(nh / 2);
		for (size_t i = 0; i < nh; i += 2)
			rd_kafka_header_add(hdrs, headers[i], -1,
					    headers[i + 1], -1);
	}
	for (;;) {
		err = rd_kafka_producev(
		    p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
		    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
		    RD_KAFKA_V_KEY(key, keylen),
		    RD_KAFKA_V_VALUE((void *)value, len),
		    RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END);
		if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
			break;
		rd_kafka_poll(p, 50);
	}
	if (err) {
		/* on failure the headers stay ours */
		if (hdrs)
			rd_kafka_headers_destroy(hdrs);
		fprintf(stderr, "kafkatest: produce to %s: %s\n", topic,
			rd_kafka_err2str(err));
		return -1;
	}
	atomic_fetch_add(&st->produced, 1);
	rd_kafka_poll(p, 0);
	return 0;
}

int kt_flush(rd_kafka_t *p, int timeout_ms)
{
	struct kt_pstate *st = rd_kafka_opaque(p);
	rd_kafka_resp_err_t err = rd_kafka_flush(p, timeout_ms);

	if (err) {
		fprintf(stderr, "kafkatest: flush: %s (%d still queued)\n",
			rd_kafka_err2str(err), rd_kafka_outq_len(p));
		return -1;
	}
	if (atomic_load(&st->failed) ||
	    atomic_load(&st->delivered) != atomic_load(&st->produced)) {
		fprintf(stderr, "kafkatest: %ld of %ld messages failed\n",
			(long)atomic_load(&st->failed),
			(long)atomic_load(&st->produced));
		return -1;
	}
	return 0;
}

/* ---- reader
 * ------------------------------------------------------------------ */

static void *dup0(const void *p, size_t len)
{
	char *c = malloc(len + 1);
	if (!c)
		return NULL;
	if (len)
		memcpy(c, p, len);
	c[len] = '\0';
	return c;
}

int kt_msg_copy(const rd_kafka_message_t *rm, kt_msg *o)
{
	rd_kafka_headers_t *h = NULL;

	memset(o, 0, sizeof(*o));
	o->partition = rm->partition;
	o->offset = rm->offset;
	if (rm->key) {
		o->keylen = rm->key_len;
		if (!(o->key = dup0(rm->key, rm->key_len)))
			return -1;
	}
	if (rm->payload) {
		o->len = rm->len;
		if (!(o->value = dup0(rm->payload, rm->len)))
			return -1;
	}
	if (rd_kafka_message_headers(rm, &h) == RD_KAFKA_RESP_ERR_NO_ERROR) {
		size_t cnt = rd_kafka_header_cnt(h);
		o->headers = calloc(cnt ? cnt : 1, sizeof(*o->headers));
		if (!o->headers)
			return -1;
		for (size_t i = 0; i < cnt; i++) {
			const char *name;
			const void *val;
			size_t sz;
			if (rd_kafka_header_get_all(h, i, &name, &val, &sz))
				break;
			kt_header *kh = &o->headers[o->nheaders++];
			kh->name = dup0(name, strlen(name));
			kh->len = sz;
			kh->value = val ? dup0(val, sz) : NULL;
			if (!kh->name || (val && !kh->value))
				return -1;
		}
	}
	return 0;
}

void kt_msgs_free(kt_msg *m, size_t n)
{
	if (!m)
		return;
	for (size_t i = 0; i < n; i++) {
		free(m[i].key);
		free(m[i].value);
		for (size_t j = 0; j < m[i].nheaders; j++) {
			free(m[i].headers[j].name);
			free(m[i].headers[j].value);
		}
		free(m[i].headers);
	}
	free(m);
}

const char *kt_msg_header(const kt_msg *m, const char *name)
{
	for (size_t i = 0; i < m->nheaders; i++)
		if (!strcmp(m->headers[i].name, name))
			return m->headers[i].value;
	return NULL;
}

/* Assigns every partition of topic from the beginning: no group join, so
 * reading does not wait for a rebalance. */
static int assign_all(rd_kafka_t *c, const char *topic, int64_t deadline)
{
	rd_kafka_topic_t *rkt = rd_kafka_topic_new(c, topic, NULL);
	const struct rd_kafka_metadata *md = NULL;
	int rc = -1;

	if (!rkt)
		return -1;
	while (kt_now_ms() < deadline) {
		rd_kafka_resp_err_t err =
		    rd_kafka_metadata(c, 0, rkt, &md, 2000);
		if (!err && md->topic_cnt == 1 && !md->topics[0].err &&
		    md->topics[0].partition_cnt > 0)
			break;
		if (!err) {
			rd_kafka_metadata_destroy(md);
			md = NULL;
		}
		sleep_ms(100);
	}
	if (md) {
		const struct rd_kafka_metadata_topic *t = &md->topics[0];
		rd_kafka_topic_partition_list_t *l =
		    rd_kafka_topic_partition_list_new(t->partition_cnt);
		for (int i = 0; i < t->partition_cnt; i++)
			rd_kafka_topic_partition_list_add(l, topic,
							  t->partitions[i].id)
			    ->offset = RD_KAFKA_OFFSET_BEGINNING;
		rc = rd_kafka_assign(c, l) ? -1 : 0;
		rd_kafka_topic_partition_list_destroy(l);
		rd_kafka_metadata_destroy(md);
	} else {
		fprintf(stderr, "kafkatest: no metadata for topic %s\n", topic);
	}
	rd_kafka_topic_destroy(rkt);
	return rc;
}

int kt_read_all(const char *bootstrap, const char *topic, int expect,
		int timeout_ms, kt_msg **out, size_t *n)
{
	rd_kafka_conf_t *c = rd_kafka_conf_new();
	char err[512], group[64];
	int64_t deadline = kt_now_ms() + timeout_ms;
	size_t cap = expect > 0 ? (size_t)expect : 16, cnt = 0;
	kt_msg *msgs;
	rd_kafka_t *rk;
	int rc = -1;

	*out = NULL;
	*n = 0;
	snprintf(group, sizeof(group), "kt-read-%016llx",
		 (unsigned long long)rand_u64());
	if (set(c, "bootstrap.servers", bootstrap, err, sizeof(err)) ||
	    set(c, "group.id", group, err, sizeof(err)) ||
	    set(c, "auto.offset.reset", "earliest", err, sizeof(err)) ||
	    set(c, "enable.auto.commit", "false", err, sizeof(err)) ||
	    set(c, "log_level", "4", err, sizeof(err))) {
		fprintf(stderr, "kafkatest: %s\n", err);
		rd_kafka_conf_destroy(c);
		return -1;
	}
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof(err));
	if (!rk) {
		fprintf(stderr, "kafkatest: consumer: %s\n", err);
		rd_kafka_conf_destroy(c);
		return -1;
	}
	rd_kafka_poll_set_consumer(rk);
	msgs = calloc(cap, sizeof(*msgs));
	if (!msgs || assign_all(rk, topic, deadline))
		goto out;
	while ((expect < 0 || cnt < (size_t)expect) && kt_now_ms() < deadline) {
		rd_kafka_message_t *rm = rd_kafka_consumer_poll(rk, 100);
		if (!rm)
			continue;
		if (rm->err) {
			if (rm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
				fprintf(stderr, "kafkatest: consume %s: %s\n",
					topic, rd_kafka_message_errstr(rm));
			rd_kafka_message_destroy(rm);
			continue;
		}
		if (cnt == cap) {
			kt_msg *nm = realloc(msgs, 2 * cap * sizeof(*msgs));
			if (!nm) {
				rd_kafka_message_destroy(rm);
				goto out;
			}
			msgs = nm;
			cap *= 2;
		}
		int crc = kt_msg_copy(rm, &msgs[cnt++]);
		rd_kafka_message_destroy(rm);
		if (crc)
			goto out;
	}
	rc = 0;
out:
	rd_kafka_consumer_close(rk);
	rd_kafka_destroy(rk);
	if (rc) {
		kt_msgs_free(msgs, cnt);
		return -1;
	}
	*out = msgs;
	*n = cnt;
	return 0;
}
