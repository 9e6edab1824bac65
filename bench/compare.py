#!/usr/bin/env python3
"""Compare shoal-bench results at equal recall.

Reads the JSON lines of `shoal-bench hnsw` (a file, or stdin) and prints, per
engine and quantize mode (and filter label, when set): queries/s
interpolated at recall 0.95 and 0.99, the ratio shoal/peer at each target,
and build rate and memory. `--json` prints the same as one JSON object.

Interpolation is linear between the two consecutive sweep points (in ef
order) that bracket the target. When even the smallest ef already reaches
the target, the qps of that point is reported as a lower bound (marked '>='
in the table, "bound": "lower" in JSON; a ratio built on one is marked '~'
and "approx": true); "n/a" when no point reaches it.

usage: compare.py [FILE] [--json] [--targets 0.95,0.99]
"""
import argparse
import json
import signal
import sys


def interpolate(points, target):
    """points: [(ef, recall, qps)] sorted by ef. Returns (qps, exact) or
    (None, False) when the target is never reached."""
    for i, (_, r, q) in enumerate(points):
        if r >= target:
            if i == 0:
                return q, False
            _, r0, q0 = points[i - 1]
            if r == r0:
                return q, True
            return q0 + (target - r0) * (q - q0) / (r - r0), True
    return None, False


def load(stream):
    groups = {}
    order = []
    for lineno, line in enumerate(stream, 1):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            print(f"compare.py: line {lineno}: bad JSON: {e}", file=sys.stderr)
            continue
        if "engine" not in rec:
            continue
        key = (rec["engine"], rec.get("quantize", "none"),
               rec.get("filter_label"))
        if key not in groups:
            groups[key] = {"build": None, "points": [], "error": None}
            order.append(key)
        g = groups[key]
        if "error" in rec:
            g["error"] = rec["error"]
        elif "build_s" in rec:
            g["build"] = rec
            g["points"] = []  # a new build starts a new sweep
        elif "ef" in rec and "recall" in rec and "qps" in rec:
            g["points"].append((rec["ef"], rec["recall"], rec["qps"]))
    return groups, order


def name_of(key):
    engine, quant, label = key
    s = engine if quant in (None, "none") else f"{engine}/{quant}"
    if label is not None:
        s += f" [label={label}]"
    return s


def summarise(groups, order, targets):
    out = []
    for key in order:
        g = groups[key]
        pts = sorted(g["points"])
        row = {
            "engine": key[0],
            "quantize": key[1],
            "filter_label": key[2],
            "error": g["error"],
            "inserts_per_s": g["build"]["inserts_per_s"] if g["build"] else None,
            "mem_bytes": g["build"]["mem_bytes"] if g["build"] else None,
            "max_recall": max((p[1] for p in pts), default=None),
            "at": {},
        }
        for t in targets:
            q, exact = interpolate(pts, t)
            row["at"][f"{t:g}"] = {
                "qps": round(q, 1) if q is not None else None,
                "bound": None if q is None or exact else "lower",
            }
        out.append(row)
    # Ratios: each shoal row against each peer row with the same filter.
    ratios = []
    for s in out:
        if s["engine"] != "shoal":
            continue
        for p in out:
            if p["engine"] == "shoal" or p["error"] or \
                    p["filter_label"] != s["filter_label"]:
                continue
            r = {"shoal": name_of((s["engine"], s["quantize"], s["filter_label"])),
                 "peer": name_of((p["engine"], p["quantize"], p["filter_label"])),
                 "at": {}}
            r["approx"] = {}
            for t in targets:
                sa, pb = s["at"][f"{t:g}"], p["at"][f"{t:g}"]
                a, b = sa["qps"], pb["qps"]
                r["at"][f"{t:g}"] = round(a / b, 3) if a and b else None
                # A bound on either side makes the ratio a bound too.
                r["approx"][f"{t:g}"] = bool(a and b and
                                             (sa["bound"] or pb["bound"]))
            if s["inserts_per_s"] and p["inserts_per_s"]:
                r["build"] = round(s["inserts_per_s"] / p["inserts_per_s"], 3)
            else:
                r["build"] = None
            if s["mem_bytes"] and p["mem_bytes"]:
                r["mem"] = round(s["mem_bytes"] / p["mem_bytes"], 3)
            else:
                r["mem"] = None
            ratios.append(r)
    return out, ratios


def fmt_qps(cell):
    if cell["qps"] is None:
        return "n/a"
    s = f"{cell['qps']:.0f}"
    return ">=" + s if cell["bound"] == "lower" else s


def fmt_ratio(v):
    return "n/a" if v is None else f"{v:.2f}x"


def print_table(rows, ratios, targets):
    head = ["engine"] + [f"qps@{t:g}" for t in targets] + \
        ["max recall", "inserts/s", "mem MiB"]
    table = [head]
    for r in rows:
        name = name_of((r["engine"], r["quantize"], r["filter_label"]))
        if r["error"]:
            table.append([name, "error: " + r["error"]])
            continue
        table.append(
            [name] + [fmt_qps(r["at"][f"{t:g}"]) for t in targets] +
            ["n/a" if r["max_recall"] is None else f"{r['max_recall']:.4f}",
             "n/a" if r["inserts_per_s"] is None else f"{r['inserts_per_s']:.0f}",
             "n/a" if r["mem_bytes"] is None else f"{r['mem_bytes'] / 2**20:.1f}"])
    print_rows(table)
    if ratios:
        print()
        t2 = [["shoal / peer"] + [f"qps@{t:g}" for t in targets] +
              ["inserts/s", "mem"]]
        for r in ratios:
            t2.append([f"{r['shoal']} / {r['peer']}"] +
                      [("~" if r["approx"][f"{t:g}"] else "") +
                       fmt_ratio(r["at"][f"{t:g}"]) for t in targets] +
                      [fmt_ratio(r["build"]), fmt_ratio(r["mem"])])
        print_rows(t2)


def print_rows(table):
    width = max(len(r) for r in table)
    w = [0] * width
    for r in table:
        if len(r) != width:
            continue
        for i, c in enumerate(r):
            w[i] = max(w[i], len(c))
    for r in table:
        if len(r) != width:
            print(f"{r[0]:<{w[0]}}  " + "  ".join(r[1:]))
            continue
        cells = [f"{r[0]:<{w[0]}}"] + \
            [f"{c:>{w[i + 1]}}" for i, c in enumerate(r[1:])]
        print("  ".join(cells))


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet under `| head`
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", nargs="?", help="shoal-bench output (default stdin)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    ap.add_argument("--targets", default="0.95,0.99",
                    help="recall targets, comma separated (default 0.95,0.99)")
    a = ap.parse_args()
    try:
        targets = [float(x) for x in a.targets.split(",")]
    except ValueError:
        ap.error("--targets: numbers, comma separated")
    if any(not 0 < t <= 1 for t in targets):
        ap.error("--targets: each in (0, 1]")
    try:
        if a.file and a.file != "-":
            with open(a.file, encoding="utf-8") as f:
                groups, order = load(f)
        else:
            groups, order = load(sys.stdin)
    except OSError as e:
        print(f"compare.py: {e}", file=sys.stderr)
        return 1
    if not order:
        print("compare.py: no shoal-bench results in the input", file=sys.stderr)
        return 1
    rows, ratios = summarise(groups, order, targets)
    if a.json:
        json.dump({"engines": rows, "ratios": ratios}, sys.stdout, indent=2)
        print()
    else:
        print_table(rows, ratios, targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
