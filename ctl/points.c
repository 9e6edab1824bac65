/* shoalctl import / export / search, through the C SDK. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ctl.h"

#define MAX_DIM 4096

/* ---- Progress
 * ---------------------------------------------------------------- */

struct progress {
	double t0, last;
	uint64_t done, total; /* total 0: unknown */
	bool tty;
};

static void progress_show(struct progress *p, bool final)
{
	double now = ctl_now();
	if (!final && (!p->tty || now - p->last < 0.2))
		return;
	p->last = now;
	double el = now - p->t0 > 1e-9 ? now - p->t0 : 1e-9;
	double rate = (double)p->done / el;
	if (final) {
		if (p->tty)
			fprintf(stderr, "\r\033[K");
		fprintf(stderr,
			"import: %" PRIu64 " points in %.1f s (%.0f "
			"points/s)\n",
			p->done, el, rate);
		return;
	}
	int width = 30, fill = 0;
	double frac = p->total ? (double)p->done / (double)p->total : 0;
	if (frac > 1)
		frac = 1;
	fill = (int)(frac * width);
	fprintf(stderr, "\r[");
	for (int i = 0; i < width; i++)
		fputc(i < fill ? '#' : '.', stderr);
	if (p->total)
		fprintf(stderr,
			"] %3.0f%% %" PRIu64 "/%" PRIu64 " points, %.0f/s",
			frac * 100, p->done, p->total, rate);
	else
		fprintf(stderr, "] %" PRIu64 " points, %.0f/s", p->done, rate);
	fflush(stderr);
}

/* ---- Import
 * -------------------------------------------------------------------- */

struct batch {
	shoal_point *pts;
	float *vecs;
	char **payloads;
	char **strids;
	char **texts;	   /* a text to embed instead of a vector, or NULL */
	shoal_embedder *e; /* opened at the first text */
	size_t n, cap;
	uint32_t dim;
};

static void batch_init(struct batch *b, size_t cap)
{
	memset(b, 0, sizeof(*b));
	b->cap = cap;
	b->pts = calloc(cap, sizeof(*b->pts));
	b->vecs = malloc(cap * MAX_DIM * sizeof(float));
	b->payloads = calloc(cap, sizeof(char *));
	b->strids = calloc(cap, sizeof(char *));
	b->texts = calloc(cap, sizeof(char *));
	if (!b->pts || !b->vecs || !b->payloads || !b->strids || !b->texts)
		ctl_die("out of memory");
}

static void batch_clear(struct batch *b)
{
	for (size_t i = 0; i < b->n; i++) {
		free(b->payloads[i]);
		free(b->strids[i]);
		free(b->texts[i]);
		b->payloads[i] = b->strids[i] = b->texts[i] = NULL;
	}
	b->n = 0;
}

/* Embeds the texts of the batch (points given a "text" instead of a
 * "vector"), 1024 per request. */
static void embed_texts(struct batch *b)
{
	const char *texts[1024];
	size_t pos[1024], nt = 0;
	for (size_t i = 0; i <= b->n; i++) {
		if (i < b->n && b->texts[i]) {
			texts[nt] = b->texts[i];
			pos[nt++] = i;
		}
		if (nt == 0 || (nt < 1024 && i < b->n))
			continue;
		if (!b->e)
			b->e = ctl_embedder();
		shoal_embeddings *em;
		int rc = shoal_embed(b->e, ctl.model, texts, nt, &em);
		if (rc != SHOAL_OK)
			ctl_die("import: embedding: %s (%s)",
				shoal_last_error(), shoal_errname(rc));
		if (em->dim > MAX_DIM)
			ctl_die(
			    "import: the model's dimension %zu is too large",
			    em->dim);
		for (size_t j = 0; j < nt; j++) {
			float *v = b->vecs + pos[j] * MAX_DIM;
			memcpy(v, em->vectors + j * em->dim,
			       em->dim * sizeof(float));
			b->pts[pos[j]].vector = v;
			b->pts[pos[j]].dim = em->dim;
		}
		shoal_embeddings_free(em);
		nt = 0;
	}
}

