"""Text search end to end: two shoal-node processes, a router and two
shoal-embed servers (one batching and caching, one embedding each text
alone, uncached) on free loopback ports. A few hundred product texts are
imported through shoalctl (embedded on the way in); an exact search by text
from Python and from C returns the same ids, in the same order, as a
brute-force search over vectors embedded one text at a time; a repeated
query is answered from the cache, as /metrics shows.

Run by meson with SHOAL_LIB, SHOAL_NODE_BIN, SHOAL_ROUTER_BIN,
SHOAL_EMBED_BIN, SHOALCTL_BIN, SEARCH_TEXT_BIN, SHOAL_MODEL_DIR and
PYTHONPATH set; skips (77) without the model."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from test_e2e import Proc  # noqa: E402

import shoal  # noqa: E402

COLORS = ["red", "black", "white", "navy", "green", "brown"]
ITEMS = ["running shoes", "leather boots", "wool scarf", "denim jacket",
         "canvas tote bag", "oak dining table", "office chair",
         "silk tie", "rain coat", "hiking backpack", "cotton t-shirt",
         "linen trousers"]
BRANDS = ["for men", "for women", "for kids", "on sale", "premium",
          "vintage"]


def catalogue():
    out = []
    for i, item in enumerate(ITEMS):
        for j, color in enumerate(COLORS):
            for k, b in enumerate(BRANDS[:4]):
                out.append(("p%d-%d-%d" % (i, j, k),
                            "%s %s %s" % (color, item, b), item))
    return out


class TextTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        model = os.environ.get("SHOAL_MODEL_DIR", "")
        if not os.path.exists(os.path.join(model, "config.json")):
            raise unittest.SkipTest("no model in %r" % model)
        cls.tmp = tempfile.mkdtemp(prefix="shoal-text-")
        cls.procs = []
        try:
            nodes = [Proc(os.environ["SHOAL_NODE_BIN"],
                          os.path.join(cls.tmp, "node%d" % i))
                     for i in (1, 2)]
            cls.procs += nodes
            cls.router = Proc(os.environ["SHOAL_ROUTER_BIN"],
                              os.path.join(cls.tmp, "router"),
                              ["--nodes", ",".join(n.url for n in nodes)])
            cls.procs.append(cls.router)
            cls.embed = Proc(os.environ["SHOAL_EMBED_BIN"],
                             os.path.join(cls.tmp, "embed"),
                             ["--model", "minilm=" + model, "--router",
                              cls.router.url, "--metrics", "127.0.0.1:0"])
            cls.procs.append(cls.embed)
            cls.single = Proc(os.environ["SHOAL_EMBED_BIN"],
                              os.path.join(cls.tmp, "single"),
                              ["--model", "minilm=" + model,
                               "--no-batching", "--cache-entries", "0"])
            cls.procs.append(cls.single)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for p in getattr(cls, "procs", []):
            p.stop(signal.SIGKILL)
        if hasattr(cls, "tmp"):
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def ctl(self, *args):
        r = subprocess.run([os.environ["SHOALCTL_BIN"], "--router",
                            self.router.url, "--embed", self.embed.url]
                           + list(args), capture_output=True, text=True,
                           timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def metrics(self):
        ready = os.path.join(self.tmp, "embed.ready")
        url = [l.strip()[len("metrics="):] for l in open(ready)
               if l.startswith("metrics=")][0]
        return urllib.request.urlopen(url + "/metrics", timeout=10).read() \
            .decode()

    def test_text_search_equals_brute_force(self):
        items = catalogue()
        self.ctl("collections", "create", "shop", "--dim", "384",
                 "--metric", "cosine", "--index", "item:keyword")
        src = os.path.join(self.tmp, "shop.jsonl")
        with open(src, "w") as f:
            for pid, text, item in items:
                f.write(json.dumps({"id": pid, "text": text,
                                    "payload": {"item": item}}) + "\n")
        self.ctl("import", "shop", src, "--batch", "50")
        self.assertEqual(int(self.ctl("count", "shop")), len(items))

        # the reference: every text embedded alone, no batch, no cache
        single = shoal.Embedder(self.single.url)
        vecs = {pid: single.embed(text)[0] for pid, text, _ in items}
        embedder = shoal.Embedder(self.embed.url)
        for q in ["warm winter boots", "a bag to carry groceries",
                  "something to sit on at work", "red shoes for running"]:
            qv = single.embed(q)[0]
            scored = sorted((1.0 - sum(a * b for a, b in zip(qv, v)), pid)
                            for pid, v in vecs.items())
            want = [pid for _, pid in scored[:10]]
            got = [h.id for h in embedder.search_text("shop", q, k=10,
                                                      exact=True)]
            self.assertEqual(got, want, q)
            c = subprocess.run([os.environ["SEARCH_TEXT_BIN"],
                                self.embed.url, "shop", "10", q],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(c.returncode, 0, c.stderr)
            self.assertEqual(c.stdout.split(), want, q)
        # with a filter, through shoalctl
        out = json.loads(self.ctl("--json", "search", "shop", "--text",
                                  "boots", "--filter",
                                  'item = "leather boots"', "--k", "3"))
        self.assertEqual(len(out["hits"]), 3)
        self.assertTrue(all(h["id"].startswith("p1-") for h in out["hits"]))

        # a repeated query comes from the cache
        def hits():
            for line in self.metrics().splitlines():
                if line.startswith("shoal_embed_cache_hits_total"):
                    return float(line.split()[-1])
            return 0.0
        before = hits()
        embedder.embed("a query asked twice")
        embedder.embed("a query asked twice")
        self.assertEqual(embedder.last_cached, 1)
        self.assertGreaterEqual(hits(), before + 1)
        embedder.close()
        single.close()

    def test_models_spread_over_servers_by_rendezvous_hashing(self):
        urls = [self.embed.url, self.single.url]
        a = shoal.Embedder(urls)
        b = shoal.Embedder(list(reversed(urls)))
        names = ["model-%d" % i for i in range(64)]
        owner = {n: a.server_for(n) for n in names}
        # the same server for a model whatever the order of the list
        self.assertEqual(owner, {n: b.server_for(n) for n in names})
        # and both servers get models
        self.assertEqual(set(owner.values()), set(urls))
        # a third server takes only models from the others, never moves
        # a model between the first two
        c = shoal.Embedder(urls + [self.router.url])
        for n in names:
            now = c.server_for(n)
            self.assertIn(now, (owner[n], self.router.url))
        a.close()
        b.close()
        c.close()


if __name__ == "__main__":
    unittest.main()
