// shoal-bench peer: hnswlib (Debian libhnswlib-dev 0.6.2, header-only).
//
// hnswlib picks its distance SIMD (SSE / AVX / AVX-512) at compile time from
// the compiler's target flags, while shoal chooses AVX-512 at run time. So
// bench/meson.build compiles this file with -O3 -march=native: the peer gets
// the same instructions as shoal on this machine. A win over a peer built
// for baseline x86-64 (SSE only) would be no win.
//
// hnswlib 0.6.2's searchKnn(query, k) takes no filter functor (filters
// arrived in 0.7.0), so filtered search is reported as unsupported rather
// than emulated by post-filtering a larger k.
#include "peers.h"

#include <hnswlib/hnswlib.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

namespace
{

thread_local std::string t_err;
thread_local std::vector<float> t_scratch;

struct HnswPeer {
	uint32_t dim = 0;
	int metric = SH_PEER_L2;
	size_t max_n = 0;
	std::unique_ptr<hnswlib::SpaceInterface<float>> space;
	std::unique_ptr<hnswlib::HierarchicalNSW<float>> alg;
};

HnswPeer *cast(sh_peer *p)
{
	return reinterpret_cast<HnswPeer *>(p);
}

const HnswPeer *cast(const sh_peer *p)
{
	return reinterpret_cast<const HnswPeer *>(p);
}

// Cosine: hnswlib's InnerProductSpace on unit vectors. Normalises into a
// per-thread scratch copy; other metrics pass the vector through.
const float *prep(const HnswPeer *h, const float *v, std::vector<float> &buf)
{
	if (h->metric != SH_PEER_COSINE)
		return v;
	buf.resize(h->dim);
	double s = 0;
	for (uint32_t i = 0; i < h->dim; i++)
		s += (double)v[i] * v[i];
	float inv = s > 0 ? (float)(1.0 / std::sqrt(s)) : 0.0f;
	for (uint32_t i = 0; i < h->dim; i++)
		buf[i] = v[i] * inv;
	return buf.data();
}

sh_peer *h_create(uint32_t dim, int metric, uint32_t m, uint32_t efc,
		  uint64_t seed, size_t max_n, char *err, size_t errlen)
{
	try {
		auto h = std::make_unique<HnswPeer>();
		h->dim = dim;
		h->metric = metric;
		h->max_n = max_n;
		if (metric == SH_PEER_L2)
			h->space = std::make_unique<hnswlib::L2Space>(dim);
		else
			h->space =
			    std::make_unique<hnswlib::InnerProductSpace>(dim);
		h->alg = std::make_unique<hnswlib::HierarchicalNSW<float>>(
		    h->space.get(), max_n, m, efc, (size_t)seed);
		return reinterpret_cast<sh_peer *>(h.release());
	} catch (const std::exception &e) {
		snprintf(err, errlen, "hnswlib: %s", e.what());
	} catch (...) {
		snprintf(err, errlen, "hnswlib: unknown exception");
	}
	return nullptr;
}

int h_add(sh_peer *p, uint64_t i, const float *vec)
{
	HnswPeer *h = cast(p);
	try {
		h->alg->addPoint(prep(h, vec, t_scratch),
				 (hnswlib::labeltype)i);
		return 0;
	} catch (const std::exception &e) {
		t_err = std::string("hnswlib: ") + e.what();
	} catch (...) {
		t_err = "hnswlib: unknown exception";
	}
	return -1;
}

// The python bindings' ParallelFor: the first point alone (it becomes the
// entry point), then threads take the next index from a shared counter.
int h_add_all(sh_peer *p, const float *base, size_t n, unsigned threads)
{
	HnswPeer *h = cast(p);
	if (n == 0)
		return 0;
	if (h_add(p, 0, base) != 0)
		return -1;
	std::atomic<size_t> next{1};
	std::atomic<bool> failed{false};
	std::mutex mu;
	std::string first_err;
	auto work = [&]() {
		std::vector<float> buf;
		for (;;) {
			size_t i = next.fetch_add(1);
			if (i >= n || failed.load())
				return;
			try {
				h->alg->addPoint(
				    prep(h, base + i * h->dim, buf),
				    (hnswlib::labeltype)i);
			} catch (const std::exception &e) {
				std::lock_guard<std::mutex> g(mu);
				if (!failed.exchange(true))
					first_err = e.what();
				return;
			}
		}
	};
	try {
		std::vector<std::thread> pool;
		for (unsigned t = 1; t < threads; t++)
			pool.emplace_back(work);
		work();
		for (auto &t : pool)
			t.join();
	} catch (const std::exception &e) {
		t_err = std::string("hnswlib: ") + e.what();
		return -1;
	}
	if (failed.load()) {
		t_err = "hnswlib: " + first_err;
		return -1;
	}
	return 0;
}

void h_set_ef(sh_peer *p, size_t ef)
{
	cast(p)->alg->setEf(ef);
}

int h_search(sh_peer *p, const float *q, size_t k, const sh_peer_filter *f,
	     int64_t *out_ids, size_t *nout)
{
	HnswPeer *h = cast(p);
	*nout = 0;
	if (f) {
		t_err = "hnswlib 0.6.2: searchKnn takes no filter";
		return -1;
	}
	try {
		auto res = h->alg->searchKnn(prep(h, q, t_scratch), k);
		// The queue pops farthest first.
		size_t n = res.size();
		for (size_t i = n; i-- > 0;) {
			out_ids[i] = (int64_t)res.top().second;
			res.pop();
		}
		*nout = n;
		return 0;
	} catch (const std::exception &e) {
		t_err = std::string("hnswlib: ") + e.what();
	} catch (...) {
		t_err = "hnswlib: unknown exception";
	}
	return -1;
}

// hnswlib's own structures, counted from its members: the level-0 block
// (links + vector + label per element, allocated for max_elements_), the
// per-element pointer array and upper-level link lists, element_levels_
// and the per-element locks. The label hash map is not counted (shoal's id
// table is in its mem_bytes, so this slightly favours hnswlib).
uint64_t h_mem_bytes(const sh_peer *p)
{
	const auto *a = cast(p)->alg.get();
	uint64_t b = (uint64_t)a->max_elements_ * a->size_data_per_element_;
	b += (uint64_t)a->max_elements_ * sizeof(void *);
	b += (uint64_t)a->max_elements_ * sizeof(int);
	b += (uint64_t)a->max_elements_ * sizeof(std::mutex);
	for (size_t i = 0; i < a->cur_element_count; i++) {
		if (a->element_levels_[i] > 0)
			b += (uint64_t)a->element_levels_[i] *
			     a->size_links_per_element_;
	}
	return b;
}

void h_free(sh_peer *p)
{
	delete cast(p);
}

const char *h_errmsg(void)
{
	return t_err.c_str();
}

} // namespace

extern "C" const sh_peer_ops sh_peer_hnswlib_ops = {
    "hnswlib",
    false,
    "hnswlib 0.6.2: searchKnn(query, k) takes no filter functor "
    "(added in 0.7.0); filtered search unsupported",
    "hnswlib's own accounting: level-0 block + upper link lists + "
    "per-element arrays",
    h_create,
    h_add,
    h_add_all,
    h_set_ef,
    h_search,
    h_mem_bytes,
    h_free,
    h_errmsg,
};
