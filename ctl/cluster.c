/* shoalctl status / nodes / add-node / rebalance: the router's administration
 * messages (proto/shoal.proto: GetMap, AddNode), spoken through
 * common/serve/rpc. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "error.h"
#include "plan.h"
#include "rpc.h"
#include "slots.h"

/* One administration call; dies on any error. The response is the
 * caller's (sh_wire_free_response). */
static Shoal__V1__Response *admin_call(Shoal__V1__Request *rq)
{
	sh_rpc *c;
	char err[512];
	if (sh_rpc_dial(ctl.router, ctl.timeout_ms, 0, &c, err, sizeof(err)))
		ctl_die("%s", err);
	Shoal__V1__Response *rs;
	int rc = sh_rpc_call(c, rq, &rs, err, sizeof(err));
	sh_rpc_close(c);
	if (rc)
		ctl_die("cannot reach %s: %s", ctl.router, err);
	if (rs->code) {
		char msg[512];
		snprintf(msg, sizeof(msg), "%s (%s)",
			 rs->message && *rs->message ? rs->message
						     : sh_strerror(rs->code),
			 sh_errname((int)rs->code));
		sh_wire_free_response(rs);
		ctl_die("%s", msg);
	}
	return rs;
}

static Shoal__V1__Response *get_map(bool health)
{
	Shoal__V1__GetMapRequest gm = SHOAL__V1__GET_MAP_REQUEST__INIT;
	gm.with_health = health;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_GET_MAP;
	rq.get_map = &gm;
	return admin_call(&rq);
}

static const char *health_name(Shoal__V1__Health h)
{
	switch (h) {
	case SHOAL__V1__HEALTH__SERVING:
		return "serving";
	case SHOAL__V1__HEALTH__STARTING:
		return "starting";
	case SHOAL__V1__HEALTH__STOPPING:
		return "stopping";
	default:
		return "down";
	}
}

static uint32_t slots_of(const Shoal__V1__ClusterMap *m, uint32_t id)
{
	uint32_t n = 0;
	for (size_t i = 0; i < m->n_slots; i++)
		if (m->slots[i]->node_id == id)
			n += m->slots[i]->last - m->slots[i]->first + 1;
	return n;
}

static int print_nodes(bool health)
{
	Shoal__V1__Response *rs = get_map(health);
	const Shoal__V1__ClusterMap *m = rs->get_map;
	int down = 0;
	if (ctl.json) {
		cJSON *o = cJSON_CreateObject(), *a;
		cJSON_AddNumberToObject(o, "epoch", (double)m->epoch);
		a = cJSON_AddArrayToObject(o, "nodes");
		for (size_t i = 0; i < m->n_nodes; i++) {
			const Shoal__V1__NodeInfo *n = m->nodes[i];
			cJSON *x = cJSON_CreateObject();
			cJSON_AddNumberToObject(x, "id", n->id);
			cJSON_AddStringToObject(x, "address", n->address);
			cJSON_AddNumberToObject(x, "slots", slots_of(m, n->id));
			if (health) {
				cJSON_AddStringToObject(x, "health",
							health_name(n->health));
				cJSON_AddNumberToObject(x, "points",
							(double)n->points);
				if (n->error && *n->error)
					cJSON_AddStringToObject(x, "error",
								n->error);
			}
			cJSON_AddItemToArray(a, x);
			down +=
			    health && n->health != SHOAL__V1__HEALTH__SERVING;
		}
		a = cJSON_AddArrayToObject(o, "slots");
		for (size_t i = 0; i < m->n_slots; i++) {
			cJSON *x = cJSON_CreateObject();
			cJSON_AddNumberToObject(x, "first", m->slots[i]->first);
			cJSON_AddNumberToObject(x, "last", m->slots[i]->last);
			cJSON_AddNumberToObject(x, "node",
						m->slots[i]->node_id);
			cJSON_AddItemToArray(a, x);
		}
		ctl_print_json(o);
	} else {
		printf("router %s, map epoch %llu, %zu node(s)\n", ctl.router,
		       (unsigned long long)m->epoch, m->n_nodes);
		printf("%4s  %-32s %7s  %s\n", "ID", "ADDRESS", "SLOTS",
		       health ? "HEALTH      POINTS" : "");
		for (size_t i = 0; i < m->n_nodes; i++) {
			const Shoal__V1__NodeInfo *n = m->nodes[i];
			printf("%4u  %-32s %7u", n->id, n->address,
			       slots_of(m, n->id));
			if (health) {
				printf("  %-9s %9llu", health_name(n->health),
				       (unsigned long long)n->points);
				if (n->error && *n->error)
					printf("  (%s)", n->error);
				down += n->health != SHOAL__V1__HEALTH__SERVING;
			}
			printf("\n");
		}
	}
	sh_wire_free_response(rs);
	return down ? 1 : 0;
}

