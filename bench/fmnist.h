/* shoal-bench fmnist (fmnist.c): Debian's Fashion-MNIST as benchmark
 * files. Built when zlib is found. */
#ifndef SH_BENCH_FMNIST_H
#define SH_BENCH_FMNIST_H

int cmd_fmnist(int argc, char **argv);

#endif
