/* shoal-bench rebalance (rebalance_bench.c): an online slot move measured
 * through the router. Built when the router is (SHOAL_BENCH_CLUSTER). */
#ifndef SH_REBALANCE_BENCH_H
#define SH_REBALANCE_BENCH_H

/* Runs the benchmark with shoal-bench's argv (argv[1] is "rebalance").
 * Prints JSON lines on stdout and a table on stderr. Returns the exit
 * status: 0, 1 when the benchmark failed, 2 on a usage error. Blocks for
 * the whole run; call from the main thread. */
int cmd_rebalance(int argc, char **argv);

#endif