static void batch_send(shoal_client *c, const char *coll, struct batch *b,
		       struct progress *p, uint64_t *stale)
{
	if (!b->n)
		return;
	embed_texts(b);
	shoal_write_result *wr = NULL;
	int rc = shoal_upsert(c, coll, b->pts, b->n, &wr);
	if (rc != SHOAL_OK) {
		if (p->tty)
			fprintf(stderr, "\n");
		ctl_die("import: after %" PRIu64 " points: %s (%s)", p->done,
			shoal_last_error(), shoal_errname(rc));
	}
	for (size_t i = 0; i < wr->n; i++) {
		if (wr->statuses[i].code == SHOAL_ESTALE)
			(*stale)++;
		else if (wr->statuses[i].code != SHOAL_OK)
			ctl_die("import: point %zu of a batch: %s %s", i,
				shoal_errname(wr->statuses[i].code),
				wr->statuses[i].message);
	}
	shoal_write_result_free(wr);
	p->done += b->n;
	batch_clear(b);
	progress_show(p, false);
}

static void import_fvecs(shoal_client *c, const char *coll, FILE *f,
			 uint64_t size, uint64_t id0, struct batch *b,
			 struct progress *p, uint64_t *stale)
{
	int32_t dim;
	uint64_t id = id0;
	while (fread(&dim, 4, 1, f) == 1) {
		if (dim <= 0 || dim > MAX_DIM)
			ctl_die("import: vector %" PRIu64 ": dimension %d",
				id - id0, dim);
		if (!p->total)
			p->total = size / (4 + 4 * (uint64_t)dim);
		float *v = b->vecs + b->n * MAX_DIM;
		if (fread(v, 4, (size_t)dim, f) != (size_t)dim)
			ctl_die("import: truncated file at vector %" PRIu64,
				id - id0);
		shoal_point *pt = &b->pts[b->n++];
		memset(pt, 0, sizeof(*pt));
		pt->id = shoal_id_num(id++);
		pt->vector = v;
		pt->dim = (size_t)dim;
		if (b->n == b->cap)
			batch_send(c, coll, b, p, stale);
	}
	batch_send(c, coll, b, p, stale);
}

static void import_jsonl(shoal_client *c, const char *coll, FILE *f,
			 struct batch *b, struct progress *p, uint64_t *stale)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	uint64_t lineno = 0;
	while ((len = getline(&line, &cap, f)) >= 0) {
		lineno++;
		if (len <= 1 && (len == 0 || line[0] == '\n'))
			continue;
		cJSON *o = cJSON_ParseWithLength(line, (size_t)len);
		if (!cJSON_IsObject(o))
			ctl_die("import: line %" PRIu64 ": not a JSON object",
				lineno);
		shoal_point *pt = &b->pts[b->n];
		memset(pt, 0, sizeof(*pt));
		const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
		if (cJSON_IsString(id)) {
			b->strids[b->n] = strdup(id->valuestring);
			pt->id = shoal_id_str(b->strids[b->n]);
		} else if (cJSON_IsNumber(id) && id->valuedouble >= 0 &&
			   id->valuedouble <= 9007199254740992.0 &&
			   id->valuedouble ==
			       (double)(uint64_t)id->valuedouble) {
			pt->id = shoal_id_num((uint64_t)id->valuedouble);
		} else {
			ctl_die("import: line %" PRIu64 ": \"id\" must be a "
				"string or a non-negative integer",
				lineno);
		}
		const cJSON *vec =
		    cJSON_GetObjectItemCaseSensitive(o, "vector");
		const cJSON *txt = cJSON_GetObjectItemCaseSensitive(o, "text");
		if (!vec && cJSON_IsString(txt)) {
			/* embedded with its batch (embed_texts) */
			b->texts[b->n] = strdup(txt->valuestring);
			if (!b->texts[b->n])
				ctl_die("out of memory");
		} else {
			int dim = cJSON_GetArraySize(vec);
			if (!cJSON_IsArray(vec) || dim <= 0 || dim > MAX_DIM)
				ctl_die("import: line %" PRIu64
					": \"vector\" must be an array of "
					"1..%d numbers (or give a \"text\")",
					lineno, MAX_DIM);
			float *v = b->vecs + b->n * MAX_DIM;
			int j = 0;
			const cJSON *x;
			cJSON_ArrayForEach(x, vec)
			{
				if (!cJSON_IsNumber(x))
					ctl_die("import: line %" PRIu64
						": vector[%d] is not a number",
						lineno, j);
				v[j++] = (float)x->valuedouble;
			}
			pt->vector = v;
			pt->dim = (size_t)dim;
		}
		const cJSON *pl =
		    cJSON_GetObjectItemCaseSensitive(o, "payload");
		if (pl && !cJSON_IsNull(pl)) {
			if (!cJSON_IsObject(pl))
				ctl_die("import: line %" PRIu64 ": \"payload\" "
					"must be an object",
					lineno);
			b->payloads[b->n] = cJSON_PrintUnformatted(pl);
			pt->payload_json = b->payloads[b->n];
		}
		const cJSON *ver =
		    cJSON_GetObjectItemCaseSensitive(o, "version");
		if (cJSON_IsNumber(ver) && ver->valuedouble >= 0)
			pt->version = (uint64_t)ver->valuedouble;
		cJSON_Delete(o);
		b->n++;
		if (b->n == b->cap)
			batch_send(c, coll, b, p, stale);
	}
	free(line);
	batch_send(c, coll, b, p, stale);
}

