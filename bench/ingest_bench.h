/* shoal-bench ingest (ingest_bench.c): built when shoal-ingest, the router
 * and the shoal-kafka-mock TEST cluster are. */
#ifndef SH_INGEST_BENCH_H
#define SH_INGEST_BENCH_H

int cmd_ingest(int argc, char **argv);

#endif
