"""Unit tests of jepsen/checker/checker.py on hand-made histories.

Run from the repository root:
    python3 -m unittest -v jepsen/checker/test_checker.py

Each test builds a small history with H (below), in the order a harness
would record it, and states in its name the property it checks.
"""

import io
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import unittest
from contextlib import redirect_stderr, redirect_stdout

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import checker  # noqa: E402

CHECKER = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       "checker.py")
MS = 1_000_000


class H:
    """Builds a history line by line. Time advances 1 ms a line unless a
    line gives its own `t` (ns). A completion copies its invocation's fields
    (as the harness does), then takes the given ones."""

    def __init__(self):
        self.lines = []
        self.t = 0
        self.pending = {}

    def _add(self, rec, t):
        self.t = self.t + MS if t is None else t
        rec["time"] = self.t
        self.lines.append(rec)
        return rec

    def invoke(self, p, f, t=None, **fields):
        rec = dict(fields, process=p, type="invoke", f=f)
        self.pending[p] = rec
        return self._add(rec, t)

    def _complete(self, p, typ, t, fields):
        inv = self.pending.pop(p)
        rec = {k: v for k, v in inv.items() if k not in ("type", "time")}
        rec.update(fields, type=typ)
        return self._add(rec, t)

    def ok(self, p, t=None, **fields):
        return self._complete(p, "ok", t, fields)

    def fail(self, p, t=None, **fields):
        return self._complete(p, "fail", t, fields)

    def info(self, p, t=None, **fields):
        return self._complete(p, "info", t, fields)

    # shorthands for a whole operation
    def upsert(self, p, key, value, version, outcome="ok", **fields):
        self.invoke(p, "upsert", key=key, value=value, version=version)
        getattr(self, outcome)(p, **fields)

    def delete(self, p, key, version, outcome="ok", **fields):
        self.invoke(p, "delete", key=key, version=version)
        getattr(self, outcome)(p, **fields)

    def get(self, p, key, value, version=None):
        self.invoke(p, "get", key=key)
        if value is None:
            self.ok(p, value=None)
        else:
            self.ok(p, value=value, version=version)

    def search(self, p, key, result, complete=True, exact=True, **fields):
        self.invoke(p, "search", key=key, exact=exact, **fields)
        self.ok(p, value=result, complete=complete)

    def read_all(self, p, keys):
        self.invoke(p, "read_all")
        self.ok(p, value=keys)

    def ops(self):
        return checker.parse_history(list(enumerate(self.lines, 1)))

    def text(self):
        return "".join(json.dumps(r) + "\n" for r in self.lines)


# ---- parsing ---------------------------------------------------------------

class TestParse(unittest.TestCase):

    def test_pairs_invocations_with_completions(self):
        h = H()
        h.invoke(1, "upsert", key=1, value=10, version=1)
        h.invoke(2, "get", key=1)
        h.ok(2, value=None)
        h.ok(1)
        ops = h.ops()
        self.assertEqual([(o.f, o.type, o.inv_line, o.cmp_line) for o in ops],
                         [("upsert", "ok", 1, 4), ("get", "ok", 2, 3)])

    def test_pending_at_end_is_info_and_never_completes(self):
        h = H()
        h.invoke(1, "upsert", key=1, value=10, version=1)
        (op,) = h.ops()
        self.assertEqual(op.type, "info")
        self.assertTrue(op.pending)
        self.assertEqual(op.ret_pos, float("inf"))

    def test_completion_without_invocation_is_bad_input(self):
        recs = [(1, {"process": 3, "type": "ok", "f": "get", "key": 1,
                     "value": None, "time": 5})]
        with self.assertRaisesRegex(checker.HistoryError,
                                    r"history:1: .*without a pending"):
            checker.parse_history(recs)

    def test_second_invocation_while_pending_is_bad_input(self):
        h = H()
        h.invoke(1, "get", key=1)
        h.invoke(1, "get", key=2)
        with self.assertRaisesRegex(checker.HistoryError, "still pending"):
            h.ops()

    def test_completion_of_another_f_is_bad_input(self):
        h = H()
        h.invoke(1, "get", key=1)
        h.lines.append({"process": 1, "type": "ok", "f": "upsert",
                        "time": 9 * MS})
        with self.assertRaisesRegex(checker.HistoryError, "pending invoc"):
            h.ops()

    def test_process_reused_after_info_is_bad_input(self):
        h = H()
        h.upsert(1, 1, 10, 1, outcome="info")
        h.get(1, 1, None)
        with self.assertRaisesRegex(checker.HistoryError, "reused"):
            h.ops()

    def test_missing_fields_are_bad_input(self):
        for rec, pat in [
                ({"type": "invoke", "f": "get", "key": 1, "time": 1},
                 "process"),
                ({"process": 1, "type": "begin", "f": "get", "time": 1},
                 "type"),
                ({"process": 1, "type": "invoke", "f": "get", "key": 1},
                 "time"),
                ({"process": 1, "type": "invoke", "f": "upsert", "key": 1,
                  "version": 1, "time": 1}, "value"),
                ({"process": 1, "type": "invoke", "f": "delete", "key": 1,
                  "time": 1}, "version")]:
            with self.subTest(rec=rec):
                with self.assertRaisesRegex(checker.HistoryError, pat):
                    checker.parse_history([(1, rec)])

    def test_ok_read_without_result_is_bad_input(self):
        h = H()
        h.invoke(1, "search", key=1, exact=True)
        h.ok(1, value=[1])  # no "complete"
        with self.assertRaisesRegex(checker.HistoryError, "complete"):
            h.ops()

    def test_absent_flag_reads_as_null(self):
        h = H()
        h.invoke(1, "get", key=1)
        h.ok(1, absent=True)
        (op,) = h.ops()
        self.assertIsNone(op.result)

    def test_malformed_json_line_names_the_line(self):
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "history.jsonl")
            with open(p, "w") as fh:
                fh.write('{"process": 1, "type": "invoke", "f": "get", '
                         '"key": 1, "time": 1}\n{"process": 1,\n')
            with self.assertRaisesRegex(checker.HistoryError,
                                        r"history.jsonl:2: malformed JSON"):
                checker.load_history(p)


