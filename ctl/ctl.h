/* shoalctl's pieces: shoalctl.c (options, collections, count), cluster.c
 * (status, nodes, add-node, rebalance; plan.c plans), points.c (import, export,
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

int ctl_status(int argc, char **argv);
int ctl_nodes(int argc, char **argv);
int ctl_add_node(int argc, char **argv);
int ctl_rebalance(int argc, char **argv);
int ctl_import(int argc, char **argv);
int ctl_export(int argc, char **argv);
int ctl_search(int argc, char **argv);

#endif
