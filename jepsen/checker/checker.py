#!/usr/bin/env python3
"""History checkers of shoal's fault-injection suite (jepsen/, issue #9).

The harness (jepsen/harness/jepsen.py) records every client operation as an
invocation line and a completion line in history.jsonl, and every fault as a
start line and a stop line in nemesis.jsonl. This module reads them back and
judges them against the promises of DESIGN.md:

  set          no acknowledged write is lost; nothing never written appears
  register     each key's upserts and gets are linearizable against a
               register of (version, value) under shoal's version rule
  delete       a deleted point never comes back
  search       a search returns only attempted, live points; a complete
               exact search finds its acknowledged probe
  deadline     no operation outlives its deadline by more than a bound
  availability ok / fail / info counts per phase (measured, not judged)
  liveness     connections the router replaced because a node answered
               nothing, and which of them no fault explains (measured, not
               judged: the router heals them; bug 5 of docs/reliability.md)

Standard-library Python 3.11, no third-party modules. Used as a module (the
unit tests) and as a command:

  checker.py --workload set|register|delete|search|all
             --history DIR/history.jsonl [--nemesis DIR/nemesis.jsonl]
             [--watch DIR/watch.jsonl] [--out DIR/results.json] [--deadline-ms 5000] [--slack-ms 1000]
             [--register-budget 200000]

Exit status: 0 valid, 1 invalid, 2 bad input (or usage), 3 unknown (a
register search ran out of budget and nothing was found invalid).

Reading the history
-------------------
Lines are in the real-time order of the harness's recording, so the line
number is the clock used for precedence: operation A precedes B when A's
completion line comes before B's invocation line. The `time` fields
(monotonic ns) are used only for durations (the deadline check) and to place
operations in nemesis windows. A completion `info` means the outcome is
unknown: the operation may take effect at any moment after its invocation, or
never, so for precedence it never completes. An invocation without a
completion at the end of the history is treated as `info` too.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import os
import sys
from dataclasses import dataclass

# How many offending operations each check lists; counts are always complete.
REPORT_LIMIT = 10
# Operations listed for an invalid register key (its whole short history).
KEY_OPS_LIMIT = 60
DEFAULT_DEADLINE_MS = 5000
DEFAULT_SLACK_MS = 1000
# Candidate linearizations tried per register key before giving up with
# "unknown": the Wing-Gong search is exponential in the worst case, and the
# harness keeps each key's history short (about 40 operations) so that a
# real history needs a few thousand steps at most.
DEFAULT_REGISTER_BUDGET = 200_000

COMPLETIONS = ("ok", "fail", "info")
WRITES = ("upsert", "delete")
UNKNOWN = "unknown"


class HistoryError(ValueError):
    """The history or nemesis file breaks the format contract (exit 2).

    The message names the file and line."""


# ---- Operations ------------------------------------------------------------

@dataclass(slots=True, eq=False)
class Op:
    """One client operation: an invocation and its completion.

    `type` is the outcome: "ok", "fail" or "info" ("info" also for an
    operation still pending at the end of the history). Fields of the
    operation (key, version, the written value) are read from the
    invocation; results (a read's value, stale, complete) from the
    completion."""

    index: int  # ordinal in the history, by invocation
    process: int
    f: str
    type: str
    inv: dict
    cmp: dict | None = None
    inv_line: int = 0
    cmp_line: int | None = None
    pending: bool = False  # no completion was recorded at all

    @property
    def key(self):
        return self.inv.get("key")

    @property
    def version(self):
        return self.inv.get("version")

    @property
    def written(self):
        """The value an upsert writes."""
        return self.inv.get("value")

    @property
    def result(self):
        """The value of an ok completion (a read's value, a search's keys);
        None otherwise."""
        if self.type != "ok" or self.cmp is None:
            return None
        if self.f == "get" and self.cmp.get("absent") is True:
            return None
        return self.cmp.get("value")

    @property
    def stale(self):
        """True / False as the completion says, None when it does not say."""
        return None if self.cmp is None else self.cmp.get("stale")

    @property
    def inv_pos(self):
        return self.inv_line

    @property
    def ret_pos(self):
        """Where the operation certainly ended: its completion line, or
        infinity for an unknown outcome (it may take effect any time)."""
        if self.type == "info" or self.cmp_line is None:
            return math.inf
        return self.cmp_line

    @property
    def t_inv(self):
        return self.inv["time"]

    @property
    def t_cmp(self):
        return None if self.cmp is None else self.cmp["time"]

    def deadline_ms(self, default):
        d = self.inv.get("deadline_ms")
        return default if d is None else d

    def summary(self):
        """A JSON-able description for reports: enough to find the lines."""
        s = {"index": self.index, "process": self.process, "f": self.f,
             "type": self.type, "invoke_line": self.inv_line,
             "complete_line": self.cmp_line, "t_invoke": self.t_inv,
             "t_complete": self.t_cmp}
        for k in ("key", "version", "exact", "deadline_ms"):
            if k in self.inv:
                s[k] = self.inv[k]
        if self.f == "upsert":
            s["value"] = self.written
        if self.cmp is not None:
            if self.f in ("get", "search", "read_all") and self.type == "ok":
                r = self.result
                if isinstance(r, list) and len(r) > 20:
                    # a final read of thousands of keys: its size, not
                    # its keys (history.jsonl has them)
                    s["result_count"] = len(r)
                    r = r[:20] + ["..."]
                s["result"] = r
                if self.f == "get" and self.cmp.get("version") is not None:
                    s["result_version"] = self.cmp["version"]
            for k in ("stale", "complete", "error", "code"):
                if k in self.cmp:
                    s[k] = self.cmp[k]
        if self.pending:
            s["pending"] = True
        return s


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _is_key(x):
    return _is_int(x) or isinstance(x, str)


def read_jsonl(path):
    """Returns [(line number, object)] of a JSON-lines file; blank lines are
    skipped. Raises HistoryError on a line that is not a JSON object, OSError
    when the file cannot be read."""
    records = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise HistoryError(f"{path}:{lineno}: malformed JSON: "
                                   f"{e.msg} (column {e.colno})") from None
            if not isinstance(obj, dict):
                raise HistoryError(f"{path}:{lineno}: expected a JSON object")
            records.append((lineno, obj))
    return records


def _check_invocation(rec, where):
    f = rec["f"]
    need = {"upsert": ("key", "value", "version"),
            "delete": ("key", "version"),
            "get": ("key",), "search": ("key",)}.get(f, ())
    for k in need:
        if k not in rec:
            raise HistoryError(f"{where}: {f} invocation without '{k}'")
    if "key" in need and not _is_key(rec["key"]):
        raise HistoryError(f"{where}: 'key' must be an integer or a string")
    for k in ("value", "version"):
        if k in need and not _is_int(rec[k]):
            raise HistoryError(f"{where}: {f} '{k}' must be an integer")
    d = rec.get("deadline_ms")
    if d is not None and (isinstance(d, bool) or
                          not isinstance(d, (int, float)) or d < 0):
        raise HistoryError(f"{where}: 'deadline_ms' must be a number >= 0")


def _check_completion(op, rec, where):
    if "stale" in rec and not isinstance(rec["stale"], bool):
        raise HistoryError(f"{where}: 'stale' must be true or false")
    if rec["type"] != "ok":
        return
    f = op.f
    if f == "get":
        if "value" not in rec and rec.get("absent") is not True:
            raise HistoryError(f"{where}: ok get without 'value' "
                               "(null when the point is absent)")
        v = rec.get("value")
        if v is not None and not _is_int(v):
            raise HistoryError(f"{where}: get 'value' must be an integer "
                               "or null")
        ver = rec.get("version")
        if v is not None and ver is not None and not _is_int(ver):
            raise HistoryError(f"{where}: get 'version' must be an integer")
    elif f in ("read_all", "search"):
        v = rec.get("value")
        if not isinstance(v, list) or not all(_is_key(k) for k in v):
            raise HistoryError(f"{where}: ok {f} 'value' must be a list of "
                               "keys")
        if f == "search" and not isinstance(rec.get("complete"), bool):
            raise HistoryError(f"{where}: ok search without a boolean "
                               "'complete'")


def parse_history(records, source="history"):
    """Pairs invocations with completions.

    records: [(line number, dict)] as read_jsonl returns (or hand-made).
    Returns [Op] in invocation order. Raises HistoryError, naming
    source:line, on a missing or mistyped field, a completion without a
    pending invocation, a second invocation while one is pending, a
    completion of another f, a completion before its invocation in time, or a
    process reused after an info completion (the harness retires it)."""
    ops = []
    pending = {}  # process -> Op awaiting its completion
    retired = {}  # process -> line of the info completion that retired it
    for lineno, rec in records:
        where = f"{source}:{lineno}"
        proc, typ, f, t = (rec.get("process"), rec.get("type"), rec.get("f"),
                           rec.get("time"))
        if not _is_int(proc):
            raise HistoryError(f"{where}: 'process' must be an integer")
        if typ not in ("invoke",) + COMPLETIONS:
            raise HistoryError(f"{where}: 'type' must be invoke, ok, fail "
                               f"or info, not {typ!r}")
        if not isinstance(f, str) or not f:
            raise HistoryError(f"{where}: 'f' must be a non-empty string")
        if not _is_int(t):
            raise HistoryError(f"{where}: 'time' must be an integer (ns)")
        if typ == "invoke":
            if proc in pending:
                p = pending[proc]
                raise HistoryError(
                    f"{where}: process {proc} invokes {f} while its {p.f} "
                    f"from line {p.inv_line} is still pending")
            if proc in retired:
                raise HistoryError(
                    f"{where}: process {proc} reused after its info "
                    f"completion on line {retired[proc]}")
            _check_invocation(rec, where)
            op = Op(index=len(ops), process=proc, f=f, type="info", inv=rec,
                    inv_line=lineno)
            ops.append(op)
            pending[proc] = op
            continue
        op = pending.pop(proc, None)
        if op is None:
            raise HistoryError(f"{where}: {typ} completion of {f} for process "
                               f"{proc} without a pending invocation")
        if f != op.f:
            raise HistoryError(f"{where}: completion of {f} for process "
                               f"{proc}, whose pending invocation (line "
                               f"{op.inv_line}) is {op.f}")
        if t < op.t_inv:
            raise HistoryError(f"{where}: completes before its invocation "
                               f"(line {op.inv_line}) in time")
        _check_completion(op, rec, where)
        op.type, op.cmp, op.cmp_line = typ, rec, lineno
        if typ == "info":
            retired[proc] = lineno
    for op in pending.values():
        op.pending = True  # stays "info": it may have happened, or not
    return ops


def load_history(path):
    """read_jsonl + parse_history. Raises HistoryError or OSError."""
    return parse_history(read_jsonl(path), source=path)


def parse_nemesis(records, source="nemesis"):
    """Validates nemesis events: each needs an integer `time`, a `type` and
    a `nemesis` name. Only "start" and "stop" events make windows; other
    types are kept but ignored. Returns the event dicts."""
    events = []
    for lineno, rec in records:
        where = f"{source}:{lineno}"
        if not _is_int(rec.get("time")):
            raise HistoryError(f"{where}: 'time' must be an integer (ns)")
        if not isinstance(rec.get("type"), str):
            raise HistoryError(f"{where}: 'type' must be a string")
        if not isinstance(rec.get("nemesis"), str):
            raise HistoryError(f"{where}: 'nemesis' must be a string")
        events.append(rec)
    return events


def load_nemesis(path):
    """read_jsonl + parse_nemesis. Raises HistoryError or OSError."""
    return parse_nemesis(read_jsonl(path), source=path)


# ---- Helpers ---------------------------------------------------------------

def _by_key(ops, fs):
    groups = {}
    for op in ops:
        if op.f in fs:
            groups.setdefault(op.key, []).append(op)
    return groups


def _key_order(k):
    # keys may mix ints and strings; sort ints first, each kind in order
    return (isinstance(k, str), k)


def _first(items, n=REPORT_LIMIT):
    return list(items)[:n]


def _combine(verdicts):
    """False if any is False; "unknown" if any is unknown; else True."""
    verdicts = list(verdicts)
    if any(v is False for v in verdicts):
        return False
    if any(v == UNKNOWN for v in verdicts):
        return UNKNOWN
    return True


def _reviver_pos(d, upserts):
    """The earliest invocation line of an upsert that could have replaced
    the tombstone of the applied delete d, or infinity.

    Under shoal's version rule a stored version never decreases, so after d
    is applied the point can be live again only through an upsert U that
    did not certainly fail and that wins over d's tombstone: U.version >
    d.version, or U.version == d.version (equal replaces) with U applied
    after d, which is possible only when U did not complete before d was
    invoked."""
    best = math.inf
    for u in upserts:
        if u.type == "fail":
            continue
        if u.version > d.version or (u.version == d.version and
                                     u.ret_pos > d.inv_pos):
            best = min(best, u.inv_pos)
    return best


def _applied_deletes(deletes):
    """Deletes known to have been applied: ok and not reported stale."""
    return [d for d in deletes if d.type == "ok" and d.stale is not True]


# ---- set -------------------------------------------------------------------

def check_set(ops):
    """Set workload: keys upserted (once each, concurrently), then a final
    read_all (the last ok read_all of the history).

    Promises checked:
      lost        an upsert acknowledged before the final read began, of a
                  key never deleted (no delete that did not fail was invoked
                  before the read completed), whose key is absent from the
                  final read. Invalid.
      unexpected  a key in the final read for which no upsert was invoked
                  before the read completed. Invalid.
      failed_present
                  a key in the final read whose upserts all failed ("fail"
                  promises the write certainly did not happen). Invalid.
      duplicates  a key listed twice by the final read. Invalid.
      recovered   a key present whose upserts all ended info (fine: an
                  unknown write may take effect).
    There must be an ok final read, or the check is invalid."""
    reads = [o for o in ops if o.f == "read_all" and o.type == "ok"]
    upserts = _by_key(ops, ("upsert",))
    deletes = _by_key(ops, ("delete",))
    out = {"valid": False, "attempted": len(upserts),
           "acknowledged": sum(any(u.type == "ok" for u in us)
                               for us in upserts.values())}
    if not reads:
        out["error"] = "no ok final read_all in the history"
        return out
    final = max(reads, key=lambda o: o.cmp_line)
    start, end = final.inv_pos, final.ret_pos
    present_list = final.result
    present = set(present_list)
    seen, duplicates = set(), []
    for k in present_list:
        if k in seen:
            duplicates.append(k)
        seen.add(k)

    lost, unexpected, failed_present, recovered = [], [], [], []
    concurrent = 0
    for k, us in upserts.items():
        before = [u for u in us if u.inv_pos < end]
        deleted = any(d.type != "fail" and d.inv_pos < end
                      for d in deletes.get(k, ()))
        acked = [u for u in before if u.type == "ok" and u.ret_pos < start]
        if k in present:
            if before and all(u.type == "fail" for u in before):
                failed_present.append(before[0])
            elif before and all(u.type == "info" for u in before):
                recovered.append(k)
        elif acked and not deleted:
            lost.append(acked[0])
        elif not deleted and any(u.type == "ok" for u in before):
            concurrent += 1  # acknowledged during the read: may be absent
    for k in present:
        if not any(u.inv_pos < end for u in upserts.get(k, ())):
            unexpected.append(k)
    lost.sort(key=lambda o: _key_order(o.key))
    unexpected.sort(key=_key_order)
    recovered.sort(key=_key_order)
    out.update({
        "valid": not (lost or unexpected or failed_present or duplicates),
        "final_read": final.summary(),
        "present": len(present),
        "info": sum(all(u.type == "info" for u in us)
                    for us in upserts.values()),
        "failed": sum(all(u.type == "fail" for u in us)
                      for us in upserts.values()),
        "acknowledged_during_read": concurrent,
        "lost_count": len(lost),
        "lost": [o.summary() for o in _first(lost)],
        "unexpected_count": len(unexpected),
        "unexpected": _first(unexpected),
        "failed_present_count": len(failed_present),
        "failed_present": [o.summary() for o in _first(failed_present)],
        "duplicates_count": len(duplicates),
        "duplicates": _first(duplicates),
        "recovered_count": len(recovered),
        "recovered": _first(recovered),
    })
    return out


# ---- register --------------------------------------------------------------
#
# The model: a register holding nothing (None) or (version, value), value
# None for a delete's tombstone. shoal's rule: a write whose version is lower
# than the stored one is ignored; equal or higher replaces. An ok completion
# that says stale: true was ignored, stale: false was applied; one that says
# nothing may be either. A get returns the stored value (null for nothing or
# a tombstone) and, with a value, the stored version.

def _apply(state, op):
    """One step of the model. Returns (legal, new state)."""
    if op.f == "get":
        val = op.result
        if val != (None if state is None else state[1]):
            return False, state
        ver = op.cmp.get("version")
        if val is not None and ver is not None and ver != state[0]:
            return False, state
        return True, state
    applies = state is None or op.version >= state[0]
    if op.type == "ok":
        if op.stale is True and applies:
            return False, state
        if op.stale is False and not applies:
            return False, state
    if not applies:
        return True, state
    return True, (op.version, op.written if op.f == "upsert" else None)


def _state_json(state):
    if state is None:
        return None
    if state[1] is None:
        return {"version": state[0], "deleted": True}
    return {"version": state[0], "value": state[1]}


def _explain(state, op):
    """Why op cannot take effect in state (for reports)."""
    held = ("nothing" if state is None else
            f"a tombstone at version {state[0]}" if state[1] is None else
            f"value {state[1]} at version {state[0]}")
    if op.f == "get":
        ver = op.cmp.get("version")
        got = "null" if op.result is None else (
            f"value {op.result}" + ("" if ver is None else
                                    f" at version {ver}"))
        return f"get returned {got} but the register held {held}"
    if op.stale is True:
        return (f"{op.f} at version {op.version} was acknowledged stale but "
                f"would replace {held}")
    return (f"{op.f} at version {op.version} was acknowledged as applied but "
            f"the register held {held}")


def _linearize(ops, max_steps):
    """Wing & Gong's search with Lowe's memoization, for one key.

    ops: the key's operations that matter, sorted by invocation: ok writes
    and ok gets (each must be linearized inside its interval), info writes
    (may be linearized any time after their invocation, or never). An op may
    be linearized next when no other pending ok op completed before it was
    invoked. Configurations (linearized set, model state) are visited once.

    An info write whose version is below the stored one can never change the
    state again (versions never decrease), so it is counted as dropped: that
    keeps the configurations from multiplying with every unknown write.

    Returns (verdict, steps, detail): verdict True, False or "unknown" (more
    than max_steps candidates tried); detail for False is the deepest
    configuration reached (path of indices, mask, state)."""
    n = len(ops)
    inv = [o.inv_pos for o in ops]
    ret = [o.ret_pos for o in ops]
    must_idx = [i for i in range(n) if ops[i].type == "ok"]
    must = 0
    for i in must_idx:
        must |= 1 << i
    if must == 0:
        return True, 0, None
    # info writes by version, to find those a stored version makes dead
    infos = sorted((ops[i].version, i) for i in range(n)
                   if ops[i].type != "ok")
    info_versions = [v for v, _ in infos]
    dead_prefix = [0]
    for _, i in infos:
        dead_prefix.append(dead_prefix[-1] | 1 << i)

    def dead(state):
        if state is None:
            return 0
        return dead_prefix[bisect.bisect_left(info_versions, state[0])]

    def candidates(mask):
        min_ret = min(ret[i] for i in must_idx if not mask >> i & 1)
        out = []
        for i in range(n):  # sorted by invocation: stop at the first late one
            if inv[i] >= min_ret:
                break
            if not mask >> i & 1:
                out.append(i)
        return out

    seen = {(0, None)}
    stack = [(0, None, iter(candidates(0)))]
    path = []
    best = (0, [], 0, None)  # (ok ops linearized, path, mask, state)
    steps = 0
    while stack:
        mask, state, it = stack[-1]
        i = next(it, None)
        if i is None:
            stack.pop()
            if path:
                path.pop()
            continue
        steps += 1
        if steps > max_steps:
            return UNKNOWN, steps, None
        legal, nstate = _apply(state, ops[i])
        if not legal:
            continue
        nmask = mask | 1 << i
        if nmask & must == must:
            return True, steps, None
        nmask |= dead(nstate)
        if (nmask, nstate) in seen:
            continue
        seen.add((nmask, nstate))
        path.append(i)
        done = (nmask & must).bit_count()
        if done > best[0]:
            best = (done, list(path), nmask, nstate)
        stack.append((nmask, nstate, iter(candidates(nmask))))
    return False, steps, {"path": best[1], "mask": best[2], "state": best[3],
                          "candidates": candidates(best[2])}


def check_register_key(key_ops, max_steps=DEFAULT_REGISTER_BUDGET):
    """Checks one key's history (upserts, deletes, gets) for linearizability
    against the version-rule register (see _apply). fail ops and gets that
    ended info are dropped.

    Returns {"valid": True | False | "unknown", "key", "ops", "steps"} and,
    when invalid, "reason" and the operations involved: "anomalies" (reads
    of values never written, of failed writes, or of writes invoked after
    the read completed: found without a search), or the deepest linearized
    prefix found ("linearized", "state") and the ok operations that could not
    come next, each with why ("stuck"), plus the key's whole history."""
    key = key_ops[0].key if key_ops else None
    ops = sorted((o for o in key_ops
                  if o.type == "ok" or (o.type == "info" and o.f in WRITES)),
                 key=lambda o: o.inv_pos)
    out = {"key": key, "ops": len(key_ops), "steps": 0}

    writes = {}
    for o in key_ops:
        if o.f == "upsert":
            writes.setdefault(o.written, []).append(o)
    anomalies = []
    for g in ops:
        if g.f != "get" or g.result is None:
            continue
        ws = writes.get(g.result, [])
        if not ws:
            why = "read of a value never written"
        elif all(w.type == "fail" for w in ws):
            why = "read of the value of a failed write"
        elif all(w.type == "fail" or w.inv_pos > g.ret_pos for w in ws):
            why = "read of a value written only after the read completed"
        else:
            continue
        anomalies.append({"why": why, "read": g.summary(),
                          "writes": [w.summary() for w in ws]})
    if anomalies:
        out.update(valid=False, reason=anomalies[0]["why"],
                   anomalies=_first(anomalies),
                   history=[o.summary() for o in key_ops[:KEY_OPS_LIMIT]])
        return out

    # An unknown upsert whose value no read returned may as well never have
    # happened: take any linearization that applies it and drop it; no read
    # saw the register between it and the next write that replaced it (they
    # would have returned its value), and a lower stored version only lets
    # more writes apply. The one thing it can explain is a stale
    # acknowledgement, so keys with one keep all their unknown writes.
    # This is what keeps keys with many timeouts cheap.
    if not any(o.type == "ok" and o.stale is True for o in ops):
        seen_values = {g.result for g in ops if g.f == "get"}
        kept = [o for o in ops if not (o.type == "info" and o.f == "upsert"
                                       and o.written not in seen_values)]
        out["unread_info_dropped"] = len(ops) - len(kept)
        ops = kept
    verdict, steps, detail = _linearize(ops, max_steps)
    out.update(valid=verdict, steps=steps)
    if verdict is False:
        state = detail["state"]
        stuck = []
        for i in detail["candidates"]:
            o = ops[i]
            legal, _ = _apply(state, o)
            if o.type == "ok":
                stuck.append({"op": o.summary(), "why": _explain(state, o)
                              if not legal else "could come next, but "
                              "every continuation fails"})
        out.update(
            reason="not linearizable: no order of the operations fits the "
                   "register",
            linearized=[ops[i].summary() for i in detail["path"]],
            state=_state_json(state),
            stuck=stuck,
            history=[o.summary() for o in key_ops[:KEY_OPS_LIMIT]])
    return out


def check_register(ops, max_steps=DEFAULT_REGISTER_BUDGET):
    """Register workload: per key, upserts of unique values with versions,
    deletes and gets; each key's history must be linearizable against the
    version-rule register (check_register_key). Keys are independent.

    valid: False when some key is not linearizable; "unknown" when none is
    invalid but some key's search ran out of max_steps; True otherwise."""
    groups = _by_key(ops, ("upsert", "delete", "get"))
    invalid, unknown = [], []
    steps = 0
    for key in sorted(groups, key=_key_order):
        r = check_register_key(groups[key], max_steps)
        steps += r["steps"]
        if r["valid"] is False:
            invalid.append(r)
        elif r["valid"] == UNKNOWN:
            unknown.append({"key": key, "ops": r["ops"], "steps": r["steps"]})
    return {"valid": _combine([not invalid] + [UNKNOWN] * bool(unknown)),
            "keys": len(groups),
            "ops": sum(len(g) for g in groups.values()),
            "steps": steps, "max_steps_per_key": max_steps,
            "invalid_count": len(invalid), "invalid": _first(invalid),
            "unknown_count": len(unknown), "unknown": _first(unknown)}


# ---- delete ----------------------------------------------------------------

def _reads_of_keys(ops):
    """(key, read op, version or None) for every key a successful read
    returned: gets with a value, and each key of search and read_all
    results (whose version is unknown)."""
    for o in ops:
        if o.type != "ok":
            continue
        if o.f == "get" and o.result is not None:
            yield o.key, o, o.cmp.get("version")
        elif o.f in ("search", "read_all"):
            for k in o.result:
                yield k, o, None


def check_delete(ops):
    """Delete workload: a deleted point never comes back.

    For every applied delete D of key K (ok, not reported stale) and every
    read R that began after D's acknowledgement and returned K:
      - R is a get (its version: the one it returned, else that of the
        write of the value it returned): resurrection when the version is
        below D's (a stored version never decreases), or equal to D's from
        a write that completed before D was invoked (D replaced it);
      - R is a search or read_all (version unknown): resurrection unless an
        upsert that could replace D's tombstone (a higher version, or an
        equal one not completed before D) was invoked before R completed.
    Also "phantoms": a get returning a value no upsert of that key (that did
    not fail) wrote before the read completed, or with a version other than
    the write's. Invalid when there is any resurrection or phantom."""
    upserts = _by_key(ops, ("upsert",))
    applied = {k: _applied_deletes(ds)
               for k, ds in _by_key(ops, ("delete",)).items()}
    revive = {d.index: _reviver_pos(d, upserts.get(k, ()))
              for k, ds in applied.items() for d in ds}
    writes = {}
    for k, us in upserts.items():
        for u in us:
            writes[(k, u.written)] = u
    resurrections, phantoms = [], []
    checked = 0
    for k, r, rver in _reads_of_keys(ops):
        w = None
        if r.f == "get":
            w = writes.get((k, r.result))
            if w is None or w.type == "fail" or w.inv_pos > r.ret_pos:
                phantoms.append({"key": k, "read": r.summary(),
                                 "why": "returned a value never written"})
                continue
            if rver is not None and rver != w.version:
                phantoms.append({"key": k, "read": r.summary(),
                                 "write": w.summary(),
                                 "why": f"returned version {rver}, but the "
                                        f"value was written at version "
                                        f"{w.version}"})
                continue
            rver = w.version
        checked += 1
        for d in applied.get(k, ()):
            if d.ret_pos >= r.inv_pos:
                continue  # concurrent with the read: it may see either
            if rver is not None:
                bad = rver < d.version or (rver == d.version and
                                           w.ret_pos < d.inv_pos)
            else:
                bad = revive[d.index] >= r.ret_pos
            if bad:
                resurrections.append({
                    "key": k, "read": r.summary(), "read_version": rver,
                    "delete": d.summary(),
                    "why": "returned the point after its delete was "
                           "acknowledged, with no newer upsert to explain it"})
                break
    return {"valid": not (resurrections or phantoms),
            "keys": len(set(upserts) | set(applied)),
            "deletes_applied": sum(len(ds) for ds in applied.values()),
            "reads_checked": checked,
            "resurrections_count": len(resurrections),
            "resurrections": _first(resurrections),
            "phantoms_count": len(phantoms), "phantoms": _first(phantoms)}


# ---- deadlines -------------------------------------------------------------

def check_deadlines(ops, default_deadline_ms=DEFAULT_DEADLINE_MS,
                    slack_ms=DEFAULT_SLACK_MS, fs=None):
    """No operation (of the f values in fs, or of any f) with a definite
    outcome (ok or fail) completed later than its deadline_ms (or
    default_deadline_ms) plus slack_ms after its invocation.

    Reported per f: operations checked, overruns, the longest duration and
    the first overruns. Unknown (info) completions that came late are
    counted apart ("info_late") and do not make the check invalid: the
    client's own deadline produced them, so they measure the client."""
    per_f = {}
    for o in ops:
        if fs is not None and o.f not in fs:
            continue
        if o.cmp is None:
            continue
        dur_ms = (o.t_cmp - o.t_inv) / 1e6
        limit = o.deadline_ms(default_deadline_ms) + slack_ms
        row = per_f.setdefault(o.f, {"checked": 0, "max_ms": 0.0,
                                     "overruns": 0, "info_late": 0,
                                     "first": []})
        if o.type == "info":
            row["info_late"] += dur_ms > limit
            continue
        row["checked"] += 1
        row["max_ms"] = max(row["max_ms"], round(dur_ms, 3))
        if dur_ms > limit:
            row["overruns"] += 1
            if len(row["first"]) < REPORT_LIMIT:
                row["first"].append(dict(o.summary(),
                                         duration_ms=round(dur_ms, 3),
                                         limit_ms=limit))
    overruns = sum(r["overruns"] for r in per_f.values())
    return {"valid": overruns == 0, "default_deadline_ms": default_deadline_ms,
            "slack_ms": slack_ms, "overruns": overruns, "by_f": per_f}


# ---- search ----------------------------------------------------------------

def check_search(ops, default_deadline_ms=DEFAULT_DEADLINE_MS,
                 slack_ms=DEFAULT_SLACK_MS):
    """Search workload: for every ok search S,
      (a) never_attempted: every returned key had an upsert invoked before S
          completed;
      (b) not_live: every returned key was live at some moment of S: it had
          an upsert that did not fail invoked before S completed, and no
          delete of it applied and acknowledged before S began without an
          upsert invoked before S completed that could replace the
          tombstone (see _reviver_pos);
      (c) missed_probe: an exact search reported complete, whose probe key
          had an upsert acknowledged before S began and no delete (that did
          not fail and was not reported stale) invoked before S completed,
          returned the probe key;
      (d) deadline: no search completed (ok or fail) later than its
          deadline plus slack_ms (check_deadlines on searches).
    Invalid when any of them finds something."""
    upserts = _by_key(ops, ("upsert",))
    deletes = _by_key(ops, ("delete",))
    applied = {k: _applied_deletes(ds) for k, ds in deletes.items()}
    revive = {d.index: _reviver_pos(d, upserts.get(k, ()))
              for k, ds in applied.items() for d in ds}
    searches = [o for o in ops if o.f == "search" and o.type == "ok"]
    never, not_live, missed = [], [], []
    probes_checked = 0
    for s in searches:
        for k in s.result:
            us = [u for u in upserts.get(k, ()) if u.inv_pos < s.ret_pos]
            if not us:
                never.append({"key": k, "search": s.summary()})
                continue
            if all(u.type == "fail" for u in us):
                not_live.append({"key": k, "search": s.summary(),
                                 "why": "every upsert of it failed"})
                continue
            for d in applied.get(k, ()):
                if d.ret_pos < s.inv_pos and revive[d.index] >= s.ret_pos:
                    not_live.append({"key": k, "search": s.summary(),
                                     "delete": d.summary(),
                                     "why": "deleted (acknowledged) before "
                                            "the search began, not upserted "
                                            "again"})
                    break
        if not (s.inv.get("exact") is True and s.cmp.get("complete") is True):
            continue
        k = s.key
        acked = [u for u in upserts.get(k, ())
                 if u.type == "ok" and u.ret_pos < s.inv_pos]
        if not acked:
            continue
        if any(d.type != "fail" and not (d.type == "ok" and d.stale is True)
               and d.inv_pos < s.ret_pos for d in deletes.get(k, ())):
            continue
        probes_checked += 1
        if k not in s.result:
            missed.append({"key": k, "search": s.summary(),
                           "upsert": acked[-1].summary()})
    deadline = check_deadlines(ops, default_deadline_ms, slack_ms,
                               fs=("search",))
    return {"valid": not (never or not_live or missed) and deadline["valid"],
            "searches_ok": len(searches),
            "probes_checked": probes_checked,
            "never_attempted_count": len(never),
            "never_attempted": _first(never),
            "not_live_count": len(not_live), "not_live": _first(not_live),
            "missed_probe_count": len(missed),
            "missed_probe": _first(missed),
            "deadline": deadline}


# ---- availability ----------------------------------------------------------

def fault_spans(events):
    """(start ns, stop ns, nemesis, target) of each fault, as
    nemesis_windows pairs them, in the order they end (the open ones
    last). target is the start's: a process ("node2", "router"), "all",
    or None for a fault on the network as a whole (loss) or on no one
    process (slot moves)."""
    open_at, spans = {}, []
    for ev in sorted(events, key=lambda e: e["time"]):
        name = ev["nemesis"]
        if ev["type"] == "start":
            open_at.setdefault(name, (ev["time"], ev.get("target")))
        elif ev["type"] == "stop" and name in open_at:
            t0, target = open_at.pop(name)
            spans.append((t0, ev["time"], name, target))
    spans += [(t0, math.inf, name, target)
              for name, (t0, target) in open_at.items()]
    return spans


def nemesis_windows(events):
    """Fault windows from nemesis events: a fault is active from a start to
    the next stop of the same nemesis (to infinity if it never stops).
    Another start while one is open extends the open window; a stop with
    none open is ignored (a heal stops everything). Returns
    {nemesis: [(start ns, stop ns)]}, each list sorted and disjoint."""
    windows = {}
    for t0, t1, name, _ in fault_spans(events):
        windows.setdefault(name, []).append((t0, t1))
    return windows


def _in_windows(t, windows):
    """windows: sorted disjoint [(start, stop)]. True when start <= t < stop
    for one of them."""
    i = bisect.bisect_right(windows, (t, math.inf)) - 1
    return i >= 0 and windows[i][0] <= t < windows[i][1]


def _merge(windows):
    out = []
    for a, b in sorted(windows):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _tally():
    return {"by_f": {}, "total": {t: 0 for t in COMPLETIONS + ("ops",)}}


def _count(table, op):
    row = table["by_f"].setdefault(op.f, {t: 0 for t in COMPLETIONS +
                                          ("ops",)})
    for r in (row, table["total"]):
        r[op.type] += 1
        r["ops"] += 1


def _rates(table):
    for r in list(table["by_f"].values()) + [table["total"]]:
        r["ok_rate"] = round(r["ok"] / r["ops"], 4) if r["ops"] else None
    return table


def availability(ops, nemesis_events=None):
    """Measured, not judged: ok / fail / info counts (and the ok rate) per
    f and in total, overall and split by phase: "fault" when some nemesis
    was active at the operation's invocation, "calm" otherwise; and per
    nemesis. Without nemesis events every operation is calm."""
    per = nemesis_windows(nemesis_events or [])
    union = _merge(w for ws in per.values() for w in ws)
    tables = {"overall": _tally(), "fault": _tally(), "calm": _tally()}
    by_nemesis = {name: _tally() for name in per}
    for o in ops:
        _count(tables["overall"], o)
        _count(tables["fault" if _in_windows(o.t_inv, union) else "calm"], o)
        for name, ws in per.items():
            if _in_windows(o.t_inv, ws):
                _count(by_nemesis[name], o)
    bounded = [(a, b) for a, b in union if b != math.inf]
    out = {name: _rates(t) for name, t in tables.items()}
    out["by_nemesis"] = {name: _rates(t) for name, t in by_nemesis.items()}
    out["fault_windows"] = sum(len(ws) for ws in per.values())
    out["fault_s"] = round(sum(b - a for a, b in bounded) / 1e9, 3)
    out["open_faults"] = sorted(n for n, ws in per.items()
                                if ws and ws[-1][1] == math.inf)
    return out


# ---- liveness ----------------------------------------------------------------

# How long after a fault ends a reconnect is still its doing: the router
# replaces a connection after 5 s without an answer, once per 5 s, on a
# call that times out (1-2 s), and the harness samples every 0.5 s.
RECONNECT_SLACK_S = 10


def check_reconnects(watch_events, nemesis_events=None, t0=None,
                     slack_s=RECONNECT_SLACK_S):
    """Measured, not judged. watch_events: the harness's samples of the
    router's reconnect counter, {"time", "type": "reconnect", "target":
    node, "count": n}. A reconnect is explained when a fault on its node,
    on the router, on every process, or on no one process was active at
    most slack_s before it; one that nothing explains is a node that
    stopped answering on a connection it kept open. t0 (ns): the origin of
    the listed times (default: the first event's)."""
    seen = [e for e in watch_events or [] if e.get("type") == "reconnect"]
    spans = fault_spans(nemesis_events or [])
    slack = slack_s * 1e9
    if t0 is None:
        t0 = min((e["time"] for e in seen), default=0)
    unexplained = []
    for e in sorted(seen, key=lambda e: e["time"]):
        t, node = e["time"], e.get("target")
        if not any(a <= t <= b + slack and
                   target in (None, node, "router", "all")
                   for a, b, _, target in spans):
            unexplained.append({"node": node, "count": e.get("count", 1),
                                "at_s": round((t - t0) / 1e9, 3)})
    return {"reconnects": sum(e.get("count", 1) for e in seen),
            "unexplained_count": sum(u["count"] for u in unexplained),
            "unexplained": _first(unexplained)}


# ---- the whole verdict -----------------------------------------------------

WORKLOADS = ("set", "register", "delete", "search")
# an op of these f values gives the workload's checker work (for "all")
WORKLOAD_OPS = {"set": ("read_all",), "register": ("get",),
                "delete": ("delete",), "search": ("search",)}


def run_checks(workload, ops, nemesis_events=None,
               deadline_ms=DEFAULT_DEADLINE_MS, slack_ms=DEFAULT_SLACK_MS,
               register_budget=DEFAULT_REGISTER_BUDGET, watch_events=None):
    """Runs the workload's checker ("all": every checker whose operations
    are in the history), the deadline check over every operation,
    availability and liveness. Returns the results.json object:
    {"workload", "valid", "checks": {name: result}, "availability",
     "liveness", "history": {"ops": n}}.

    An explicitly named workload whose operations are absent is "unknown"
    (nothing was checked), except set, whose checker demands a final read."""
    present = {o.f for o in ops}
    if workload == "all":
        names = [w for w in WORKLOADS
                 if present.intersection(WORKLOAD_OPS[w])]
    else:
        names = [workload]
    checks = {}
    for w in names:
        if (w != "set" and workload != "all"
                and not present.intersection(WORKLOAD_OPS[w])):
            checks[w] = {"valid": UNKNOWN, "note": "no %s operation in the "
                         "history: nothing was checked"
                         % "/".join(WORKLOAD_OPS[w])}
        elif w == "set":
            checks[w] = check_set(ops)
        elif w == "register":
            checks[w] = check_register(ops, register_budget)
        elif w == "delete":
            checks[w] = check_delete(ops)
        elif w == "search":
            checks[w] = check_search(ops, deadline_ms, slack_ms)
    checks["deadline"] = check_deadlines(ops, deadline_ms, slack_ms)
    return {"workload": workload,
            "valid": _combine(c["valid"] for c in checks.values()),
            "checks": checks,
            "availability": availability(ops, nemesis_events),
            "liveness": check_reconnects(
                watch_events, nemesis_events,
                min((o.t_inv for o in ops), default=None)),
            "history": {"ops": len(ops),
                        "pending": sum(o.pending for o in ops)}}


EXIT = {True: 0, False: 1, UNKNOWN: 3}


def _write(path, obj):
    d = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(d, ".%s.tmp" % os.path.basename(path))
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1)
        fh.write("\n")
    os.replace(tmp, path)