int ctl_import(int argc, char **argv)
{
	if (argc < 2)
		ctl_die("import COLLECTION FILE [--batch N] [--id-start N]");
	const char *coll = argv[0], *path = argv[1];
	size_t bsz = 256;
	uint64_t id0 = 0;
	for (int i = 2; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--batch"))
			bsz = strtoul(argv[i + 1], NULL, 10);
		else if (!strcmp(argv[i], "--id-start"))
			id0 = strtoull(argv[i + 1], NULL, 10);
		else
			ctl_die("import: unknown flag %s", argv[i]);
	}
	if (bsz == 0 || bsz > 10000)
		ctl_die("--batch: 1..10000");
	FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
	if (!f)
		ctl_die("import: %s: %s", path, strerror(errno));
	struct stat st;
	uint64_t size = fstat(fileno(f), &st) == 0 ? (uint64_t)st.st_size : 0;
	shoal_client *c = ctl_connect();
	struct batch b;
	batch_init(&b, bsz);
	struct progress p = {.t0 = ctl_now(), .tty = isatty(2) != 0};
	uint64_t stale = 0;
	size_t pl = strlen(path);
	if (pl > 6 && !strcmp(path + pl - 6, ".fvecs"))
		import_fvecs(c, coll, f, size, id0, &b, &p, &stale);
	else
		import_jsonl(c, coll, f, &b, &p, &stale);
	progress_show(&p, true);
	if (stale)
		fprintf(stderr,
			"import: %" PRIu64 " points ignored: a newer "
			"version is stored\n",
			stale);
	if (ctl.json)
		printf("{\"imported\":%" PRIu64 ",\"stale\":%" PRIu64 "}\n",
		       p.done, stale);
	if (f != stdin)
		fclose(f);
	free(b.pts);
	free(b.vecs);
	free(b.payloads);
	free(b.strids);
	free(b.texts);
	shoal_embedder_close(b.e);
	shoal_close(c);
	return 0;
}

/* ---- Export
 * --------------------------------------------------------------------- */

static cJSON *id_json(const shoal_id *id)
{
	return id->kind == SHOAL_ID_STR ? cJSON_CreateString(id->str)
					: cJSON_CreateNumber((double)id->num);
}