# ---- set -------------------------------------------------------------------

class TestSet(unittest.TestCase):

    def test_all_acknowledged_present_is_valid(self):
        h = H()
        for k in (1, 2, 3):
            h.upsert(k, k, k, 1)
        h.read_all(9, [3, 1, 2])
        r = checker.check_set(h.ops())
        self.assertIs(r["valid"], True, r)
        self.assertEqual((r["present"], r["lost_count"]), (3, 0))

    def test_lost_acknowledged_write_is_invalid(self):
        h = H()
        for k in (1, 2, 3):
            h.upsert(k, k, k, 1)
        h.read_all(9, [1, 3])
        r = checker.check_set(h.ops())
        self.assertIs(r["valid"], False)
        self.assertEqual(r["lost_count"], 1)
        self.assertEqual(r["lost"][0]["key"], 2)

    def test_unexpected_key_is_invalid(self):
        h = H()
        h.upsert(1, 1, 1, 1)
        h.read_all(9, [1, 77])
        r = checker.check_set(h.ops())
        self.assertIs(r["valid"], False)
        self.assertEqual(r["unexpected"], [77])

    def test_info_write_present_is_recovered_and_valid(self):
        h = H()
        h.upsert(1, 1, 1, 1)
        h.upsert(2, 2, 2, 1, outcome="info")
        h.upsert(3, 3, 3, 1, outcome="info")  # absent: never took effect
        h.read_all(9, [1, 2])
        r = checker.check_set(h.ops())
        self.assertIs(r["valid"], True, r)
        self.assertEqual(r["recovered"], [2])

    def test_no_final_read_is_invalid(self):
        h = H()
        h.upsert(1, 1, 1, 1)
        h.invoke(9, "read_all")
        h.fail(9, error="timeout")
        r = checker.check_set(h.ops())
        self.assertIs(r["valid"], False)
        self.assertIn("no ok final read", r["error"])

    def test_last_ok_read_all_is_the_final_one(self):
        h = H()
        h.upsert(1, 1, 1, 1)
        h.read_all(9, [])  # an early read, before recovery
        h.read_all(9, [1])
        self.assertIs(checker.check_set(h.ops())["valid"], True)

    def test_deleted_key_absent_is_not_lost(self):
        h = H()
        h.upsert(1, 1, 1, 1)
        h.delete(2, 1, 2, outcome="info")
        h.read_all(9, [])
        self.assertIs(checker.check_set(h.ops())["valid"], True)

    def test_write_acknowledged_during_the_read_may_be_absent(self):
        h = H()
        h.invoke(1, "upsert", key=1, value=1, version=1)
        h.invoke(9, "read_all")
        h.ok(1)
        h.ok(9, value=[])
        r = checker.check_set(h.ops())
        self.assertIs(r["valid"], True, r)
        self.assertEqual(r["acknowledged_during_read"], 1)

    def test_failed_write_present_is_invalid(self):
        h = H()
        h.upsert(1, 1, 1, 1, outcome="fail")
        h.read_all(9, [1])
        r = checker.check_set(h.ops())
        self.assertIs(r["valid"], False)
        self.assertEqual(r["failed_present_count"], 1)

    def test_duplicate_key_in_read_is_invalid(self):
        h = H()
        h.upsert(1, 1, 1, 1)
        h.read_all(9, [1, 1])
        self.assertIs(checker.check_set(h.ops())["valid"], False)


# ---- register --------------------------------------------------------------

def reg(h, **kw):
    return checker.check_register(h.ops(), **kw)