def main(argv=None):
    """The command line; returns the exit status (see the module doc)."""
    ap = argparse.ArgumentParser(
        prog="checker.py",
        description="Checks a shoal fault-injection history.")
    ap.add_argument("--workload", required=True,
                    choices=WORKLOADS + ("all",))
    ap.add_argument("--history", required=True,
                    help="history.jsonl written by the harness")
    ap.add_argument("--nemesis", help="nemesis.jsonl (fault windows)")
    ap.add_argument("--watch", help="watch.jsonl (the router's reconnects)")
    ap.add_argument("--out", help="results.json to write (default: stdout)")
    ap.add_argument("--deadline-ms", type=float, default=DEFAULT_DEADLINE_MS,
                    help="deadline of an op without deadline_ms "
                         "(default %(default)s)")
    ap.add_argument("--slack-ms", type=float, default=DEFAULT_SLACK_MS,
                    help="how far past its deadline an op may complete "
                         "(default %(default)s)")
    ap.add_argument("--register-budget", type=int,
                    default=DEFAULT_REGISTER_BUDGET,
                    help="search steps per register key before 'unknown' "
                         "(default %(default)s)")
    args = ap.parse_args(argv)
    try:
        ops = load_history(args.history)
        events = load_nemesis(args.nemesis) if args.nemesis else None
        watch = load_nemesis(args.watch) if args.watch else None
    except (HistoryError, OSError) as e:
        msg = str(e)
        print(f"checker: bad input: {msg}", file=sys.stderr)
        if args.out:
            try:
                _write(args.out, {"workload": args.workload, "valid": False,
                                  "error": "bad input: " + msg,
                                  "checks": {}, "availability": {}})
            except OSError:
                pass
        return 2
    results = run_checks(args.workload, ops, events, args.deadline_ms,
                         args.slack_ms, args.register_budget, watch)
    if args.out:
        try:
            _write(args.out, results)
        except OSError as e:
            print(f"checker: cannot write {args.out}: {e}", file=sys.stderr)
            return 2
    else:
        json.dump(results, sys.stdout, indent=1)
        sys.stdout.write("\n")
    print("checker: %s: valid=%s (%s)" % (
        args.workload, json.dumps(results["valid"]),
        ", ".join("%s=%s" % (n, json.dumps(c["valid"]))
                  for n, c in results["checks"].items())), file=sys.stderr)
    return EXIT[results["valid"]]


if __name__ == "__main__":
    sys.exit(main())
