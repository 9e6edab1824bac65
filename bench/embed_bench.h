/* shoal-bench embed (embed_bench.c): built when shoal-embed is. */
#ifndef SH_EMBED_BENCH_H
#define SH_EMBED_BENCH_H

int cmd_embed(int argc, char **argv);

#endif
