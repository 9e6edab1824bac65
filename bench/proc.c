/* See proc.h. */
#include "proc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

static int rm_one(const char *p, const struct stat *s, int f, struct FTW *w)
{
	(void)s;
	(void)f;
	(void)w;
	remove(p);
	return 0;
}

/* Forks bin with argv (argv[0] = bin), stderr to DIR/log, and waits until
 * the ready file p->ready has a line "key=...": its value goes to p->url. */
static int spawn_wait(struct bench_proc *p, const char *bin,
		      const char *const *argv, const char *key)
{
	char logp[600];
	snprintf(logp, sizeof(logp), "%s/log", p->dir);
	size_t kl = strlen(key);
	pid_t parent = getpid();
	p->pid = fork();
	if (p->pid < 0) {
		p->pid = 0;
		fprintf(stderr, "bench: fork: %s\n", strerror(errno));
		return -1;
	}
	if (p->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		int fd = open(logp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd >= 0) {
			dup2(fd, 2);
			close(fd);
		}
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	for (int i = 0; i < 6000; i++) {
		FILE *f = fopen(p->ready, "r");
		if (f) {
			char line[600];
			while (fgets(line, sizeof(line), f)) {
				line[strcspn(line, "\n")] = 0;
				if (!strncmp(line, key, kl) && line[kl] == '=')
					snprintf(p->url, sizeof(p->url), "%s",
						 line + kl + 1);
				else if (!strncmp(line, "metrics=", 8))
					snprintf(p->metrics, sizeof(p->metrics),
						 "%s", line + 8);
			}
			fclose(f);
			if (*p->url)
				return 0;
		}
		int st;
		if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
			p->pid = 0;
			fprintf(stderr, "bench: %s exited at start (see %s)\n",
				bin, logp);
			return -1;
		}
		usleep(10000);
	}
	fprintf(stderr, "bench: %s did not start\n", bin);
	bench_proc_stop(p, 1);
	return -1;
}

static int make_dir(struct bench_proc *p)
{
	memset(p, 0, sizeof(*p));
	snprintf(p->dir, sizeof(p->dir), "/tmp/shoal-bench-XXXXXX");
	if (!mkdtemp(p->dir)) {
		fprintf(stderr, "bench: mkdtemp: %s\n", strerror(errno));
		*p->dir = 0;
		return -1;
	}
	snprintf(p->ready, sizeof(p->ready), "%s/ready", p->dir);
	return 0;
}

char *bench_http_get(const char *url, const char *path)
{
	unsigned port;
	char host[64];
	if (sscanf(url, "http://%63[^:]:%u", host, &port) != 2)
		return NULL;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return NULL;
	struct timeval tv = {5, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_port = htons((uint16_t)port)};
	char req[256];
	int n = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\n\r\n", path);
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1 ||
	    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) ||
	    write(fd, req, (size_t)n) != n) {
		close(fd);
		return NULL;
	}
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	while (buf) {
		if (len + 4096 > cap) {
			char *nb = realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				buf = NULL;
				break;
			}
			buf = nb;
			cap *= 2;
		}
		ssize_t r = read(fd, buf + len, cap - len - 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	if (!buf)
		return NULL;
	buf[len] = 0;
	char *body = strstr(buf, "\r\n\r\n");
	if (!body || strncmp(buf, "HTTP/1.", 7) || !strstr(buf, " 200 ")) {
		free(buf);
		return NULL;
	}
	memmove(buf, body + 4, strlen(body + 4) + 1);
	return buf;
}

double bench_metric_sum(const char *text, const char *prefix)
{
	double sum = 0;
	size_t pl = strlen(prefix);
	for (const char *l = text; l && *l;) {
		const char *end = strchr(l, '\n');
		if (!end)
			end = l + strlen(l);
		if (!strncmp(l, prefix, pl)) {
			/* the value follows the line's last space (a label
			 * value may hold spaces) */
			const char *v = end;
			while (v > l && v[-1] != ' ')
				v--;
			if (v > l)
				sum += strtod(v, NULL);
		}
		l = *end ? end + 1 : NULL;
	}
	return sum;
}

int bench_proc_start(struct bench_proc *p, const char *bin,
		     const char *const *extra)
{
	if (make_dir(p))
		return -1;
	char data[600];
	snprintf(data, sizeof(data), "%s/data", p->dir);
	const char *argv[64];
	int a = 0;
	argv[a++] = bin;
	argv[a++] = "--listen";
	argv[a++] = "tcp://127.0.0.1:0";
	argv[a++] = "--metrics";
	argv[a++] = "";
	argv[a++] = "--data-dir";
	argv[a++] = data;
	argv[a++] = "--ready-file";
	argv[a++] = p->ready;
	for (int i = 0; extra && extra[i] && a < 63; i++)
		argv[a++] = extra[i];
	argv[a] = NULL;
	return spawn_wait(p, bin, argv, "listen");
}

int bench_proc_start_args(struct bench_proc *p, const char *bin,
			  const char *const *args, const char *key)
{
	if (make_dir(p))
		return -1;
	const char *argv[64];
	int a = 0;
	argv[a++] = bin;
	argv[a++] = "--ready-file";
	argv[a++] = p->ready;
	for (int i = 0; args && args[i]; i++) {
		if (a >= 63) {
			fprintf(stderr, "bench: too many arguments for %s\n",
				bin);
			bench_proc_stop(p, 0);
			return -1;
		}
		argv[a++] = args[i];
	}
	argv[a] = NULL;
	return spawn_wait(p, bin, argv, key);
}

void bench_proc_stop(struct bench_proc *p, int keep)
{
	if (p->pid > 0) {
		kill(p->pid, SIGTERM);
		waitpid(p->pid, NULL, 0);
		p->pid = 0;
	}
	if (!keep && *p->dir)
		nftw(p->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

const char *bench_sibling(const char *argv0, const char *rel, char *buf,
			  size_t cap)
{
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s", argv0);
	snprintf(buf, cap, "%s/../%s", dirname(tmp), rel);
	return buf;
}