def random_register_history(rng):
    """A short random history of one key: up to 3 processes at a time, 2 to
    6 upserts, deletes and gets with versions 1-3 (so equal versions meet),
    random outcomes, random read results and stale flags."""
    h = H()
    free, nextp, value, made = [0, 1, 2], 10, 100, 0
    n, busy, written = rng.randint(2, 6), {}, []
    while made < n or busy:
        if made < n and free and (not busy or rng.random() < 0.5):
            p = free.pop(rng.randrange(len(free)))
            f = rng.choice(["upsert", "upsert", "get", "get", "delete"])
            if f == "upsert":
                value += 1
                written.append(value)
                h.invoke(p, f, key=1, value=value, version=rng.randint(1, 3))
            elif f == "delete":
                h.invoke(p, f, key=1, version=rng.randint(1, 3))
            else:
                h.invoke(p, f, key=1)
            busy[p] = f
            made += 1
            continue
        p = rng.choice(list(busy))
        f = busy.pop(p)
        typ = rng.choice(["ok", "ok", "ok", "info", "fail"])
        extra = {}
        if typ == "ok" and f == "get":
            v = rng.choice([None] + written)
            extra = {"value": v}
            if v is not None and rng.random() < 0.7:
                extra["version"] = rng.randint(1, 3)
        elif typ == "ok" and rng.random() < 0.3:
            extra = {"stale": rng.random() < 0.5}
        getattr(h, typ)(p, **extra)
        if typ == "info":
            free.append(nextp)
            nextp += 1
        else:
            free.append(p)
    return h.ops()


def brute_force_linearizable(ops):
    """The reference: tries every subset of the unknown writes and every
    order of the chosen operations that respects real time."""
    must = [o for o in ops if o.type == "ok"]
    maybe = [o for o in ops if o.type == "info" and o.f in checker.WRITES]
    for r in range(len(maybe) + 1):
        for chosen in itertools.combinations(maybe, r):
            for order in itertools.permutations(must + list(chosen)):
                if any(order[j].ret_pos < order[i].inv_pos
                       for i in range(len(order))
                       for j in range(i + 1, len(order))):
                    continue
                state, legal = None, True
                for o in order:
                    legal, state = checker._apply(state, o)
                    if not legal:
                        break
                if legal:
                    return True
    return False


