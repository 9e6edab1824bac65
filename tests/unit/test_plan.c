/* The rebalance planner (ctl/plan.c): balance by points, drains, empty
 * clusters, and maps it refuses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "plan.h"

/* Splits the slots into n equal contiguous ranges owned by ids 1..n. */
static size_t even_map(sh_plan_range *r, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		r[i].first = SH_PLAN_SLOTS * i / n;
		r[i].last = SH_PLAN_SLOTS * (i + 1) / n - 1;
		r[i].node = i + 1;
	}
	return n;
}

/* Applies the moves to the map and checks they are sane: each moves slots
 * its source owned, none overlap, every slot still has one owner. Returns
 * the slots moved; owner[] gets the new owners. */
static uint32_t apply(const sh_plan_range *r, size_t nr, const sh_plan_move *m,
		      size_t nm, uint32_t *owner)
{
	for (size_t i = 0; i < nr; i++)
		for (uint32_t s = r[i].first; s <= r[i].last; s++)
			owner[s] = r[i].node;
	static uint8_t moved[SH_PLAN_SLOTS];
	memset(moved, 0, sizeof(moved));
	uint32_t total = 0;
	for (size_t k = 0; k < nm; k++) {
		assert_true(m[k].first <= m[k].last);
		assert_true(m[k].from != m[k].to);
		for (uint32_t s = m[k].first; s <= m[k].last; s++) {
			assert_int_equal(owner[s], m[k].from);
			assert_false(moved[s]);
			moved[s] = 1;
			owner[s] = m[k].to;
			total++;
		}
	}
	return total;
}

static void test_balanced_cluster_moves_nothing(void **s)
{
	sh_plan_range r[3];
	size_t nr = even_map(r, 3);
	sh_plan_node n[3] = {
	    {1, 3000, false}, {2, 3000, false}, {3, 3000, false}};
	sh_plan_move *m;
	size_t nm;
	uint64_t after[3];
	char err[128];
	assert_int_equal(
	    sh_plan_rebalance(n, 3, r, nr, &m, &nm, after, err, sizeof(err)),
	    SH_OK);
	assert_int_equal(nm, 0);
	assert_null(m);
}

static void test_new_node_gets_a_quarter(void **s)
{
	sh_plan_range r[3];
	size_t nr = even_map(r, 3);
	sh_plan_node n[4] = {{1, 300000, false},
			     {2, 300000, false},
			     {3, 300000, false},
			     {4, 0, false}};
	sh_plan_move *m;
	size_t nm;
	uint64_t after[4];
	char err[128];
	assert_int_equal(
	    sh_plan_rebalance(n, 4, r, nr, &m, &nm, after, err, sizeof(err)),
	    SH_OK);
	static uint32_t owner[SH_PLAN_SLOTS];
	uint32_t moved = apply(r, nr, m, nm, owner);
	/* a quarter of the slots, give or take a slot per donor */
	assert_true(moved >= SH_PLAN_SLOTS / 4 - 3 &&
		    moved <= SH_PLAN_SLOTS / 4 + 3);
	/* every move goes to the new node, one range per donor */
	assert_int_equal(nm, 3);
	uint64_t est = 0;
	for (size_t k = 0; k < nm; k++) {
		assert_int_equal(m[k].to, 4);
		est += m[k].points;
	}
	assert_true(est > 224000 && est < 226000);
	/* each node ends within one slot's points (~165) of 225,000 */
	for (int i = 0; i < 4; i++)
		assert_true(after[i] > 225000 - 200 && after[i] < 225000 + 200);
	free(m);
}

/* A node with twice the points per slot gives fewer slots for the same
 * points: the plan balances points, not slot counts. */
static void test_points_not_slot_counts(void **s)
{
	sh_plan_range r[2];
	size_t nr = even_map(r, 2);
	sh_plan_node n[3] = {
	    {1, 400000, false}, {2, 200000, false}, {3, 0, false}};
	sh_plan_move *m;
	size_t nm;
	uint64_t after[3];
	char err[128];
	assert_int_equal(
	    sh_plan_rebalance(n, 3, r, nr, &m, &nm, after, err, sizeof(err)),
	    SH_OK);
	static uint32_t owner[SH_PLAN_SLOTS];
	apply(r, nr, m, nm, owner);
	uint32_t slots[4] = {0};
	for (uint32_t x = 0; x < SH_PLAN_SLOTS; x++)
		slots[owner[x]]++;
	/* node 1 (48.8 points/slot) keeps ~4096 slots; node 2 (24.4) all */
	assert_true(slots[1] > 4000 && slots[1] < 4200);
	assert_int_equal(slots[2], 8192);
	for (int i = 0; i < 3; i++)
		assert_true(after[i] > 200000 - 100 && after[i] < 200000 + 100);
	free(m);
}

static void test_drain_gives_everything(void **s)
{
	sh_plan_range r[4];
	size_t nr = even_map(r, 4);
	sh_plan_node n[4] = {{1, 1000, false},
			     {2, 1000, true},
			     {3, 1000, false},
			     {4, 1000, false}};
	sh_plan_move *m;
	size_t nm;
	uint64_t after[4];
	char err[128];
	assert_int_equal(
	    sh_plan_rebalance(n, 4, r, nr, &m, &nm, after, err, sizeof(err)),
	    SH_OK);
	static uint32_t owner[SH_PLAN_SLOTS];
	uint32_t moved = apply(r, nr, m, nm, owner);
	assert_int_equal(moved, SH_PLAN_SLOTS / 4);
	for (uint32_t x = 0; x < SH_PLAN_SLOTS; x++)
		assert_int_not_equal(owner[x], 2);
	assert_int_equal(after[1], 0);
	for (int i = 0; i < 4; i++)
		if (i != 1)
			assert_true(after[i] >= 1332 && after[i] <= 1335);
	free(m);
}

