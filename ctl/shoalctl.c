/*
 * shoalctl: the admin CLI of a shoal cluster. Data commands go through the
 * C SDK (libshoal); cluster commands (status, nodes, add-node, the slot
 * moves) speak the router's administration messages. Output for people by
 * default, JSON with
 * --json; any error exits non-zero with a message on stderr.
 *
 *   shoalctl [--router URL] [--json] [--timeout MS] COMMAND ...
 *
 * See usage() and docs/shoalctl.md.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"
#include "shoal.h"

struct ctl ctl = {.router = NULL, .model = "", .timeout_ms = 10000};

void ctl_die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "shoalctl: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(1);
}

void ctl_check(int rc, const char *what)
{
	if (rc != SHOAL_OK)
		ctl_die("%s: %s (%s)", what, shoal_last_error(),
			shoal_errname(rc));
}

double ctl_now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: shoalctl [--router URL] [--embed URL[,URL...]] [--model "
	    "M]\n"
	    "                [--json] [--timeout MS] COMMAND\n"
	    "\n"
	    "The router: --router, else $SHOAL_ROUTER, else "
	    "tcp://127.0.0.1:7000.\n"
	    "Embedding servers (search --text, import of texts): --embed, "
	    "else\n"
	    "$SHOAL_EMBED, else tcp://127.0.0.1:7200; --model picks the "
	    "model.\n"
	    "\n"
	    "cluster:\n"
	    "  status                       nodes, health, slots, points and\n"
	    "                               the slot moves in flight\n"
	    "  nodes                        the nodes of the cluster map\n"
	    "  add-node URL                 add a node (it owns no slot yet)\n"
	    "  rebalance [--dry-run] [--drain ID[,ID...]]\n"
	    "                               move slots so that every node\n"
	    "                               holds about as many points\n"
	    "  drain NODE [--dry-run]       move every slot off NODE\n"
	    "  move-slots FIRST[-LAST] --to NODE\n"
	    "                               move those slots to NODE\n"
	    "      (the three above: [--max-rate BYTES/S] [--grace-ms MS])\n"
	    "  remove-node NODE             remove a node that owns no slot\n"
	    "  abort                        abort the moves in flight\n"
	    "  resume                       go on with the moves in the map\n"
	    "collections:\n"
	    "  collections list\n"
	    "  collections info NAME\n"
	    "  collections create NAME --dim N [--metric l2|ip|cosine]\n"
	    "      [--storage f32|int8] [--m M] [--ef-construction N]\n"
	    "      [--ef-search N] [--index FIELD:keyword|integer|float|bool]"
	    "...\n"
	    "  collections drop NAME\n"
	    "points:\n"
	    "  import COLLECTION FILE       .fvecs (ids from --id-start, "
	    "default 0)\n"
	    "      or JSON lines {\"id\", \"vector\" or \"text\", "
	    "\"payload\", \"version\"}\n"
	    "      (texts are embedded on the way in);\n"
	    "      [--batch 256] [--id-start N]\n"
	    "  export COLLECTION [--filter TEXT] [--with-vector] [--out "
	    "FILE]\n"
	    "                               JSON lines, as import reads them\n"
	    "  search COLLECTION (--vector 0.1,0.2,... | --query-file F.fvecs "
	    "|\n"
	    "      --text \"words\")\n"
	    "      [--k 10] [--ef N] [--filter TEXT] [--with-payload]\n"
	    "      [--min-coverage F]\n"
	    "  count COLLECTION [--filter TEXT]\n");
}

shoal_embedder *ctl_embedder(void)
{
	char *list = strdup(ctl.embed);
	const char *urls[64];
	size_t n = 0;
	for (char *t = strtok(list, ","); t && n < 64; t = strtok(NULL, ","))
		if (*t)
			urls[n++] = t;
	shoal_embedder *e = NULL;
	int rc = n ? shoal_embedder_connect(urls, n, ctl.timeout_ms, &e)
		   : SHOAL_EINVAL;
	free(list);
	if (rc != SHOAL_OK)
		ctl_die("cannot reach the embedding server %s: %s (%s)",
			ctl.embed, shoal_last_error(), shoal_errname(rc));
	return e;
}

shoal_client *ctl_connect(void)
{
	shoal_client *c;
	int rc = shoal_connect(ctl.router, ctl.timeout_ms, &c);
	if (rc != SHOAL_OK)
		ctl_die("cannot reach %s: %s (%s)", ctl.router,
			shoal_last_error(), shoal_errname(rc));
	return c;
}

/* ---- collections ------------------------------------------------------------
 */

static const char *metric_name(int m)
{
	return m == SHOAL_METRIC_L2   ? "l2"
	       : m == SHOAL_METRIC_IP ? "ip"
				      : "cosine";
}

static const char *ptype_name(int t)
{
	static const char *const n[] = {"?", "keyword", "integer", "float",
					"bool"};
	return t >= 1 && t <= 4 ? n[t] : "?";
}

