/* search_text from C, for tests/integration/test_e2e_text.py: prints the
 * ids of an exact search by text, one per line.
 *   search_text EMBED_URL COLLECTION K TEXT */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "shoal.h"

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: search_text EMBED_URL COLLECTION K "
				"TEXT\n");
		return 2;
	}
	shoal_embedder *e;
	const char *url = argv[1];
	int rc = shoal_embedder_connect(&url, 1, 10000, &e);
	if (rc) {
		fprintf(stderr, "search_text: %s\n", shoal_last_error());
		return 1;
	}
	shoal_search_options so = SHOAL_SEARCH_OPTIONS_INIT;
	so.k = (uint32_t)atoi(argv[3]);
	so.exact = true;
	shoal_search_result *r;
	rc = shoal_search_text(e, NULL, argv[2], argv[4], &so, &r);
	if (rc) {
		fprintf(stderr, "search_text: %s\n", shoal_last_error());
		shoal_embedder_close(e);
		return 1;
	}
	for (size_t i = 0; i < r->queries[0].n_hits; i++) {
		const shoal_hit *h = &r->queries[0].hits[i];
		if (h->id.kind == SHOAL_ID_STR)
			printf("%s\n", h->id.str);
		else
			printf("%" PRIu64 "\n", h->id.num);
	}
	shoal_search_result_free(r);
	shoal_embedder_close(e);
	return 0;
}