int ctl_nodes(int argc, char **argv)
{
	if (argc)
		ctl_die("nodes takes no arguments");
	return print_nodes(false);
}

int ctl_status(int argc, char **argv)
{
	if (argc)
		ctl_die("status takes no arguments");
	int rc = print_nodes(true);
	if (!ctl.json) {
		/* and the collections, summed over the nodes */
		shoal_client *c = ctl_connect();
		shoal_collections *l;
		if (shoal_collection_list(c, &l) == SHOAL_OK) {
			printf("\n%-24s %12s\n", "COLLECTION", "POINTS");
			for (size_t i = 0; i < l->n; i++)
				printf("%-24s %12llu\n",
				       l->items[i].config.name,
				       (unsigned long long)l->items[i].points);
			shoal_collections_free(l);
		} else {
			printf("\ncollections: %s\n", shoal_last_error());
			rc = 1;
		}
		shoal_close(c);
	}
	return rc;
}

int ctl_add_node(int argc, char **argv)
{
	if (argc != 1)
		ctl_die("add-node URL");
	Shoal__V1__AddNodeRequest an = SHOAL__V1__ADD_NODE_REQUEST__INIT;
	an.address = argv[0];
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_ADD_NODE;
	rq.add_node = &an;
	Shoal__V1__Response *rs = admin_call(&rq);
	if (ctl.json)
		printf("{\"node_id\":%u,\"map_epoch\":%llu}\n",
		       rs->add_node->node_id,
		       (unsigned long long)rs->add_node->map_epoch);
	else
		printf("added node %u (%s); map epoch %llu; it owns no slots "
		       "until a rebalance moves some to it\n",
		       rs->add_node->node_id, argv[0],
		       (unsigned long long)rs->add_node->map_epoch);
	sh_wire_free_response(rs);
	return 0;
}

/* shoalctl rebalance --dry-run [--drain ID,...]: the plan of ctl/plan.c
 * over the map and the nodes' point counts. Moving the slots is not built
 * yet (issue #8): without --dry-run it says so. */