static cJSON *coll_json(const shoal_collection_info *ci)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "name", ci->config.name);
	cJSON_AddNumberToObject(o, "dim", ci->config.dim);
	cJSON_AddStringToObject(o, "metric", metric_name(ci->config.metric));
	cJSON_AddStringToObject(
	    o, "storage",
	    ci->config.storage == SHOAL_STORAGE_INT8 ? "int8" : "f32");
	cJSON_AddNumberToObject(o, "m", ci->config.m);
	cJSON_AddNumberToObject(o, "ef_construction",
				ci->config.ef_construction);
	cJSON_AddNumberToObject(o, "ef_search", ci->config.ef_search);
	cJSON *ix = cJSON_AddObjectToObject(o, "payload_indexes");
	for (size_t i = 0; i < ci->config.n_indexes; i++)
		cJSON_AddStringToObject(ix, ci->config.indexes[i].field,
					ptype_name(ci->config.indexes[i].type));
	cJSON_AddNumberToObject(o, "points", (double)ci->points);
	return o;
}

void ctl_print_json(cJSON *o)
{
	char *s = cJSON_PrintUnformatted(o);
	if (!s)
		ctl_die("out of memory");
	printf("%s\n", s);
	cJSON_free(s);
	cJSON_Delete(o);
}

static int cmd_collections(int argc, char **argv)
{
	if (argc < 1)
		ctl_die("collections: list, info, create or drop");
	shoal_client *c = ctl_connect();
	const char *verb = argv[0];
	if (!strcmp(verb, "list") || !strcmp(verb, "info")) {
		shoal_collections *l;
		if (!strcmp(verb, "list")) {
			ctl_check(shoal_collection_list(c, &l), "list");
		} else {
			if (argc < 2)
				ctl_die("collections info NAME");
			ctl_check(shoal_collection_info_get(c, argv[1], &l),
				  argv[1]);
		}
		if (ctl.json) {
			cJSON *a = cJSON_CreateArray();
			for (size_t i = 0; i < l->n; i++)
				cJSON_AddItemToArray(a,
						     coll_json(&l->items[i]));
			ctl_print_json(a);
		} else {
			printf("%-24s %6s %-7s %-7s %12s  %s\n", "NAME", "DIM",
			       "METRIC", "STORAGE", "POINTS", "INDEXES");
			for (size_t i = 0; i < l->n; i++) {
				const shoal_collection_info *ci = &l->items[i];
				printf("%-24s %6u %-7s %-7s %12llu  ",
				       ci->config.name, ci->config.dim,
				       metric_name(ci->config.metric),
				       ci->config.storage == SHOAL_STORAGE_INT8
					   ? "int8"
					   : "f32",
				       (unsigned long long)ci->points);
				for (size_t j = 0; j < ci->config.n_indexes;
				     j++)
					printf("%s%s:%s", j ? "," : "",
					       ci->config.indexes[j].field,
					       ptype_name(
						   ci->config.indexes[j].type));
				printf("\n");
			}
		}
		shoal_collections_free(l);
	} else if (!strcmp(verb, "create")) {
		if (argc < 2)
			ctl_die("collections create NAME --dim N ...");
		shoal_collection_config cfg = {.name = argv[1],
					       .metric = SHOAL_METRIC_L2};
		shoal_payload_index ix[64];
		char fields[64][257];
		size_t nix = 0;
		for (int i = 2; i < argc; i++) {
			const char *f = argv[i],
				   *v = i + 1 < argc ? argv[++i] : NULL;
			if (!v)
				ctl_die("%s needs a value", f);
			if (!strcmp(f, "--dim"))
				cfg.dim = (uint32_t)strtoul(v, NULL, 10);
			else if (!strcmp(f, "--metric"))
				cfg.metric = !strcmp(v, "l2") ? SHOAL_METRIC_L2
					     : !strcmp(v, "ip")
						 ? SHOAL_METRIC_IP
					     : !strcmp(v, "cosine")
						 ? SHOAL_METRIC_COSINE
						 : (ctl_die("--metric: l2, ip "
							    "or cosine"),
						    0);
			else if (!strcmp(f, "--storage"))
				cfg.storage =
				    !strcmp(v, "int8") ? SHOAL_STORAGE_INT8
				    : !strcmp(v, "f32")
					? SHOAL_STORAGE_F32
					: (ctl_die("--storage: f32 or int8"),
					   0);
			else if (!strcmp(f, "--m"))
				cfg.m = (uint32_t)strtoul(v, NULL, 10);
			else if (!strcmp(f, "--ef-construction"))
				cfg.ef_construction =
				    (uint32_t)strtoul(v, NULL, 10);
			else if (!strcmp(f, "--ef-search"))
				cfg.ef_search = (uint32_t)strtoul(v, NULL, 10);
			else if (!strcmp(f, "--index")) {
				const char *colon = strrchr(v, ':');
				if (!colon || colon == v || nix == 64 ||
				    (size_t)(colon - v) > 256)
					ctl_die("--index FIELD:TYPE");
				int t = 0;
				for (int k = 1; k <= 4; k++)
					if (!strcmp(colon + 1, ptype_name(k)))
						t = k;
				if (!t)
					ctl_die("--index %s: type keyword, "
						"integer, float or bool",
						v);
				snprintf(fields[nix], sizeof(fields[nix]),
					 "%.*s", (int)(colon - v), v);
				ix[nix].field = fields[nix];
				ix[nix].type = t;
				nix++;
			} else
				ctl_die("collections create: unknown flag %s",
					f);
		}
		if (!cfg.dim)
			ctl_die("collections create: --dim is required");
		cfg.indexes = ix;
		cfg.n_indexes = nix;
		ctl_check(shoal_collection_create(c, &cfg), argv[1]);
		if (ctl.json)
			printf("{\"created\":\"%s\"}\n", argv[1]);
		else
			printf("created collection %s (dim %u, %s)\n", argv[1],
			       cfg.dim, metric_name(cfg.metric));
	} else if (!strcmp(verb, "drop")) {
		if (argc < 2)
			ctl_die("collections drop NAME");
		ctl_check(shoal_collection_drop(c, argv[1]), argv[1]);
		if (ctl.json)
			printf("{\"dropped\":\"%s\"}\n", argv[1]);
		else
			printf("dropped collection %s\n", argv[1]);
	} else {
		ctl_die("collections: unknown verb %s", verb);
	}
	shoal_close(c);
	return 0;
}