class TestRegister(unittest.TestCase):

    def test_sequential_reads_of_latest_write_are_linearizable(self):
        h = H()
        h.get(1, 1, None)
        h.upsert(1, 1, 10, 1)
        h.get(2, 1, 10, 1)
        h.upsert(1, 1, 20, 2)
        h.get(2, 1, 20, 2)
        r = reg(h)
        self.assertIs(r["valid"], True, r)
        self.assertEqual(r["keys"], 1)

    def test_stale_read_after_completed_write_is_invalid(self):
        h = H()
        h.upsert(1, 1, 10, 1)
        h.upsert(1, 1, 20, 2)
        h.get(2, 1, 10, 1)
        r = reg(h)
        self.assertIs(r["valid"], False)
        bad = r["invalid"][0]
        self.assertEqual(bad["key"], 1)
        self.assertIn("not linearizable", bad["reason"])
        self.assertTrue(bad["stuck"])
        self.assertIn("get returned value 10", bad["stuck"][0]["why"])
        self.assertEqual(len(bad["history"]), 3)

    def test_read_of_never_written_value_is_invalid(self):
        h = H()
        h.upsert(1, 1, 10, 1)
        h.get(2, 1, 99, 1)
        r = reg(h)
        self.assertIs(r["valid"], False)
        self.assertEqual(r["invalid"][0]["reason"],
                         "read of a value never written")

    def test_read_of_failed_write_is_invalid(self):
        h = H()
        h.upsert(1, 1, 10, 1, outcome="fail")
        h.get(2, 1, 10, 1)
        self.assertIs(reg(h)["valid"], False)

    def test_read_from_the_future_is_invalid(self):
        h = H()
        h.get(2, 1, 10, 1)
        h.upsert(1, 1, 10, 1, outcome="info")
        r = reg(h)
        self.assertIs(r["valid"], False)
        self.assertIn("after the read", r["invalid"][0]["reason"])

    def test_null_read_after_completed_write_is_invalid(self):
        h = H()
        h.upsert(1, 1, 10, 1)
        h.get(2, 1, None)
        self.assertIs(reg(h)["valid"], False)

    def _concurrent_writes(self, final_value):
        # two writes of the same version overlap: equal replaces, so
        # whichever is applied last wins, and either order is fine
        h = H()
        h.invoke(1, "upsert", key=1, value=10, version=5)
        h.invoke(2, "upsert", key=1, value=20, version=5)
        h.ok(2)
        h.ok(1)
        h.get(3, 1, final_value, 5)
        h.get(3, 1, final_value, 5)
        return reg(h)

    def test_concurrent_writes_either_order_is_linearizable(self):
        self.assertIs(self._concurrent_writes(10)["valid"], True)
        self.assertIs(self._concurrent_writes(20)["valid"], True)

    def test_reads_flipping_between_concurrent_writes_are_invalid(self):
        h = H()
        h.invoke(1, "upsert", key=1, value=10, version=5)
        h.invoke(2, "upsert", key=1, value=20, version=5)
        h.ok(2)
        h.ok(1)
        h.get(3, 1, 10, 5)
        h.get(3, 1, 20, 5)
        self.assertIs(reg(h)["valid"], False)

    def test_concurrent_read_may_see_old_or_new(self):
        for seen in (10, 20):
            h = H()
            h.upsert(1, 1, 10, 1)
            h.invoke(1, "upsert", key=1, value=20, version=2)
            h.get(2, 1, seen, 1 if seen == 10 else 2)
            h.ok(1)
            with self.subTest(seen=seen):
                self.assertIs(reg(h)["valid"], True)

    def test_info_write_taking_effect_late_is_linearizable(self):
        h = H()
        h.upsert(1, 1, 10, 1, outcome="info")
        h.get(2, 1, None)
        h.get(2, 1, None)
        h.get(2, 1, 10, 1)
        h.get(2, 1, 10, 1)
        self.assertIs(reg(h)["valid"], True)

    def test_info_write_never_taking_effect_is_linearizable(self):
        h = H()
        h.upsert(1, 1, 10, 1)
        h.upsert(2, 1, 20, 2, outcome="info")
        h.get(3, 1, 10, 1)
        h.get(3, 1, 10, 1)
        self.assertIs(reg(h)["valid"], True)

    def test_info_write_cannot_take_effect_twice(self):
        # 10 (info), then 20 acknowledged at a higher version, then 10
        # again: the info write is below 20's version, it cannot win
        h = H()
        h.upsert(1, 1, 10, 1, outcome="info")
        h.get(2, 1, 10, 1)
        h.upsert(2, 1, 20, 2)
        h.get(2, 1, 10, 1)
        self.assertIs(reg(h)["valid"], False)

    def test_lower_version_write_after_higher_leaves_higher(self):
        h = H()
        h.upsert(1, 1, 20, 2)
        h.upsert(1, 1, 10, 1)
        h.get(2, 1, 20, 2)
        self.assertIs(reg(h)["valid"], True)
        h.get(2, 1, 10, 1)
        self.assertIs(reg(h)["valid"], False)

    def test_stale_acknowledgement_must_be_really_stale(self):
        h = H()
        h.upsert(1, 1, 20, 2)
        h.upsert(1, 1, 10, 1, stale=True)
        self.assertIs(reg(h)["valid"], True)
        h = H()
        h.upsert(1, 1, 10, 1, stale=True)  # nothing newer was stored
        self.assertIs(reg(h)["valid"], False)

    def test_unknown_write_can_explain_a_stale_acknowledgement(self):
        h = H()
        h.upsert(1, 1, 20, 2, outcome="info")  # never read, yet needed
        h.upsert(2, 1, 10, 1, stale=True)
        self.assertIs(reg(h)["valid"], True)

    def test_search_agrees_with_brute_force_on_random_histories(self):
        rng = random.Random(9)
        verdicts = set()
        for _ in range(300):
            ops = random_register_history(rng)
            want = brute_force_linearizable(ops)
            got = checker.check_register_key(ops)["valid"]
            self.assertEqual(got, want, [o.summary() for o in ops])
            verdicts.add(want)
        self.assertEqual(verdicts, {True, False})

    def test_delete_tombstone_reads_null_and_blocks_lower_versions(self):
        h = H()
        h.upsert(1, 1, 10, 1)
        h.delete(1, 1, 3)
        h.get(2, 1, None)
        h.upsert(1, 1, 20, 2)  # below the tombstone: ignored
        h.get(2, 1, None)
        self.assertIs(reg(h)["valid"], True)
        h.get(2, 1, 20, 2)
        self.assertIs(reg(h)["valid"], False)

    def test_keys_are_checked_independently(self):
        h = H()
        h.upsert(1, 1, 10, 1)
        h.upsert(1, 2, 20, 1)
        h.get(2, 1, 10, 1)
        h.get(2, 2, None)  # key 2 is wrong, key 1 is fine
        r = reg(h)
        self.assertIs(r["valid"], False)
        self.assertEqual([b["key"] for b in r["invalid"]], [2])

    def _hard_key(self, h, key, base):
        # many overlapping writes of one version and a read of the first:
        # the search must backtrack through many orders
        for p in range(8):
            h.invoke(100 * key + p, "upsert", key=key, value=base + p,
                     version=1)
        for p in range(8):
            h.ok(100 * key + p)
        h.get(100 * key + 50, key, base, 1)

    def test_step_budget_gives_unknown(self):
        h = H()
        self._hard_key(h, 1, 1000)
        h.upsert(1, 2, 7, 1)
        h.get(2, 2, 7, 1)
        r = reg(h, max_steps=5)
        self.assertEqual(r["valid"], "unknown")
        self.assertEqual(r["unknown_count"], 1)
        self.assertEqual(r["unknown"][0]["key"], 1)
        self.assertIs(reg(h)["valid"], True)  # with a real budget

    def test_invalid_key_wins_over_unknown_key(self):
        h = H()
        self._hard_key(h, 1, 1000)
        h.upsert(1, 2, 7, 1)
        h.get(2, 2, None)
        self.assertIs(reg(h, max_steps=5)["valid"], False)

    def test_many_info_writes_stay_cheap(self):
        # rising versions: once a newer write is stored, the older unknown
        # writes are dead, so the search does not multiply with them
        h = H()
        p = 1
        for i in range(30):
            h.upsert(p, 1, 100 + i, i + 1, outcome="info")
            p += 1
            h.get(1000, 1, 100 + i, i + 1)
        r = reg(h, max_steps=20_000)
        self.assertIs(r["valid"], True, r)


