// shoal-bench peer: FAISS IndexHNSWFlat (Debian libfaiss-dev 1.7.3, static
// libfaiss.a, linked with the C++ compiler and -fopenmp -lblas -llapack).
//
// Compiled with -O3 -march=native like the hnswlib adapter (bench/
// meson.build). FAISS's own distance code is precompiled in libfaiss.a, so
// the flags matter less here than for header-only hnswlib, but the adapter
// gets the same treatment.
//
// Filtered search: FAISS 1.7.3 has SearchParameters::sel (an IDSelector) and
// IndexHNSW::search honours it through SearchParametersHNSW (checked: with
// an IDSelectorBitmap every result passes), so filtering is supported.
//
// Build threads: omp_set_num_threads(threads) before IndexHNSW::add, which
// inserts in parallel with OpenMP. Search threads are the bench's pthreads,
// each issuing one query at a time; each sets its own OpenMP thread count
// to 1 on first use, so that a single-query search does not fan out into an
// OpenMP team on top of the bench's threads.
#include "peers.h"

#include <faiss/IndexHNSW.h>
#include <faiss/impl/HNSW.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/utils/random.h>
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <vector>

namespace
{

using idx_t = faiss::Index::idx_t;

thread_local std::string t_err;
thread_local std::vector<float> t_scratch;
thread_local std::vector<float> t_dist;
thread_local std::vector<idx_t> t_ids;
thread_local bool t_omp_single;

struct FaissPeer {
	uint32_t dim = 0;
	int metric = SH_PEER_L2;
	size_t ef = 16;
	std::unique_ptr<faiss::IndexHNSWFlat> idx;
};

FaissPeer *cast(sh_peer *p)
{
	return reinterpret_cast<FaissPeer *>(p);
}

const FaissPeer *cast(const sh_peer *p)
{
	return reinterpret_cast<const FaissPeer *>(p);
}

void normalise(const float *v, float *out, size_t dim)
{
	double s = 0;
	for (size_t i = 0; i < dim; i++)
		s += (double)v[i] * v[i];
	float inv = s > 0 ? (float)(1.0 / std::sqrt(s)) : 0.0f;
	for (size_t i = 0; i < dim; i++)
		out[i] = v[i] * inv;
}

// Cosine: inner product on unit vectors, normalised into scratch.
const float *prep(const FaissPeer *f, const float *v, size_t n,
		  std::vector<float> &buf)
{
	if (f->metric != SH_PEER_COSINE)
		return v;
	buf.resize(n * f->dim);
	for (size_t i = 0; i < n; i++)
		normalise(v + i * f->dim, buf.data() + i * f->dim, f->dim);
	return buf.data();
}

sh_peer *f_create(uint32_t dim, int metric, uint32_t m, uint32_t efc,
		  uint64_t seed, size_t max_n, char *err, size_t errlen)
{
	(void)max_n;
	try {
		auto f = std::make_unique<FaissPeer>();
		f->dim = dim;
		f->metric = metric;
		f->idx = std::make_unique<faiss::IndexHNSWFlat>(
		    (int)dim, (int)m,
		    metric == SH_PEER_L2 ? faiss::METRIC_L2
					 : faiss::METRIC_INNER_PRODUCT);
		f->idx->hnsw.efConstruction = (int)efc;
		f->idx->hnsw.rng = faiss::RandomGenerator((int64_t)seed);
		return reinterpret_cast<sh_peer *>(f.release());
	} catch (const std::exception &e) {
		snprintf(err, errlen, "faiss: %s", e.what());
	} catch (...) {
		snprintf(err, errlen, "faiss: unknown exception");
	}
	return nullptr;
}

int f_add_n(FaissPeer *f, const float *v, size_t n)
{
	try {
		std::vector<float> buf;
		f->idx->add((idx_t)n, prep(f, v, n, buf));
		return 0;
	} catch (const std::exception &e) {
		t_err = std::string("faiss: ") + e.what();
	} catch (...) {
		t_err = "faiss: unknown exception";
	}
	return -1;
}

// FAISS numbers points in insertion order, so the id is implicit: i must be
// the next index (the bench adds 0, 1, 2, ...).
int f_add(sh_peer *p, uint64_t i, const float *vec)
{
	FaissPeer *f = cast(p);
	if (i != (uint64_t)f->idx->ntotal) {
		t_err = "faiss: points must be added in id order";
		return -1;
	}
	return f_add_n(f, vec, 1);
}

int f_add_all(sh_peer *p, const float *base, size_t n, unsigned threads)
{
	FaissPeer *f = cast(p);
	if (f->idx->ntotal != 0) {
		t_err = "faiss: add_all on a non-empty index";
		return -1;
	}
	omp_set_num_threads((int)threads);
	return f_add_n(f, base, n);
}

// Both the index's efSearch and the per-search parameter: in 1.7.3,
// HNSW::search sizes its candidate heap from the member hnsw.efSearch and
// only the stopping rule reads SearchParametersHNSW::efSearch, so setting
// the parameter alone caps recall at ef=16 (the default).
void f_set_ef(sh_peer *p, size_t ef)
{
	FaissPeer *f = cast(p);
	f->ef = ef;
	f->idx->hnsw.efSearch = (int)ef;
}

int f_search(sh_peer *p, const float *q, size_t k, const sh_peer_filter *flt,
	     int64_t *out_ids, size_t *nout)
{
	const FaissPeer *f = cast(p);
	*nout = 0;
	if (!t_omp_single) {
		omp_set_num_threads(1);
		t_omp_single = true;
	}
	try {
		faiss::SearchParametersHNSW sp;
		sp.efSearch = (int)f->ef;
		std::unique_ptr<faiss::IDSelectorBitmap> sel;
		if (flt) {
			sel = std::make_unique<faiss::IDSelectorBitmap>(
			    (flt->n + 7) / 8, flt->bits);
			sp.sel = sel.get();
		}
		t_dist.resize(k);
		t_ids.resize(k);
		f->idx->search(1, prep(f, q, 1, t_scratch), (idx_t)k,
			       t_dist.data(), t_ids.data(), &sp);
		size_t n = 0;
		for (size_t i = 0; i < k; i++) {
			if (t_ids[i] >= 0)
				out_ids[n++] = t_ids[i];
		}
		*nout = n;
		return 0;
	} catch (const std::exception &e) {
		t_err = std::string("faiss: ") + e.what();
	} catch (...) {
		t_err = "faiss: unknown exception";
	}
	return -1;
}

// Index storage size, not RSS: the flat storage's codes (n * dim floats) and
// the HNSW graph's arrays (neighbors, offsets, levels, probabilities).
uint64_t f_mem_bytes(const sh_peer *p)
{
	const faiss::IndexHNSWFlat *x = cast(p)->idx.get();
	const faiss::HNSW &g = x->hnsw;
	uint64_t b = 0;
	auto *flat = dynamic_cast<const faiss::IndexFlatCodes *>(x->storage);
	if (flat)
		b += flat->codes.size();
	else
		b += (uint64_t)x->ntotal * x->d * sizeof(float);
	b += g.neighbors.size() * sizeof(g.neighbors[0]);
	b += g.offsets.size() * sizeof(g.offsets[0]);
	b += g.levels.size() * sizeof(g.levels[0]);
	b += g.assign_probas.size() * sizeof(double);
	b += g.cum_nneighbor_per_level.size() * sizeof(int);
	return b;
}

void f_free(sh_peer *p)
{
	delete cast(p);
}

const char *f_errmsg(void)
{
	return t_err.c_str();
}

} // namespace

extern "C" const sh_peer_ops sh_peer_faiss_ops = {
    "faiss",   true,
    "",	       "index storage size: flat codes + HNSW neighbors/offsets/levels",
    f_create,  f_add,
    f_add_all, f_set_ef,
    f_search,  f_mem_bytes,
    f_free,    f_errmsg,
};