/* ---- count ------------------------------------------------------------------
 */

shoal_filter *ctl_filter(const char *text)
{
	if (!text)
		return NULL;
	shoal_filter *f;
	char err[256];
	if (shoal_filter_parse(text, &f, err, sizeof(err)) != SHOAL_OK)
		ctl_die("--filter: %s", err);
	return f;
}

static int cmd_count(int argc, char **argv)
{
	if (argc < 1)
		ctl_die("count COLLECTION [--filter TEXT]");
	const char *ftext = NULL;
	for (int i = 1; i + 1 < argc; i += 2)
		if (!strcmp(argv[i], "--filter"))
			ftext = argv[i + 1];
		else
			ctl_die("count: unknown flag %s", argv[i]);
	shoal_filter *f = ctl_filter(ftext);
	shoal_client *c = ctl_connect();
	uint64_t n;
	ctl_check(shoal_count(c, argv[0], f, true, &n, NULL), argv[0]);
	if (ctl.json)
		printf("{\"count\":%llu}\n", (unsigned long long)n);
	else
		printf("%llu\n", (unsigned long long)n);
	shoal_filter_free(f);
	shoal_close(c);
	return 0;
}

int main(int argc, char **argv)
{
	ctl.router = getenv("SHOAL_ROUTER");
	if (!ctl.router || !*ctl.router)
		ctl.router = "tcp://127.0.0.1:7000";
	ctl.embed = getenv("SHOAL_EMBED");
	if (!ctl.embed || !*ctl.embed)
		ctl.embed = "tcp://127.0.0.1:7200";
	int i = 1;
	for (; i < argc && !strncmp(argv[i], "--", 2); i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(argv[i], "--json")) {
			ctl.json = true;
		} else if (!strcmp(argv[i], "--router") && i + 1 < argc) {
			ctl.router = argv[++i];
		} else if (!strcmp(argv[i], "--embed") && i + 1 < argc) {
			ctl.embed = argv[++i];
		} else if (!strcmp(argv[i], "--model") && i + 1 < argc) {
			ctl.model = argv[++i];
		} else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) {
			ctl.timeout_ms = atoi(argv[++i]);
			if (ctl.timeout_ms <= 0)
				ctl_die("--timeout: milliseconds > 0");
		} else {
			fprintf(stderr, "shoalctl: unknown option %s\n",
				argv[i]);
			usage(stderr);
			return 2;
		}
	}
	if (i >= argc) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[i];
	int n = argc - i - 1;
	char **rest = argv + i + 1;
	if (!strcmp(cmd, "status"))
		return ctl_status(n, rest);
	if (!strcmp(cmd, "nodes"))
		return ctl_nodes(n, rest);
	if (!strcmp(cmd, "add-node"))
		return ctl_add_node(n, rest);
	if (!strcmp(cmd, "rebalance"))
		return ctl_rebalance(n, rest);
	if (!strcmp(cmd, "drain"))
		return ctl_drain(n, rest);
	if (!strcmp(cmd, "move-slots"))
		return ctl_move_slots(n, rest);
	if (!strcmp(cmd, "remove-node"))
		return ctl_remove_node(n, rest);
	if (!strcmp(cmd, "abort"))
		return ctl_abort(n, rest);
	if (!strcmp(cmd, "resume"))
		return ctl_resume(n, rest);
	if (!strcmp(cmd, "collections"))
		return cmd_collections(n, rest);
	if (!strcmp(cmd, "import"))
		return ctl_import(n, rest);
	if (!strcmp(cmd, "export"))
		return ctl_export(n, rest);
	if (!strcmp(cmd, "search"))
		return ctl_search(n, rest);
	if (!strcmp(cmd, "count"))
		return cmd_count(n, rest);
	fprintf(stderr, "shoalctl: unknown command %s\n", cmd);
	usage(stderr);
	return 2;
}