/* No points anywhere: slot counts are balanced. */
static void test_empty_cluster_balances_slots(void **s)
{
	sh_plan_range r[1] = {{0, SH_PLAN_SLOTS - 1, 7}};
	sh_plan_node n[2] = {{7, 0, false}, {9, 0, false}};
	sh_plan_move *m;
	size_t nm;
	char err[128];
	assert_int_equal(
	    sh_plan_rebalance(n, 2, r, 1, &m, &nm, NULL, err, sizeof(err)),
	    SH_OK);
	assert_int_equal(nm, 1);
	assert_int_equal(m[0].from, 7);
	assert_int_equal(m[0].to, 9);
	assert_int_equal(m[0].last, SH_PLAN_SLOTS - 1);
	assert_int_equal(m[0].last - m[0].first + 1, SH_PLAN_SLOTS / 2);
	free(m);
}

static void test_bad_maps_are_refused(void **s)
{
	sh_plan_range r[2] = {{0, 100, 1}, {101, SH_PLAN_SLOTS - 1, 5}};
	sh_plan_node n[2] = {{1, 10, false}, {2, 10, false}};
	sh_plan_move *m;
	size_t nm;
	char err[128];
	/* an owner that is not a node */
	assert_int_equal(
	    sh_plan_rebalance(n, 2, r, 2, &m, &nm, NULL, err, sizeof(err)),
	    SH_EINVAL);
	assert_non_null(strstr(err, "unknown node 5"));
	/* a slot nobody owns */
	r[1].node = 2;
	r[1].first = 102;
	assert_int_equal(
	    sh_plan_rebalance(n, 2, r, 2, &m, &nm, NULL, err, sizeof(err)),
	    SH_EINVAL);
	assert_non_null(strstr(err, "slot 101"));
	/* every node drained */
	r[1].first = 101;
	n[0].drain = n[1].drain = true;
	assert_int_equal(
	    sh_plan_rebalance(n, 2, r, 2, &m, &nm, NULL, err, sizeof(err)),
	    SH_EINVAL);
	/* an id twice */
	n[0].drain = n[1].drain = false;
	n[1].id = 1;
	assert_int_equal(
	    sh_plan_rebalance(n, 2, r, 2, &m, &nm, NULL, err, sizeof(err)),
	    SH_EINVAL);
	assert_null(m);
}

/* With the nodes' per-slot counts (skewed: a few slots hold most points),
 * a drain and a grow balance points within a slot's weight, move each
 * slot at most once, and do it in few contiguous ranges. */
static void test_exact_counts_balance_points_in_few_moves(void **s)
{
	static uint64_t pts[SH_PLAN_SLOTS];
	uint64_t total = 0, seed = 7;
	for (uint32_t x = 0; x < SH_PLAN_SLOTS; x++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		pts[x] = (seed >> 33) % 20 + (x % 97 == 0 ? 500 : 0);
		total += pts[x];
	}
	sh_plan_range r[4];
	size_t nr = even_map(r, 4);
	sh_plan_node n[5] = {{1, 0, false},
			     {2, 0, true},
			     {3, 0, false},
			     {4, 0, false},
			     {5, 0, false}};
	for (uint32_t x = 0; x < SH_PLAN_SLOTS; x++)
		n[x * 4 / SH_PLAN_SLOTS].points += pts[x];
	sh_plan_move *m;
	size_t nm;
	uint64_t after[5];
	char err[128];
	assert_int_equal(sh_plan_rebalance_weighted(n, 5, r, nr, pts, &m, &nm,
						    after, err, sizeof(err)),
			 SH_OK);
	static uint32_t owner[SH_PLAN_SLOTS];
	apply(r, nr, m, nm, owner);
	uint64_t held[6] = {0}, est = 0;
	for (uint32_t x = 0; x < SH_PLAN_SLOTS; x++)
		held[owner[x]] += pts[x];
	for (size_t k = 0; k < nm; k++)
		est += m[k].points;
	assert_int_equal(held[2], 0);
	assert_int_equal(after[1], 0);
	double mean = (double)total / 4;
	for (int i = 1; i <= 5; i++) {
		if (i == 2)
			continue;
		/* within the heaviest slot (~520 points) of the mean */
		assert_true((double)held[i] > mean - 600 &&
			    (double)held[i] < mean + 600);
		assert_int_equal(after[i - 1], held[i]);
	}
	/* node 2's 4096 slots and the new node's share, in a handful of
	 * ranges, not one per slot */
	assert_true(nm <= 12);
	assert_true(est > 0);
	free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_balanced_cluster_moves_nothing),
	    cmocka_unit_test(test_new_node_gets_a_quarter),
	    cmocka_unit_test(test_points_not_slot_counts),
	    cmocka_unit_test(test_drain_gives_everything),
	    cmocka_unit_test(test_empty_cluster_balances_slots),
	    cmocka_unit_test(test_bad_maps_are_refused),
	    cmocka_unit_test(test_exact_counts_balance_points_in_few_moves),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