# ---- delete ----------------------------------------------------------------

class TestDelete(unittest.TestCase):

    def test_deleted_point_reads_absent_is_valid(self):
        h = H()
        h.upsert(1, 1, 10, 1)
        h.delete(1, 1, 2)
        h.get(2, 1, None)
        h.search(2, 5, [5], complete=True)
        r = checker.check_delete(h.ops())
        self.assertIs(r["valid"], True, r)
        self.assertEqual(r["deletes_applied"], 1)

    def test_resurrection_after_delete_ok_is_invalid(self):
        h = H()
        h.upsert(1, 1, 10, 1)
        h.delete(1, 1, 2)
        h.get(2, 1, 10, 1)
        r = checker.check_delete(h.ops())
        self.assertIs(r["valid"], False)
        self.assertEqual(r["resurrections_count"], 1)
        res = r["resurrections"][0]
        self.assertEqual((res["key"], res["read_version"]), (1, 1))
        self.assertEqual(res["delete"]["f"], "delete")

    def test_search_returning_deleted_point_is_a_resurrection(self):
        h = H()
        h.upsert(1, 1, 10, 1)
        h.delete(1, 1, 2)
        h.search(2, 3, [3, 1])
        self.assertIs(checker.check_delete(h.ops())["valid"], False)

    def test_read_concurrent_with_delete_may_see_the_point(self):
        h = H()
        h.upsert(1, 1, 10, 1)
        h.invoke(1, "delete", key=1, version=2)
        h.get(2, 1, 10, 1)
        h.ok(1)
        h.get(2, 1, None)  # begins after the ack: absent, as it must be
        self.assertIs(checker.check_delete(h.ops())["valid"], True)

    def test_higher_version_upsert_brings_the_point_back(self):
        h = H()
        h.upsert(1, 1, 10, 1)
        h.delete(1, 1, 2)
        h.invoke(1, "upsert", key=1, value=30, version=3)
        h.get(2, 1, 30, 3)
        h.search(2, 1, [1])
        h.info(1)
        self.assertIs(checker.check_delete(h.ops())["valid"], True)

    def test_equal_version_upsert_after_delete_brings_it_back(self):
        h = H()
        h.delete(1, 1, 2)
        h.upsert(1, 1, 30, 2)
        h.get(2, 1, 30, 2)
        self.assertIs(checker.check_delete(h.ops())["valid"], True)

    def test_late_lower_version_upsert_cannot_resurrect(self):
        # a late duplicate of an old write (nng's REQ may resend one)
        h = H()
        h.upsert(1, 1, 10, 1)
        h.delete(1, 1, 2)
        h.upsert(1, 1, 20, 1, outcome="info")  # lower than the tombstone
        h.get(2, 1, 20, 1)
        h.search(2, 1, [1])
        r = checker.check_delete(h.ops())
        self.assertIs(r["valid"], False)
        self.assertEqual(r["resurrections_count"], 2)

    def test_stale_delete_does_not_delete(self):
        h = H()
        h.upsert(1, 1, 10, 5)
        h.delete(1, 1, 3, stale=True)
        h.get(2, 1, 10, 5)
        self.assertIs(checker.check_delete(h.ops())["valid"], True)

    def test_read_of_unwritten_value_is_a_phantom(self):
        h = H()
        h.upsert(1, 1, 10, 1)
        h.get(2, 1, 11, 1)
        r = checker.check_delete(h.ops())
        self.assertIs(r["valid"], False)
        self.assertEqual(r["phantoms_count"], 1)


# ---- search ----------------------------------------------------------------

def srch(h, **kw):
    return checker.check_search(h.ops(), **kw)


