/* The rebalance planner. See plan.h. */
#include "plan.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "error.h"

static int cmp_move(const void *a, const void *b)
{
	const sh_plan_move *x = a, *y = b;
	if (x->from != y->from)
		return x->from < y->from ? -1 : 1;
	return (x->first > y->first) - (x->first < y->first);
}

int sh_plan_rebalance(const sh_plan_node *nodes, size_t nn,
		      const sh_plan_range *ranges, size_t nr,
		      sh_plan_move **out, size_t *nout, uint64_t *after,
		      char *err, size_t errlen)
{
	return sh_plan_rebalance_weighted(nodes, nn, ranges, nr, NULL, out,
					  nout, after, err, errlen);
}

int sh_plan_rebalance_weighted(const sh_plan_node *nodes, size_t nn,
			       const sh_plan_range *ranges, size_t nr,
			       const uint64_t *slot_points, sh_plan_move **out,
			       size_t *nout, uint64_t *after, char *err,
			       size_t errlen)
{
	*out = NULL;
	*nout = 0;
	if (nn == 0)
		return sh_errf(err, errlen, SH_EINVAL, "no nodes");
	for (size_t i = 0; i < nn; i++)
		for (size_t j = i + 1; j < nn; j++)
			if (nodes[i].id == nodes[j].id)
				return sh_errf(err, errlen, SH_EINVAL,
					       "node %u is listed twice",
					       nodes[i].id);
	int *owner = malloc(SH_PLAN_SLOTS * sizeof(*owner));
	double *load = calloc(nn, sizeof(*load)), *w = calloc(nn, sizeof(*w));
	uint32_t *slots = calloc(nn, sizeof(*slots));
	sh_plan_move *mv = malloc(SH_PLAN_SLOTS * sizeof(*mv));
	int rc = SH_OK;
	if (!owner || !load || !w || !slots || !mv) {
		rc = sh_errf(err, errlen, SH_ENOMEM, "out of memory");
		goto out;
	}
	for (uint32_t s = 0; s < SH_PLAN_SLOTS; s++)
		owner[s] = -1;
	for (size_t r = 0; r < nr; r++) {
		size_t i = 0;
		while (i < nn && nodes[i].id != ranges[r].node)
			i++;
		if (i == nn || ranges[r].first > ranges[r].last ||
		    ranges[r].last >= SH_PLAN_SLOTS) {
			rc = sh_errf(err, errlen, SH_EINVAL,
				     "slots %u-%u: bad range or unknown node "
				     "%u",
				     ranges[r].first, ranges[r].last,
				     ranges[r].node);
			goto out;
		}
		for (uint32_t s = ranges[r].first; s <= ranges[r].last; s++)
			owner[s] = (int)i;
		slots[i] += ranges[r].last - ranges[r].first + 1;
	}
	uint64_t total = 0;
	size_t nrecv = 0;
	for (uint32_t s = 0; s < SH_PLAN_SLOTS; s++)
		if (owner[s] < 0) {
			rc = sh_errf(err, errlen, SH_EINVAL,
				     "slot %u has no owner in the map", s);
			goto out;
		}
	for (size_t i = 0; i < nn; i++) {
		if (!slot_points)
			total += nodes[i].points;
		nrecv += !nodes[i].drain;
	}
	for (uint32_t s = 0; slot_points && s < SH_PLAN_SLOTS; s++)
		total += slot_points[s];
	if (!nrecv) {
		rc = sh_errf(err, errlen, SH_EINVAL,
			     "every node is being drained: none would hold "
			     "the slots");
		goto out;
	}
	/* a slot weighs its own points when they are known, else its
	 * owner's points per slot (or 1 each: slot counts) */
	for (size_t i = 0; i < nn; i++) {
		w[i] = total == 0      ? 1.0
		       : slots[i] == 0 ? 0.0
				       : (double)nodes[i].points / slots[i];
		load[i] = slot_points && total ? 0 : w[i] * slots[i];
	}
	bool exact = slot_points && total;
	for (uint32_t s = 0; exact && s < SH_PLAN_SLOTS; s++)
		load[owner[s]] += (double)slot_points[s];
	double sum = 0;
	for (size_t i = 0; i < nn; i++)
		sum += load[i];
	double target = sum / (double)nrecv;

	size_t nm = 0;
	bool *done = calloc(nn, sizeof(*done));
	bool *moved = calloc(SH_PLAN_SLOTS, sizeof(*moved));
	if (!done || !moved) {
		free(done);
		free(moved);
		rc = sh_errf(err, errlen, SH_ENOMEM, "out of memory");
		goto out;
	}
	for (;;) {
		/* the donor with the most to give: drains first */
		size_t d = nn;
		double best = 0;
		for (size_t i = 0; i < nn; i++) {
			if (done[i] || !slots[i])
				continue;
			double excess =
			    nodes[i].drain ? INFINITY : load[i] - target;
			double half = exact ? 0.5 : w[i] / 2;
			if (excess > half && (d == nn || excess > best)) {
				d = i;
				best = excess;
			}
		}
		if (d == nn)
			break;
		done[d] = true;
		/* its slots from the top down */
		size_t prev = nn;
		for (int s = SH_PLAN_SLOTS - 1; s >= 0; s--) {
			/* a slot moves once per plan: a receiver that ends
			 * above the mean gives back slots of its own */
			if (owner[s] != (int)d || moved[s])
				continue;
			double ws = exact ? (double)slot_points[s] : w[d];
			if (!nodes[d].drain && load[d] - target <= ws / 2)
				break;
			/* The receiver of the slot before, while it still
			 * needs points (contiguous ranges, few moves), else
			 * the one furthest below the mean. */
			size_t r = nn;
			if (prev < nn && target - load[prev] >= ws / 2)
				r = prev;
			else
				for (size_t i = 0; i < nn; i++)
					if (!nodes[i].drain && i != d &&
					    (r == nn || load[i] < load[r]))
						r = i;
			if (r == nn)
				break;
			if (!nodes[d].drain && target - load[r] < ws / 2)
				break; /* nobody needs it */
			owner[s] = (int)r;
			moved[s] = true;
			load[d] -= ws;
			load[r] += ws;
			slots[d]--;
			prev = r;
			sh_plan_move *last = nm ? &mv[nm - 1] : NULL;
			if (last && last->from == nodes[d].id &&
			    last->to == nodes[r].id &&
			    last->first == (uint32_t)s + 1) {
				last->first = (uint32_t)s;
			} else {
				mv[nm++] = (sh_plan_move){.first = (uint32_t)s,
							  .last = (uint32_t)s,
							  .from = nodes[d].id,
							  .to = nodes[r].id};
			}
		}
	}
	free(done);
	free(moved);
	/* each move's points: its slots' own, or its source's per slot */
	for (size_t k = 0; k < nm; k++) {
		double p = 0;
		size_t from = 0;
		while (from < nn && nodes[from].id != mv[k].from)
			from++;
		for (uint32_t x = mv[k].first; x <= mv[k].last; x++)
			p += exact ? (double)slot_points[x] : w[from];
		mv[k].points = (uint64_t)llround(p);
	}
	qsort(mv, nm, sizeof(*mv), cmp_move);
	if (after)
		for (size_t i = 0; i < nn; i++)
			after[i] = total == 0 ? 0 : (uint64_t)llround(load[i]);
	if (nm) {
		sh_plan_move *shrunk = realloc(mv, nm * sizeof(*mv));
		*out = shrunk ? shrunk : mv;
		mv = NULL;
	}
	*nout = nm;
out:
	free(owner);
	free(load);
	free(w);
	free(slots);
	free(mv);
	return rc;
}