int ctl_export(int argc, char **argv)
{
	if (argc < 1)
		ctl_die("export COLLECTION [--filter TEXT] [--with-vector] "
			"[--out FILE]");
	const char *ftext = NULL, *out = NULL;
	bool with_vector = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--with-vector"))
			with_vector = true;
		else if (!strcmp(argv[i], "--filter") && i + 1 < argc)
			ftext = argv[++i];
		else if (!strcmp(argv[i], "--out") && i + 1 < argc)
			out = argv[++i];
		else
			ctl_die("export: unknown flag %s", argv[i]);
	}
	FILE *f = out ? fopen(out, "w") : stdout;
	if (!f)
		ctl_die("export: %s: %s", out, strerror(errno));
	shoal_filter *flt = ctl_filter(ftext);
	shoal_client *c = ctl_connect();
	shoal_scroll_options so = {.filter = flt,
				   .limit = 1000,
				   .with_payload = true,
				   .with_vector = with_vector};
	uint8_t *cur = NULL;
	uint64_t n = 0;
	for (;;) {
		shoal_points *pg;
		ctl_check(shoal_scroll(c, argv[0], &so, &pg), argv[0]);
		for (size_t i = 0; i < pg->n; i++) {
			const shoal_point *pt = &pg->points[i];
			cJSON *o = cJSON_CreateObject();
			cJSON_AddItemToObject(o, "id", id_json(&pt->id));
			if (pt->vector) {
				cJSON *a = cJSON_AddArrayToObject(o, "vector");
				for (size_t j = 0; j < pt->dim; j++)
					cJSON_AddItemToArray(
					    a,
					    cJSON_CreateNumber(pt->vector[j]));
			}
			cJSON *pl = pt->payload_json && *pt->payload_json
					? cJSON_Parse(pt->payload_json)
					: NULL;
			if (pl)
				cJSON_AddItemToObject(o, "payload", pl);
			cJSON_AddNumberToObject(o, "version",
						(double)pt->version);
			char *s = cJSON_PrintUnformatted(o);
			fprintf(f, "%s\n", s);
			cJSON_free(s);
			cJSON_Delete(o);
			n++;
		}
		free(cur);
		cur = NULL;
		if (!pg->next_cursor_len) {
			shoal_points_free(pg);
			break;
		}
		cur = malloc(pg->next_cursor_len);
		if (!cur)
			ctl_die("out of memory");
		memcpy(cur, pg->next_cursor, pg->next_cursor_len);
		so.cursor = cur;
		so.cursor_len = pg->next_cursor_len;
		shoal_points_free(pg);
	}
	if (f != stdout && fclose(f) != 0)
		ctl_die("export: %s: %s", out, strerror(errno));
	fprintf(stderr, "export: %" PRIu64 " points\n", n);
	shoal_filter_free(flt);
	shoal_close(c);
	return 0;
}

/* ---- Search
 * ---------------------------------------------------------------------- */

static const char *plan_name(int p)
{
	return p == SHOAL_PLAN_GRAPH		? "graph"
	       : p == SHOAL_PLAN_FILTERED_GRAPH ? "filtered graph"
	       : p == SHOAL_PLAN_EXACT_SCAN	? "exact scan"
						: "?";
}

