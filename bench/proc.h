/* Benchmarks start their own shoal processes: one per call, in its own
 * temporary directory, on a free 127.0.0.1 port (port 0 + --ready-file),
 * killed with the benchmark (PR_SET_PDEATHSIG). */
#ifndef SH_BENCH_PROC_H
#define SH_BENCH_PROC_H

#include <sys/types.h>

struct bench_proc {
	pid_t pid;
	char dir[512]; /* the process's own temporary directory */
	char ready[600];
	char url[640];	   /* listen= of the ready file */
	char metrics[640]; /* its metrics= ("" when it serves none) */
};

/* Starts bin with --listen tcp://127.0.0.1:0 --metrics "" --ready-file
 * and --data-dir DIR/data, then extra (NULL-terminated, may be NULL);
 * stderr goes to DIR/log. Waits until it serves (60 s). Returns 0, or
 * prints why and returns -1. */
int bench_proc_start(struct bench_proc *p, const char *bin,
		     const char *const *extra);

/* Starts bin with --ready-file DIR/ready and then args (NULL-terminated,
 * may be NULL), nothing else (for programs without --listen / --data-dir,
 * e.g. shoal-ingest); stderr goes to DIR/log. Waits (60 s) until the ready
 * file has a line "key=VALUE" and copies VALUE into p->url. Returns 0, or
 * prints why and returns -1. */
int bench_proc_start_args(struct bench_proc *p, const char *bin,
			  const char *const *args, const char *key);

/* GET path from url ("http://IPV4:PORT", as metrics= gives it), 5 s at
 * most: the body of a 200 answer (malloc'd, NUL-terminated), else NULL. */
char *bench_http_get(const char *url, const char *path);

/* The sum of the values of every line of a Prometheus text that starts
 * with prefix (e.g. "shoal_embed_batches_total{"): 0 when none does. */
double bench_metric_sum(const char *text, const char *prefix);

/* SIGTERM, wait; then remove its directory unless keep. */
void bench_proc_stop(struct bench_proc *p, int keep);

/* The path of a sibling binary of this program's build: argv0's folder +
 * "/../" + rel (e.g. "node/shoal-node"), in buf. */
const char *bench_sibling(const char *argv0, const char *rel, char *buf,
			  size_t cap);

#endif
