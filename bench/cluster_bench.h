/* shoal-bench cluster (cluster_bench.c): built when the router is. */
#ifndef SH_CLUSTER_BENCH_H
#define SH_CLUSTER_BENCH_H

int cmd_cluster(int argc, char **argv);

#endif