int ctl_rebalance(int argc, char **argv)
{
	bool dry = false;
	const char *drain = NULL;
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--dry-run"))
			dry = true;
		else if (!strcmp(argv[i], "--drain") && i + 1 < argc)
			drain = argv[++i];
		else
			ctl_die("rebalance [--dry-run] [--drain ID[,ID...]]");
	}
	if (!dry)
		ctl_die("rebalance: moving slots between nodes is not built "
			"yet; --dry-run prints the plan");
	Shoal__V1__Response *rs = get_map(true);
	const Shoal__V1__ClusterMap *m = rs->get_map;
	sh_plan_node *nodes =
	    calloc(m->n_nodes ? m->n_nodes : 1, sizeof(*nodes));
	sh_plan_range *ranges =
	    calloc(m->n_slots ? m->n_slots : 1, sizeof(*ranges));
	uint64_t *after = calloc(m->n_nodes ? m->n_nodes : 1, sizeof(*after));
	if (!nodes || !ranges || !after)
		ctl_die("out of memory");
	for (size_t i = 0; i < m->n_nodes; i++) {
		const Shoal__V1__NodeInfo *n = m->nodes[i];
		if (n->health != SHOAL__V1__HEALTH__SERVING)
			ctl_die("node %u (%s) is %s%s%s: its points are "
				"unknown, so no plan",
				n->id, n->address, health_name(n->health),
				n->error && *n->error ? ": " : "",
				n->error ? n->error : "");
		nodes[i] = (sh_plan_node){.id = n->id, .points = n->points};
	}
	for (const char *d = drain; d && *d;) {
		char *end;
		unsigned long id = strtoul(d, &end, 10);
		size_t i = 0;
		while (i < m->n_nodes && nodes[i].id != id)
			i++;
		if (end == d || (*end && *end != ',') || i == m->n_nodes)
			ctl_die("--drain %s: not a node id of the map", drain);
		nodes[i].drain = true;
		d = *end ? end + 1 : end;
	}
	for (size_t i = 0; i < m->n_slots; i++)
		ranges[i] = (sh_plan_range){.first = m->slots[i]->first,
					    .last = m->slots[i]->last,
					    .node = m->slots[i]->node_id};
	sh_plan_move *mv;
	size_t nm;
	char err[256];
	if (sh_plan_rebalance(nodes, m->n_nodes, ranges, m->n_slots, &mv, &nm,
			      after, err, sizeof(err)) != SH_OK)
		ctl_die("rebalance: %s", err);
	if (ctl.json) {
		cJSON *o = cJSON_CreateObject(), *a;
		cJSON_AddNumberToObject(o, "epoch", (double)m->epoch);
		a = cJSON_AddArrayToObject(o, "moves");
		for (size_t k = 0; k < nm; k++) {
			cJSON *x = cJSON_CreateObject();
			cJSON_AddNumberToObject(x, "first", mv[k].first);
			cJSON_AddNumberToObject(x, "last", mv[k].last);
			cJSON_AddNumberToObject(x, "slots",
						mv[k].last - mv[k].first + 1);
			cJSON_AddNumberToObject(x, "from", mv[k].from);
			cJSON_AddNumberToObject(x, "to", mv[k].to);
			cJSON_AddNumberToObject(x, "points",
						(double)mv[k].points);
			cJSON_AddItemToArray(a, x);
		}
		a = cJSON_AddArrayToObject(o, "nodes");
		for (size_t i = 0; i < m->n_nodes; i++) {
			cJSON *x = cJSON_CreateObject();
			cJSON_AddNumberToObject(x, "id", nodes[i].id);
			cJSON_AddNumberToObject(x, "points",
						(double)nodes[i].points);
			cJSON_AddNumberToObject(x, "points_after",
						(double)after[i]);
			cJSON_AddBoolToObject(x, "drain", nodes[i].drain);
			cJSON_AddItemToArray(a, x);
		}
		ctl_print_json(o);
	} else {
		printf("plan for map epoch %llu: %zu move(s)%s\n",
		       (unsigned long long)m->epoch, nm,
		       nm ? "" : " (balanced)");
		if (nm)
			printf("%-13s %6s %5s %5s %12s\n", "SLOTS", "COUNT",
			       "FROM", "TO", "POINTS(EST)");
		for (size_t k = 0; k < nm; k++) {
			char r[16];
			snprintf(r, sizeof(r), "%u-%u", mv[k].first,
				 mv[k].last);
			printf("%-13s %6u %5u %5u %12llu\n", r,
			       mv[k].last - mv[k].first + 1, mv[k].from,
			       mv[k].to, (unsigned long long)mv[k].points);
		}
		printf("\n%4s %12s %12s\n", "NODE", "POINTS", "AFTER(EST)");
		for (size_t i = 0; i < m->n_nodes; i++)
			printf("%4u %12llu %12llu%s\n", nodes[i].id,
			       (unsigned long long)nodes[i].points,
			       (unsigned long long)after[i],
			       nodes[i].drain ? "  (drained)" : "");
	}
	free(mv);
	free(nodes);
	free(ranges);
	free(after);
	sh_wire_free_response(rs);
	return 0;
}
