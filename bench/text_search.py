#!/usr/bin/env python3
"""Text search end to end on a running cluster with shoal-embed: loads a
product catalogue (JSON lines with id / text / payload, e.g. from
bench/wordnet_catalogue.py), embedding the texts through the embedding
tier, then runs text queries with and without a category filter and prints
recall@k against exact search on the same vectors, and latency.

usage: text_search.py --router URL --embed URL --catalogue C.jsonl
                      --queries Q.jsonl [--collection catalogue] [--k 10]

Needs the Python binding on PYTHONPATH (client/python) and SHOAL_LIB.
Prints JSON lines on stdout and a summary on stderr.
"""
import argparse
import json
import sys
import time

import shoal


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p * len(v)))] if v else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--router", required=True)
    ap.add_argument("--embed", required=True)
    ap.add_argument("--catalogue", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--collection", default="catalogue")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--batch", type=int, default=128)
    a = ap.parse_args()
    c = shoal.Client(a.router, timeout_ms=60000)
    e = shoal.Embedder(a.embed, timeout_ms=120000)
    items = [json.loads(l) for l in open(a.catalogue, encoding="utf-8")]
    queries = [json.loads(l) for l in open(a.queries, encoding="utf-8")]

    dim = len(e.embed(["probe"])[0])
    try:
        c.drop_collection(a.collection)
    except shoal.Error:
        pass
    c.create_collection(a.collection, dim=dim, metric="cosine",
                        indexes={"category": "keyword"})
    t0 = time.time()
    for i in range(0, len(items), a.batch):
        chunk = items[i:i + a.batch]
        vecs = e.embed([it["text"] for it in chunk])
        c.upsert(a.collection, [{"id": it["id"], "vector": v,
                                 "payload": it["payload"]}
                                for it, v in zip(chunk, vecs)])
    load = time.time() - t0
    print(json.dumps({"bench": "text", "op": "load", "products": len(items),
                      "dim": dim, "seconds": round(load, 2),
                      "texts_per_s": round(len(items) / load, 1)}))
    print("text: loaded %d products (%d-d) in %.1f s: %.0f texts/s "
          "embedded and stored" % (len(items), dim, load, len(items) / load),
          file=sys.stderr)

    for filtered in (False, True):
        lat, hit, want = [], 0, 0
        for q in queries:
            f = 'category = "%s"' % q["category"] if filtered else None
            t = time.time()
            got = e.search_text(a.collection, q["query"], k=a.k, filter=f)
            lat.append((time.time() - t) * 1e3)
            ref = c.search(a.collection, e.embed([q["query"]])[0], k=a.k,
                           filter=f, exact=True)
            truth = {h.id for h in ref}
            want += len(truth)
            hit += len(truth & {h.id for h in got})
        rec = hit / want if want else 1.0
        print(json.dumps({"bench": "text", "op": "search_text",
                          "filter": "category" if filtered else None,
                          "queries": len(queries), "k": a.k,
                          "cached_query_vectors": filtered,
                          "recall": round(rec, 4),
                          "p50_ms": round(pct(lat, 0.5), 3),
                          "p99_ms": round(pct(lat, 0.99), 3)}))
        print("text: %s: recall@%d %.4f against exact search, p50 %.1f ms, "
              "p99 %.1f ms (text in, ranked products out%s)" % (
                  "filter category = <the query's>" if filtered
                  else "no filter", a.k, rec, pct(lat, 0.5),
                  pct(lat, 0.99),
                  "; the query vectors come from the cache" if filtered
                  else ""), file=sys.stderr)
    # show a few answers
    for q in queries[:3]:
        hits = e.search_text(a.collection, q["query"], k=3)
        print("text: %r -> %s" % (q["query"], "; ".join(
            "%s (%s)" % (h.payload["name"], h.payload["category"])
            for h in hits)), file=sys.stderr)
    e.close()
    c.close()


if __name__ == "__main__":
    main()
