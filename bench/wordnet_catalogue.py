#!/usr/bin/env python3
"""A product catalogue from Debian's wordnet-base: the noun synsets under
clothing, footwear, bag, furniture and the rest of artefact (hyponyms,
followed transitively), one JSON object per line for `shoalctl import`:

  {"id": "wn-03045337", "text": "clog, geta, patten, sabot: footwear usually
   with a thick wooden sole", "payload": {"category": "footwear",
   "name": "clog"}}

The category is the most specific of the roots a synset falls under
(footwear before clothing before artefact, ...). Standard library only.

usage: wordnet_catalogue.py OUT.jsonl [--wordnet /usr/share/wordnet]
       [--queries QUERIES.jsonl] [--nqueries 200] [--seed 1]

With --queries, also writes short shopping-style queries (a synset's other
words, or the first words of its gloss) with the category they belong to,
drawn at random (seeded) from the catalogue.
"""
import argparse
import json
import os
import random
import sys

# Most specific first: a synset gets the first root it falls under.
ROOTS = [("footwear", "footwear"), ("bag", "bag"), ("clothing", "clothing"),
         ("furniture", "furniture"), ("artefact", "artifact")]


def read_synsets(path):
    """offset -> (words, hyponym offsets, gloss) from data.noun."""
    syn = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("  "):
                continue  # licence header
            head, _, gloss = line.partition(" | ")
            t = head.split()
            off, wcnt = t[0], int(t[3], 16)
            words = [t[4 + 2 * i].replace("_", " ") for i in range(wcnt)]
            p = 4 + 2 * wcnt
            pcnt = int(t[p])
            hypo = []
            for i in range(pcnt):
                sym, poff, pos = t[p + 1 + 4 * i: p + 4 + 4 * i]
                if sym in ("~", "~i") and pos == "n":
                    hypo.append(poff)
            syn[off] = (words, hypo, gloss.strip())
    return syn


def first_sense(index_path, lemma):
    """The offset of the first noun sense of lemma (index.noun)."""
    with open(index_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            t = line.split()
            if t and t[0] == lemma:
                p_cnt = int(t[3])
                return t[6 + p_cnt]  # after synset_cnt, tagsense_cnt
    raise SystemExit("wordnet: no noun %r in %s" % (lemma, index_path))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--wordnet", default="/usr/share/wordnet")
    ap.add_argument("--queries")
    ap.add_argument("--nqueries", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    data = os.path.join(a.wordnet, "data.noun")
    index = os.path.join(a.wordnet, "index.noun")
    if not os.path.exists(data):
        raise SystemExit("wordnet: %s not found (apt-get install "
                         "wordnet-base)" % data)
    syn = read_synsets(data)
    category = {}
    for cat, lemma in ROOTS:
        stack = [first_sense(index, lemma)]
        while stack:
            off = stack.pop()
            if off in category or off not in syn:
                continue
            category[off] = cat
            stack.extend(syn[off][1])
    items = []
    for off in sorted(category):
        words, _, gloss = syn[off]
        gloss = gloss.split(";")[0].strip().strip('"')
        items.append({"id": "wn-" + off,
                      "text": "%s: %s" % (", ".join(words), gloss),
                      "payload": {"category": category[off],
                                  "name": words[0]}})
    with open(a.out, "w", encoding="utf-8") as f:
        for it in items:
            f.write(json.dumps(it, ensure_ascii=False) + "\n")
    counts = {}
    for it in items:
        c = it["payload"]["category"]
        counts[c] = counts.get(c, 0) + 1
    print("wordnet: %d products in %s: %s" % (
        len(items), a.out, ", ".join("%s %d" % kv for kv in
                                     sorted(counts.items()))),
        file=sys.stderr)
    if a.queries:
        rnd = random.Random(a.seed)
        picks = rnd.sample(items, min(a.nqueries, len(items)))
        with open(a.queries, "w", encoding="utf-8") as f:
            for it in picks:
                words = syn[it["id"][3:]][0]
                if len(words) > 1:
                    q = words[-1]
                else:
                    g = it["text"].split(": ", 1)[1].split()
                    q = " ".join(g[:6])
                f.write(json.dumps({"query": q, "category":
                                    it["payload"]["category"],
                                    "source": it["id"]}) + "\n")


if __name__ == "__main__":
    main()