class TestSearch(unittest.TestCase):

    def test_search_of_live_points_is_valid(self):
        h = H()
        for k in (1, 2, 3):
            h.upsert(k, k, 10 * k, 1)
        h.search(4, 1, [1, 2, 3], deadline_ms=1000)
        r = srch(h)
        self.assertIs(r["valid"], True, r)
        self.assertEqual((r["searches_ok"], r["probes_checked"]), (1, 1))

    def test_returned_key_never_attempted_is_invalid(self):
        h = H()
        h.upsert(1, 1, 10, 1)
        h.search(4, 1, [1, 42])
        r = srch(h)
        self.assertIs(r["valid"], False)
        self.assertEqual(r["never_attempted"][0]["key"], 42)

    def test_key_upserted_only_after_the_search_was_not_attempted(self):
        h = H()
        h.upsert(1, 1, 10, 1)
        h.search(4, 1, [1, 2])
        h.upsert(2, 2, 20, 1)
        self.assertEqual(srch(h)["never_attempted_count"], 1)

    def test_returned_key_deleted_before_the_search_is_invalid(self):
        h = H()
        h.upsert(1, 1, 10, 1)
        h.upsert(2, 2, 20, 1)
        h.delete(2, 2, 2)
        h.search(4, 1, [1, 2])
        r = srch(h)
        self.assertIs(r["valid"], False)
        self.assertEqual(r["not_live"][0]["key"], 2)

    def test_key_deleted_during_the_search_may_be_returned(self):
        h = H()
        h.upsert(1, 1, 10, 1)
        h.upsert(2, 2, 20, 1)
        h.invoke(4, "search", key=1, exact=True)
        h.delete(2, 2, 2)
        h.ok(4, value=[1, 2], complete=True)
        self.assertIs(srch(h)["valid"], True)

    def test_key_deleted_then_upserted_again_may_be_returned(self):
        h = H()
        h.upsert(1, 1, 10, 1)
        h.upsert(2, 2, 20, 1)
        h.delete(2, 2, 2)
        h.invoke(4, "search", key=1, exact=True)
        h.upsert(2, 2, 21, 3, outcome="info")
        h.ok(4, value=[1, 2], complete=True)
        self.assertIs(srch(h)["valid"], True)

    def test_returned_key_whose_writes_all_failed_is_invalid(self):
        h = H()
        h.upsert(1, 1, 10, 1)
        h.upsert(2, 2, 20, 1, outcome="fail")
        h.search(4, 1, [1, 2])
        self.assertEqual(srch(h)["not_live_count"], 1)

    def test_complete_exact_search_missing_acknowledged_probe_is_invalid(self):
        h = H()
        h.upsert(1, 1, 10, 1)
        h.upsert(2, 2, 20, 1)
        h.search(4, 1, [2], complete=True)
        r = srch(h)
        self.assertIs(r["valid"], False)
        self.assertEqual(r["missed_probe"][0]["key"], 1)

    def test_incomplete_search_missing_probe_is_valid(self):
        h = H()
        h.upsert(1, 1, 10, 1)
        h.upsert(2, 2, 20, 1)
        h.search(4, 1, [2], complete=False)
        self.assertIs(srch(h)["valid"], True)

    def test_graph_search_missing_probe_is_valid(self):
        h = H()
        h.upsert(1, 1, 10, 1)
        h.search(4, 1, [], complete=True, exact=False)
        self.assertIs(srch(h)["valid"], True)

    def test_probe_with_a_delete_in_flight_may_be_missing(self):
        h = H()
        h.upsert(1, 1, 10, 1)
        h.upsert(2, 2, 20, 1)
        h.invoke(5, "delete", key=1, version=2)
        h.search(4, 1, [2], complete=True)
        self.assertIs(srch(h)["valid"], True)

    def test_probe_acknowledged_during_the_search_may_be_missing(self):
        h = H()
        h.invoke(1, "upsert", key=1, value=10, version=1)
        h.invoke(4, "search", key=1, exact=True)
        h.ok(1)
        h.ok(4, value=[], complete=True)
        self.assertIs(srch(h)["valid"], True)

    def test_search_past_its_deadline_is_invalid(self):
        h = H()
        h.upsert(1, 1, 10, 1)
        h.invoke(4, "search", key=1, exact=True, deadline_ms=100, t=10 * MS)
        h.ok(4, value=[1], complete=True, t=(10 + 100 + 1000 + 1) * MS)
        r = srch(h)
        self.assertIs(r["valid"], False)
        self.assertEqual(r["deadline"]["by_f"]["search"]["overruns"], 1)
        first = r["deadline"]["by_f"]["search"]["first"][0]
        self.assertEqual(first["limit_ms"], 1100)

    def test_search_within_deadline_and_slack_is_valid(self):
        h = H()
        h.upsert(1, 1, 10, 1)
        h.invoke(4, "search", key=1, exact=True, deadline_ms=100, t=10 * MS)
        h.ok(4, value=[1], complete=True, t=(10 + 1100) * MS)
        self.assertIs(srch(h)["valid"], True)

    def test_failed_search_past_its_deadline_is_invalid(self):
        h = H()
        h.invoke(4, "search", key=1, exact=True, t=0)
        h.fail(4, error="timed out", t=7000 * MS)  # default 5000 + 1000
        self.assertIs(srch(h)["valid"], False)


# ---- deadline and availability ---------------------------------------------

class TestDeadline(unittest.TestCase):

    def test_overruns_are_reported_per_f(self):
        h = H()
        h.invoke(1, "get", key=1, t=0)
        h.ok(1, value=None, t=50 * MS)
        h.invoke(1, "get", key=1, t=100 * MS)
        h.ok(1, value=None, t=300 * MS)
        h.invoke(2, "upsert", key=1, value=1, version=1, t=400 * MS)
        h.info(2, t=900 * MS)  # late but unknown: counted, not judged
        r = checker.check_deadlines(h.ops(), default_deadline_ms=100,
                                    slack_ms=50)
        self.assertIs(r["valid"], False)
        self.assertEqual(r["by_f"]["get"]["overruns"], 1)
        self.assertEqual(r["by_f"]["get"]["checked"], 2)
        self.assertEqual(r["by_f"]["upsert"]["info_late"], 1)
        self.assertEqual(r["by_f"]["upsert"]["overruns"], 0)


