/*
 * The embedding server's batcher on a GPU, in process (no sockets: the GPU
 * machine has no nng server to talk to): T client threads each embed one
 * short product query at a time through sh_embed_server_embed, with
 * dynamic batching on and off, the cache off, for SECONDS after a 0.5 s
 * warm-up that is not counted (as shoal-bench embed does). Prints one JSON
 * line per (mode, concurrency): texts/s, p50, p99, and the longest
 * forward pass. Built and run by gpu-check.sh.
 *
 *   server_check MODEL_DIR [SECONDS]
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "embed_server.h"
#include "error.h"

static const char *const words[] = {
    "red",	"leather", "running", "shoes", "wool",	 "scarf",  "denim",
    "jacket",	"canvas",  "tote",    "bag",   "oak",	 "dining", "table",
    "office",	"chair",   "silk",    "tie",   "rain",	 "coat",   "hiking",
    "backpack", "cotton",  "shirt",   "linen", "summer", "winter", "kids",
};
#define NWORDS (sizeof(words) / sizeof(words[0]))

struct job {
	sh_embed_server *s;
	double from, until; /* the measured window */
	atomic_uint_fast64_t seq;
	int err;
};

struct worker {
	pthread_t t;
	struct job *j;
	float *lat;
	size_t n, cap;
};

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void *run(void *arg)
{
	struct worker *w = arg;
	float out[1024];
	char text[256];
	while (now_s() < w->j->until) {
		/* a fresh text every time: the cache is off anyway */
		uint64_t x = atomic_fetch_add(&w->j->seq, 1) * 2654435761u + 7;
		size_t len = 0;
		int nw = 3 + (int)(x % 6);
		for (int i = 0; i < nw; i++) {
			x = x * 6364136223846793005ull + 1442695040888963407ull;
			len += (size_t)snprintf(text + len, sizeof(text) - len,
						"%s%s", i ? " " : "",
						words[(x >> 33) % NWORDS]);
		}
		const char *t = text;
		uint32_t dim;
		char err[256];
		double t0 = now_s();
		if (sh_embed_server_embed(w->j->s, NULL, &t, &len, 1, out, &dim,
					  NULL, 0, err, sizeof(err)) != SH_OK) {
			fprintf(stderr, "server_check: %s\n", err);
			w->j->err = 1;
			break;
		}
		if (t0 < w->j->from)
			continue; /* warm-up */
		if (w->n == w->cap) {
			w->cap = w->cap ? 2 * w->cap : 4096;
			w->lat = realloc(w->lat, w->cap * sizeof(float));
		}
		w->lat[w->n++] = (float)(now_s() - t0);
	}
	return NULL;
}

static int cmpf(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: server_check MODEL_DIR [SECONDS]\n");
		return 2;
	}
	double secs = argc > 2 ? atof(argv[2]) : 3;
	static const int conc[] = {1, 8, 64, 256, 1024};
	for (int batching = 1; batching >= 0; batching--) {
		sh_embed_model_spec m = {"minilm", argv[1]};
		sh_embed_opts o;
		sh_embed_opts_default(&o);
		o.models = &m;
		o.nmodels = 1;
		o.backend = SH_EMBED_BACKEND_CUDA;
		o.batching = batching;
		o.cache_entries = 0;
		o.max_queue = 1u << 16;
		sh_embed_server *s;
		char err[512];
		if (sh_embed_server_open(&o, &s, err, sizeof(err)) != SH_OK) {
			fprintf(stderr, "server_check: %s\n", err);
			return 1;
		}
		sh_embed_server_set_state(s, 1);
		for (size_t c = 0; c < sizeof(conc) / sizeof(conc[0]); c++) {
			int nt = conc[c];
			if (!batching && nt > 64)
				break; /* one text per forward: enough said */
			double t0 = now_s() + 0.5;
			struct job j = {.s = s, .from = t0, .until = t0 + secs};
			struct worker *w = calloc((size_t)nt, sizeof(*w));
			for (int i = 0; i < nt; i++) {
				w[i].j = &j;
				pthread_create(&w[i].t, NULL, run, &w[i]);
			}
			size_t total = 0;
			for (int i = 0; i < nt; i++) {
				pthread_join(w[i].t, NULL);
				total += w[i].n;
			}
			double el = now_s() - t0; /* from the window's start */
			float *all =
			    malloc((total ? total : 1) * sizeof(float));
			size_t o2 = 0;
			for (int i = 0; i < nt; i++) {
				memcpy(all + o2, w[i].lat,
				       w[i].n * sizeof(float));
				o2 += w[i].n;
				free(w[i].lat);
			}
			free(w);
			qsort(all, total, sizeof(float), cmpf);
			printf("{\"server_check\":\"embed\",\"backend\":\"%s\","
			       "\"batching\":%s,\"max_batch\":%d,"
			       "\"concurrency\":%d,\"texts_per_s\":%.1f,"
			       "\"p50_ms\":%.3f,\"p99_ms\":%.3f}\n",
			       sh_embed_server_backend(s, NULL),
			       batching ? "true" : "false",
			       sh_embed_server_max_batch(s), nt,
			       (double)total / el,
			       total ? all[total / 2] * 1e3 : 0,
			       total
				   ? all[(size_t)((double)(total - 1) * 0.99)] *
					 1e3
				   : 0);
			fflush(stdout);
			free(all);
			if (j.err)
				return 1;
		}
		sh_embed_server_set_state(s, 2);
		sh_embed_server_close(s);
	}
	return 0;
}
