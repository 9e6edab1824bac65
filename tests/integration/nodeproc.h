/* Test harness: real shoal-node processes on free 127.0.0.1 ports, always
 * stopped (the child dies with the test through PR_SET_PDEATHSIG), and a
 * few helpers to build requests. */
#ifndef SH_TEST_NODEPROC_H
#define SH_TEST_NODEPROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "rpc.h"

typedef struct nodeproc {
	pid_t pid;
	char data_dir[512];
	char ready[600];
	char url[512];
	char metrics[512];
	char log[600];
} nodeproc;

/* A new empty temporary directory (mkdtemp) in buf. */
void np_tmpdir(char *buf, size_t cap);
/* rm -rf dir. */
void np_rmrf(const char *dir);

/* Sleeps ms milliseconds; seconds on the monotonic clock. */
void np_sleep_ms(int ms);
double np_now_s(void);

/* Starts $SHOAL_NODE_BIN on data_dir with --listen tcp://127.0.0.1:0,
 * --metrics 127.0.0.1:0 and extra flags (NULL-terminated, may be NULL),
 * logging to data_dir/../<name>.log, and waits (up to 60 s) until it
 * serves. Returns 0, or -1 (the process is then stopped). */
int np_start(nodeproc *p, const char *data_dir, const char *const *extra);

/* The same for another shoal binary (e.g. shoal-router from
 * $SHOAL_ROUTER_BIN): bin_env names the variable holding its path. */
int np_start_bin(nodeproc *p, const char *bin_env, const char *data_dir,
		 const char *const *extra);

/* The general form: starts the binary named by $bin_env with --metrics
 * 127.0.0.1:0, --ready-file NAME.ready and args (NULL-terminated), logging
 * to NAME.log, and waits (up to 60 s) for the ready file, which gives
 * p->url (listen=, may be empty) and p->metrics. p->data_dir gets name. */
int np_spawn(nodeproc *p, const char *bin_env, const char *name,
	     const char *const *args);

/* Sends sig and waits up to 20 s (then SIGKILL). Returns the exit status as
 * waitpid reports it, or -1. Safe to call twice. */
int np_stop(nodeproc *p, int sig);

/* Starts $SHOAL_ETCD_BIN (Debian's etcd) on free 127.0.0.1 client and
 * peer ports, its data and log in dir, and waits (up to 30 s) until it is
 * healthy: p->url is its client URL. -1 when there is no etcd or it did
 * not come up (the caller skips). Stop it with np_stop. */
int np_start_etcd(nodeproc *p, const char *dir);

/* HTTP GET of path from the node's metrics listener; malloc'd body (with
 * the status line in *status), or NULL. */
char *np_http_get(const nodeproc *p, const char *path, int *status);

/* The size of the process's log, and what it gained from byte off on
 * (malloc'd, NUL-terminated; fails the test when there is no log). */
long np_log_size(const nodeproc *p);
char *np_log_since(const nodeproc *p, long off);

/* ---- Requests ---------------------------------------------------------- */

/* One call: returns the response (caller frees with sh_wire_free_response)
 * and fails the test when there is none. */
Shoal__V1__Response *np_call(sh_rpc *c, Shoal__V1__Request *rq);

/* Creates collection name: dim, metric, and payload indexes given as
 * "field:type" strings (NULL-terminated, may be NULL). Returns the code. */
int np_create(sh_rpc *c, const char *name, uint32_t dim,
	      Shoal__V1__Metric metric, const char *const *indexes);

/* Upserts one point (u64 id) and returns the response code; *status gets
 * the point's status when not NULL. */
int np_upsert1(sh_rpc *c, const char *coll, uint64_t id, const float *v,
	       uint32_t dim, const char *payload, uint64_t version,
	       int *status);

/* Deletes ids (u64, one version for all); returns the code. */
int np_delete(sh_rpc *c, const char *coll, const uint64_t *ids, size_t n,
	      uint64_t version, int *statuses);

/* One write of one point (u64 id): an upsert of vector v (dim floats), or
 * with v NULL a delete, at `version`, deadline timeout_ms (0: the
 * server's). Returns the response's code, or SH_ETIMEDOUT when there was
 * no answer. Unlike np_call it never fails the test: for writer threads. */
int np_write_point(sh_rpc *c, const char *coll, uint64_t id, const float *v,
		   uint32_t dim, uint64_t version, uint32_t timeout_ms);

/* Count of points passing a text filter (NULL: all), or -(code) on error. */
int64_t np_count(sh_rpc *c, const char *coll, const Shoal__V1__Filter *f);

#endif
