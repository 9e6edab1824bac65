/* shoal-bench node (node_bench.c): built when the node is. */
#ifndef SH_NODE_BENCH_H
#define SH_NODE_BENCH_H

int cmd_node(int argc, char **argv);

#endif
