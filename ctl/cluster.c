/* shoalctl status / nodes / add-node: the router's administration messages
 * (proto/shoal.proto: GetMap, AddNode), spoken through common/serve/rpc.
 * Slot moves are in moves.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "error.h"
#include "rpc.h"
#include "slots.h"

/* One administration call; dies on any error. The response is the
 * caller's (sh_wire_free_response). */
Shoal__V1__Response *ctl_admin_call(Shoal__V1__Request *rq)
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

Shoal__V1__Response *ctl_get_map(bool health)
{
	Shoal__V1__GetMapRequest gm = SHOAL__V1__GET_MAP_REQUEST__INIT;
	gm.with_health = health;
	Shoal__V1__Request rq = SHOAL__V1__REQUEST__INIT;
	rq.op_case = SHOAL__V1__REQUEST__OP_GET_MAP;
	rq.get_map = &gm;
	return ctl_admin_call(&rq);
}

const char *ctl_health_name(Shoal__V1__Health h)
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
	Shoal__V1__Response *rs = ctl_get_map(health);
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
				cJSON_AddStringToObject(
				    x, "health", ctl_health_name(n->health));
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
		if (m->job)
			cJSON_AddItemToObject(o, "job", ctl_job_json(m->job));
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
				printf("  %-9s %9llu",
				       ctl_health_name(n->health),
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
		ctl_print_job_status(false);
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
	Shoal__V1__Response *rs = ctl_admin_call(&rq);
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