class TestAvailability(unittest.TestCase):

    def test_ops_split_into_fault_and_calm_phases(self):
        h = H()
        h.invoke(1, "get", key=1, t=1 * MS)          # calm
        h.ok(1, value=None, t=2 * MS)
        h.invoke(1, "get", key=1, t=15 * MS)         # fault (kill)
        h.fail(1, t=16 * MS)
        h.invoke(1, "get", key=1, t=25 * MS)         # calm
        h.ok(1, value=None, t=26 * MS)
        h.invoke(1, "upsert", key=1, value=1, version=1, t=35 * MS)  # pause
        h.info(1, t=36 * MS)
        events = [{"time": 10 * MS, "type": "start", "nemesis": "kill"},
                  {"time": 20 * MS, "type": "stop", "nemesis": "kill"},
                  {"time": 30 * MS, "type": "start", "nemesis": "pause"}]
        a = checker.availability(h.ops(), events)
        self.assertEqual(a["overall"]["total"]["ops"], 4)
        self.assertEqual(a["fault"]["by_f"]["get"],
                         {"ok": 0, "fail": 1, "info": 0, "ops": 1,
                          "ok_rate": 0.0})
        self.assertEqual(a["fault"]["by_f"]["upsert"]["info"], 1)
        self.assertEqual(a["calm"]["by_f"]["get"]["ok"], 2)
        self.assertEqual(a["by_nemesis"]["kill"]["total"]["fail"], 1)
        self.assertEqual(a["fault_windows"], 2)
        self.assertEqual(a["open_faults"], ["pause"])

    def test_without_nemesis_everything_is_calm(self):
        h = H()
        h.get(1, 1, None)
        a = checker.availability(h.ops())
        self.assertEqual(a["calm"]["total"]["ok"], 1)
        self.assertEqual(a["fault"]["total"]["ops"], 0)


class TestLiveness(unittest.TestCase):
    S = 1000 * MS

    def rec(self, t_s, node, count=1):
        return {"time": int(t_s * self.S), "type": "reconnect",
                "nemesis": "watch", "target": node, "count": count}

    def test_a_reconnect_during_or_just_after_a_fault_on_its_node_is_explained(self):
        events = [{"time": 10 * self.S, "type": "start",
                   "nemesis": "isolate", "target": "node2"},
                  {"time": 14 * self.S, "type": "stop", "nemesis": "isolate"}]
        watch = [self.rec(12, "node2"), self.rec(20, "node2", 2)]
        r = checker.check_reconnects(watch, events, t0=0)
        self.assertEqual(r, {"reconnects": 3, "unexplained_count": 0,
                             "unexplained": []})

    def test_a_reconnect_no_fault_explains_is_listed(self):
        # a fault on another node, and one that ended long before
        events = [{"time": 10 * self.S, "type": "start",
                   "nemesis": "isolate", "target": "node3"},
                  {"time": 14 * self.S, "type": "stop", "nemesis": "isolate"}]
        watch = [self.rec(12, "node2"), self.rec(30, "node3")]
        r = checker.check_reconnects(watch, events, t0=2 * self.S)
        self.assertEqual(r["reconnects"], 2)
        self.assertEqual(r["unexplained_count"], 2)
        self.assertEqual(r["unexplained"],
                         [{"node": "node2", "count": 1, "at_s": 10.0},
                          {"node": "node3", "count": 1, "at_s": 28.0}])

    def test_faults_on_the_router_everyone_or_the_network_explain_any_node(self):
        events = [{"time": 0, "type": "start", "nemesis": "pause",
                   "target": "router"},
                  {"time": 5 * self.S, "type": "stop", "nemesis": "pause"},
                  {"time": 20 * self.S, "type": "start", "nemesis": "loss",
                   "probability": 0.2},
                  {"time": 25 * self.S, "type": "stop", "nemesis": "loss"},
                  {"time": 40 * self.S, "type": "start",
                   "nemesis": "kill-all", "target": "all"}]  # never stops
        watch = [self.rec(6, "node1"), self.rec(22, "node3"),
                 self.rec(99, "node2")]
        r = checker.check_reconnects(watch, events)
        self.assertEqual(r["unexplained_count"], 0)

    def test_no_reconnect_no_finding(self):
        self.assertEqual(checker.check_reconnects(None, None),
                         {"reconnects": 0, "unexplained_count": 0,
                          "unexplained": []})


# ---- the command line ------------------------------------------------------

