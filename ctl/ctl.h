/* shoalctl's pieces: shoalctl.c (options, collections, count), cluster.c
 * (status, nodes, add-node), moves.c (rebalance, drain, move-slots,
 * remove-node, abort, resume; plan.c plans), points.c (import, export,
 * search). */
#ifndef SH_CTL_H
#define SH_CTL_H

#include <cjson/cJSON.h>
#include <stdbool.h>

#include "shoal.h"

struct ctl {
	const char *router;
	const char *embed; /* shoal-embed URLs, comma-separated */
	const char *model; /* "" = the embed server's default */
	bool json;
	int timeout_ms;
};
extern struct ctl ctl;

/* Prints "shoalctl: ..." and exits 1. */
void ctl_die(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));
/* Dies with the SDK's message when rc is not SHOAL_OK. */
void ctl_check(int rc, const char *what);
shoal_client *ctl_connect(void);
/* The embedding servers of --embed / $SHOAL_EMBED; dies when unreachable. */
shoal_embedder *ctl_embedder(void);
/* The parsed --filter text (NULL for none); dies on a bad one. */
shoal_filter *ctl_filter(const char *text);
/* Prints o as one line of JSON and frees it. */
void ctl_print_json(cJSON *o);
double ctl_now(void);

/* One administration call to the router; dies on any error. The response
 * is the caller's (sh_wire_free_response). */
#include "shoal.pb-c.h"
Shoal__V1__Response *ctl_admin_call(Shoal__V1__Request *rq);
/* The cluster map (with every node's health and points when asked). */
Shoal__V1__Response *ctl_get_map(bool health);
const char *ctl_health_name(Shoal__V1__Health h);
/* The job of slot moves in the map, for status (people). */
void ctl_print_job_status(bool json);
/* A job as JSON (the caller owns it). */
cJSON *ctl_job_json(const Shoal__V1__MoveJob *j);

int ctl_status(int argc, char **argv);
int ctl_nodes(int argc, char **argv);
int ctl_add_node(int argc, char **argv);
int ctl_rebalance(int argc, char **argv);
int ctl_drain(int argc, char **argv);
int ctl_move_slots(int argc, char **argv);
int ctl_remove_node(int argc, char **argv);
int ctl_abort(int argc, char **argv);
int ctl_resume(int argc, char **argv);
int ctl_import(int argc, char **argv);
int ctl_export(int argc, char **argv);
int ctl_search(int argc, char **argv);

#endif