int ctl_search(int argc, char **argv)
{
	if (argc < 1)
		ctl_die("search COLLECTION (--vector V | --query-file F) ...");
	const char *coll = argv[0], *vtext = NULL, *qfile = NULL, *ftext = NULL,
		   *text = NULL;
	shoal_search_options so = SHOAL_SEARCH_OPTIONS_INIT;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--with-payload")) {
			so.with_payload = true;
			continue;
		}
		if (i + 1 >= argc)
			ctl_die("search: %s needs a value", a);
		const char *v = argv[++i];
		if (!strcmp(a, "--vector"))
			vtext = v;
		else if (!strcmp(a, "--query-file"))
			qfile = v;
		else if (!strcmp(a, "--text"))
			text = v;
		else if (!strcmp(a, "--filter"))
			ftext = v;
		else if (!strcmp(a, "--k"))
			so.k = (uint32_t)strtoul(v, NULL, 10);
		else if (!strcmp(a, "--ef"))
			so.ef = (uint32_t)strtoul(v, NULL, 10);
		else if (!strcmp(a, "--min-coverage"))
			so.min_coverage = strtof(v, NULL);
		else
			ctl_die("search: unknown flag %s", a);
	}
	if ((vtext != NULL) + (qfile != NULL) + (text != NULL) != 1)
		ctl_die("search: give one of --vector, --query-file, --text");
	float *q = NULL;
	size_t nq = 0, dim = 0;
	if (text) {
		/* one vector, made by the embedding server */
		shoal_embedder *e = ctl_embedder();
		shoal_embeddings *em;
		ctl_check(shoal_embed(e, ctl.model, &text, 1, &em), "--text");
		shoal_embedder_close(e);
		q = malloc(em->dim * sizeof(float));
		if (!q)
			ctl_die("out of memory");
		memcpy(q, em->vectors, em->dim * sizeof(float));
		dim = em->dim;
		nq = 1;
		shoal_embeddings_free(em);
	} else if (vtext) {
		q = malloc(MAX_DIM * sizeof(float));
		const char *s = vtext;
		while (q && *s && dim < MAX_DIM) {
			char *end;
			q[dim++] = strtof(s, &end);
			if (end == s)
				ctl_die(
				    "--vector: numbers separated by commas");
			s = *end == ',' ? end + 1 : end;
		}
		nq = 1;
	} else {
		FILE *f = fopen(qfile, "rb");
		if (!f)
			ctl_die("%s: %s", qfile, strerror(errno));
		int32_t d;
		size_t cap = 0;
		while (fread(&d, 4, 1, f) == 1) {
			if (d <= 0 || d > MAX_DIM || (dim && (size_t)d != dim))
				ctl_die("%s: bad dimension %d", qfile, d);
			dim = (size_t)d;
			if (nq == cap) {
				cap = cap ? 2 * cap : 64;
				q = realloc(q, cap * dim * sizeof(float));
				if (!q)
					ctl_die("out of memory");
			}
			if (fread(q + nq * dim, 4, dim, f) != dim)
				ctl_die("%s: truncated", qfile);
			nq++;
		}
		fclose(f);
		if (!nq)
			ctl_die("%s: no vectors", qfile);
	}
	shoal_filter *flt = ctl_filter(ftext);
	so.filter = flt;
	shoal_client *c = ctl_connect();
	for (size_t off = 0; off < nq; off += 1024) {
		size_t m = nq - off < 1024 ? nq - off : 1024;
		shoal_search_result *r;
		double t0 = ctl_now();
		ctl_check(
		    shoal_search_batch(c, coll, q + off * dim, m, dim, &so, &r),
		    coll);
		double ms = (ctl_now() - t0) * 1e3;
		for (size_t i = 0; i < r->n_queries; i++) {
			const shoal_query_result *qr = &r->queries[i];
			if (ctl.json) {
				cJSON *o = cJSON_CreateObject();
				cJSON_AddNumberToObject(o, "query",
							(double)(off + i));
				cJSON *a = cJSON_AddArrayToObject(o, "hits");
				for (size_t h = 0; h < qr->n_hits; h++) {
					cJSON *x = cJSON_CreateObject();
					cJSON_AddItemToObject(
					    x, "id", id_json(&qr->hits[h].id));
					cJSON_AddNumberToObject(
					    x, "distance",
					    qr->hits[h].distance);
					cJSON *pl =
					    so.with_payload &&
						    *qr->hits[h].payload_json
						? cJSON_Parse(
						      qr->hits[h].payload_json)
						: NULL;
					if (pl)
						cJSON_AddItemToObject(
						    x, "payload", pl);
					cJSON_AddItemToArray(a, x);
				}
				cJSON_AddStringToObject(o, "plan",
							plan_name(qr->plan));
				cJSON_AddNumberToObject(o, "nodes_answered",
							r->nodes_answered);
				cJSON_AddNumberToObject(o, "nodes_asked",
							r->nodes_asked);
				ctl_print_json(o);
				continue;
			}
			printf("query %zu: %zu hits, plan %s, nodes %u/%u, "
			       "%.2f ms\n",
			       off + i, qr->n_hits, plan_name(qr->plan),
			       r->nodes_answered, r->nodes_asked,
			       nq == 1 ? ms : ms / (double)m);
			printf("  %4s  %-24s %12s  %s\n", "RANK", "ID",
			       "DISTANCE", so.with_payload ? "PAYLOAD" : "");
			for (size_t h = 0; h < qr->n_hits; h++) {
				const shoal_hit *hit = &qr->hits[h];
				char idb[80];
				if (hit->id.kind == SHOAL_ID_STR)
					snprintf(idb, sizeof(idb), "\"%s\"",
						 hit->id.str);
				else
					snprintf(idb, sizeof(idb), "%" PRIu64,
						 hit->id.num);
				printf("  %4zu  %-24s %12.6g  %s\n", h + 1, idb,
				       hit->distance,
				       so.with_payload ? hit->payload_json
						       : "");
			}
		}
		shoal_search_result_free(r);
	}
	free(q);
	shoal_filter_free(flt);
	shoal_close(c);
	return 0;
}