class TestCLI(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name
        self.hist = os.path.join(self.dir, "history.jsonl")
        self.nem = os.path.join(self.dir, "nemesis.jsonl")
        self.out = os.path.join(self.dir, "results.json")
        with open(self.nem, "w") as fh:
            fh.write(json.dumps({"time": 0, "type": "start",
                                 "nemesis": "kill-node",
                                 "target": "node1"}) + "\n")
            fh.write(json.dumps({"time": 4 * MS, "type": "stop",
                                 "nemesis": "kill-node"}) + "\n")

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, text):
        with open(self.hist, "w") as fh:
            fh.write(text)

    def main(self, *args):
        err = io.StringIO()
        with redirect_stderr(err), redirect_stdout(io.StringIO()):
            rc = checker.main(list(args))
        return rc, err.getvalue()

    def set_history(self, present):
        h = H()
        h.upsert(1, 1, 1, 1)
        h.upsert(2, 2, 2, 1)
        h.read_all(9, present)
        self.write(h.text())

    def test_valid_run_exits_0_and_writes_results(self):
        self.set_history([1, 2])
        p = subprocess.run(
            [sys.executable, CHECKER, "--workload", "set", "--history",
             self.hist, "--nemesis", self.nem, "--out", self.out],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(self.out) as fh:
            res = json.load(fh)
        self.assertEqual(set(res) >= {"workload", "valid", "checks",
                                      "availability"}, True)
        self.assertEqual((res["workload"], res["valid"]), ("set", True))
        self.assertEqual(set(res["checks"]), {"set", "deadline"})
        self.assertEqual(res["availability"]["fault"]["total"]["ops"], 2)

    def test_watch_file_gives_liveness_without_changing_the_verdict(self):
        self.set_history([1, 2])
        watch = os.path.join(self.dir, "watch.jsonl")
        with open(watch, "w") as fh:  # at 10 s, on a node no fault touched
            fh.write(json.dumps({"time": 10_000 * MS, "type": "reconnect",
                                 "nemesis": "watch", "target": "node2",
                                 "count": 1}) + "\n")
        rc, _ = self.main("--workload", "set", "--history", self.hist,
                          "--nemesis", self.nem, "--watch", watch,
                          "--out", self.out)
        self.assertEqual(rc, 0)
        with open(self.out) as fh:
            res = json.load(fh)
        self.assertIs(res["valid"], True)
        self.assertEqual(res["liveness"]["unexplained_count"], 1)
        self.assertEqual(res["liveness"]["unexplained"][0]["node"], "node2")

    def test_invalid_run_exits_1(self):
        self.set_history([1])
        p = subprocess.run(
            [sys.executable, CHECKER, "--workload", "set", "--history",
             self.hist, "--out", self.out],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 1, p.stderr)
        with open(self.out) as fh:
            res = json.load(fh)
        self.assertIs(res["valid"], False)
        self.assertEqual(res["checks"]["set"]["lost_count"], 1)

    def test_malformed_line_exits_2_with_the_line(self):
        self.write('{"process": 1, "type": "invoke", "f": "get", "key": 1, '
                   '"time": 1}\nnot json\n')
        rc, err = self.main("--workload", "register", "--history", self.hist,
                            "--out", self.out)
        self.assertEqual(rc, 2)
        self.assertIn("history.jsonl:2: malformed JSON", err)
        with open(self.out) as fh:
            self.assertIn("error", json.load(fh))

    def test_completion_without_invocation_exits_2(self):
        self.write(json.dumps({"process": 4, "type": "ok", "f": "get",
                               "key": 1, "value": None, "time": 1}) + "\n")
        rc, err = self.main("--workload", "register", "--history", self.hist)
        self.assertEqual(rc, 2)
        self.assertIn("without a pending invocation", err)

    def test_missing_history_exits_2(self):
        rc, err = self.main("--workload", "set", "--history",
                            os.path.join(self.dir, "nope.jsonl"))
        self.assertEqual(rc, 2)
        self.assertIn("bad input", err)

    def test_all_runs_the_checkers_whose_ops_are_present(self):
        h = H()
        h.upsert(1, 1, 10, 1)
        h.get(2, 1, 10, 1)
        h.delete(1, 1, 2)
        h.search(2, 1, [1])  # resurrection and not live
        self.write(h.text())
        rc, _ = self.main("--workload", "all", "--history", self.hist,
                          "--out", self.out)
        self.assertEqual(rc, 1)
        with open(self.out) as fh:
            res = json.load(fh)
        self.assertEqual(set(res["checks"]),
                         {"register", "delete", "search", "deadline"})
        self.assertIs(res["checks"]["register"]["valid"], True)
        self.assertIs(res["checks"]["delete"]["valid"], False)
        self.assertIs(res["checks"]["search"]["valid"], False)

    def test_unknown_exits_3(self):
        h = H()
        for p in range(8):
            h.invoke(p, "upsert", key=1, value=100 + p, version=1)
        for p in range(8):
            h.ok(p)
        h.get(50, 1, 100, 1)
        self.write(h.text())
        rc, _ = self.main("--workload", "register", "--history", self.hist,
                          "--register-budget", "5", "--out", self.out)
        self.assertEqual(rc, 3)
        with open(self.out) as fh:
            self.assertEqual(json.load(fh)["valid"], "unknown")

    def test_workload_without_its_ops_is_unknown(self):
        self.set_history([1, 2])
        rc, _ = self.main("--workload", "search", "--history", self.hist,
                          "--out", self.out)
        self.assertEqual(rc, 3)

    def test_deadline_check_covers_every_op(self):
        h = H()
        h.invoke(1, "get", key=1, t=0)
        h.ok(1, value=None, t=10_000 * MS)
        self.write(h.text())
        rc, _ = self.main("--workload", "register", "--history", self.hist,
                          "--out", self.out, "--deadline-ms", "2000")
        self.assertEqual(rc, 1)
        with open(self.out) as fh:
            res = json.load(fh)
        self.assertIs(res["checks"]["register"]["valid"], True)
        self.assertEqual(res["checks"]["deadline"]["overruns"], 1)


if __name__ == "__main__":
    unittest.main()
