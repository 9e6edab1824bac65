"""End to end: three shoal-node processes and a shoal-router on free
loopback ports, next to a single reference node with the same data, driven
through the Python binding and shoalctl. Writes, reads and deletes through
the router; searches (with and without filters) identical, ids and order,
to the reference's; shoalctl status / collections / import / export /
search; a node killed (searches fail naming it, or succeed partially when
asked) and restarted (routing is whole again).

Run by meson with SHOAL_LIB, SHOAL_NODE_BIN, SHOAL_ROUTER_BIN, SHOALCTL_BIN
and PYTHONPATH set. Every process it starts is stopped, also on failure."""

import json
import math
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import shoal

DIM = 8
N = 600
CATS = ["shoes", "bags", "hats", "coats"]


def vec(i):
    return [math.sin(i * 12.9898 + j * 78.233) for j in range(DIM)]


def payload(i):
    return {"category": CATS[i % 4], "price": float(i % 200) + 0.5}


class Proc:
    """A shoal process on a free port (port 0 + --ready-file)."""

    def __init__(self, binary, data_dir, extra=(), listen="tcp://127.0.0.1:0"):
        self.data_dir = data_dir
        ready = data_dir + ".ready"
        if os.path.exists(ready):
            os.unlink(ready)
        log = open(data_dir + ".log", "ab")
        self.proc = subprocess.Popen(
            [binary, "--listen", listen, "--metrics", "", "--data-dir",
             data_dir, "--ready-file", ready] + list(extra),
            stdout=log, stderr=log)
        log.close()
        self.url = None
        deadline = time.time() + 60
        while time.time() < deadline and self.url is None:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited; see %s.log" % (binary, data_dir))
            if os.path.exists(ready):
                for line in open(ready):
                    if line.startswith("listen="):
                        self.url = line.strip()[len("listen="):]
            time.sleep(0.01)
        if self.url is None:
            self.stop(signal.SIGKILL)
            raise RuntimeError("%s did not start" % binary)

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class ClusterTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="shoal-e2e-")
        cls.procs = []
        try:
            node = os.environ["SHOAL_NODE_BIN"]
            cls.nodes = []
            for i in range(3):
                p = Proc(node, os.path.join(cls.tmp, "node%d" % (i + 1)))
                cls.procs.append(p)
                cls.nodes.append(p)
            cls.ref_proc = Proc(node, os.path.join(cls.tmp, "ref"))
            cls.procs.append(cls.ref_proc)
            cls.router_proc = Proc(
                os.environ["SHOAL_ROUTER_BIN"], os.path.join(cls.tmp, "router"),
                ["--nodes", ",".join(n.url for n in cls.nodes),
                 "--read-timeout-ms", "1000"])
            cls.procs.append(cls.router_proc)
            cls.router = shoal.Client(cls.router_proc.url, timeout_ms=10000)
            cls.ref = shoal.Client(cls.ref_proc.url, timeout_ms=10000)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for c in ("router", "ref"):
            if hasattr(cls, c):
                getattr(cls, c).close()
        for p in cls.procs:
            p.stop(signal.SIGKILL)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def ctl(self, *args, check=True):
        r = subprocess.run([os.environ["SHOALCTL_BIN"], "--router",
                            self.router_proc.url] + list(args),
                           capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            self.fail("shoalctl %s: %s" % (" ".join(args), r.stderr))
        return r

    def test_1_writes_and_reads(self):
        for c in (self.router, self.ref):
            c.create_collection("products", dim=DIM, metric="l2",
                                indexes={"category": "keyword",
                                         "price": "float"})
        for lo in range(0, N, 200):
            pts = [{"id": i, "vector": vec(i), "payload": payload(i)}
                   for i in range(lo, lo + 200)]
            for c in (self.router, self.ref):
                r = c.upsert("products", pts)
                self.assertEqual(r.applied, 200)
        # string ids too
        sku = [{"id": "sku-%d" % i, "vector": vec(1000 + i),
                "payload": payload(i)} for i in range(40)]
        for c in (self.router, self.ref):
            c.upsert("products", sku)
        got = self.router.get("products", [3, 599, "sku-7", 12345],
                              with_vector=True)
        self.assertEqual(sorted(str(p.id) for p in got),
                         ["3", "599", "sku-7"])
        for p in got:
            want = vec(p.id) if isinstance(p.id, int) else vec(1007)
            self.assertTrue(all(abs(a - b) < 1e-6
                                for a, b in zip(p.vector, want)))
        for c in (self.router, self.ref):
            c.delete("products", ids=[0, 1, 2, "sku-0"], version=1)
        self.assertEqual(self.router.count("products"), N + 40 - 4)
        self.assertEqual(self.router.count("products", 'category = "hats"'),
                         self.ref.count("products", 'category = "hats"'))

    def test_2_search_equals_reference(self):
        filters = [None, 'category = "shoes"',
                   'category in ["bags", "hats"] and price < 120',
                   'not (category = "coats") and price >= 50.5']
        for t in range(12):
            q = vec(5000 + t)
            for f in filters:
                a = self.router.search("products", q, k=15, filter=f,
                                       exact=True, with_payload=True)
                b = self.ref.search("products", q, k=15, filter=f,
                                    exact=True)
                self.assertEqual(b.plan, "exact_scan")
                self.assertEqual([h.id for h in a], [h.id for h in b], f)
                for x, y in zip(a, b):
                    self.assertAlmostEqual(x.distance, y.distance, places=4)
                self.assertEqual((a.nodes_answered, a.nodes_asked), (3, 3))
                if f == 'category = "shoes"':
                    self.assertTrue(all(h.payload["category"] == "shoes"
                                        for h in a))

    def test_3_shoalctl(self):
        st = json.loads(self.ctl("--json", "status").stdout)
        self.assertEqual(len(st["nodes"]), 3)
        self.assertTrue(all(n["health"] == "serving" for n in st["nodes"]))
        self.assertEqual(sum(n["slots"] for n in st["nodes"]), 16384)
        human = self.ctl("status").stdout
        self.assertIn("products", human)
        self.ctl("collections", "create", "cli", "--dim", "3", "--metric",
                 "cosine", "--index", "tag:keyword")
        lines = [json.dumps({"id": "p%d" % i, "vector": [1, i, 0],
                             "payload": {"tag": "t%d" % (i % 2)}})
                 for i in range(1, 51)]
        src = os.path.join(self.tmp, "in.jsonl")
        open(src, "w").write("\n".join(lines) + "\n")
        self.ctl("import", "cli", src, "--batch", "7")
        info = json.loads(self.ctl("--json", "collections", "info",
                                   "cli").stdout)
        self.assertEqual(info[0]["points"], 50)
        self.assertEqual(info[0]["metric"], "cosine")
        out = self.ctl("export", "cli", "--filter", 'tag = "t1"').stdout
        exported = [json.loads(l) for l in out.splitlines()]
        self.assertEqual(sorted(e["id"] for e in exported),
                         sorted("p%d" % i for i in range(1, 51, 2)))
        res = json.loads(self.ctl("--json", "search", "cli", "--vector",
                                  "1,3,0", "--k", "1").stdout)
        self.assertEqual(res["hits"][0]["id"], "p3")
        # an fvecs import, ids from --id-start
        fv = os.path.join(self.tmp, "v.fvecs")
        import struct
        with open(fv, "wb") as f:
            for i in range(20):
                f.write(struct.pack("<i3f", 3, 1.0, float(i), 2.0))
        self.ctl("import", "cli", fv, "--id-start", "100")
        self.assertEqual(int(self.ctl("count", "cli").stdout), 70)
        # errors: a clear message and a non-zero exit
        r = self.ctl("search", "nope", "--vector", "1,2,3", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("does not exist", r.stderr)
        r = self.ctl("count", "cli", "--filter", "tag = ", check=False)
        self.assertNotEqual(r.returncode, 0)
        # the rebalance plan: the nodes hold about the same already;
        # draining node 1 moves all its slots, to the other nodes only
        plan = json.loads(self.ctl("--json", "rebalance", "--dry-run",
                                   "--drain", "1").stdout)
        moved = sum(m["slots"] for m in plan["moves"])
        mine = sum(s["last"] - s["first"] + 1 for s in st["slots"]
                   if s["node"] == 1)
        self.assertEqual(moved, mine)
        self.assertTrue(all(m["from"] == 1 and m["to"] != 1
                            for m in plan["moves"]))
        after = {n["id"]: n["points_after"] for n in plan["nodes"]}
        self.assertEqual(after[1], 0)
        # rebalancing for real keeps every point (tests/integration/
        # test_rebalance.c tries it hard, under load)
        self.ctl("rebalance", "--grace-ms", "100")
        self.assertEqual(int(self.ctl("count", "cli").stdout), 70)
        self.ctl("collections", "drop", "cli")

    def test_4_node_down_and_back(self):
        q = vec(77)
        before = self.router.count("products")
        victim = self.nodes[1]
        victim.stop(signal.SIGKILL)
        with self.assertRaises(shoal.Error) as e:
            self.router.search("products", q, k=5)
        self.assertIn("node 2", str(e.exception))
        part = self.router.search("products", q, k=5, min_coverage=0.5)
        self.assertEqual((part.nodes_answered, part.nodes_asked), (2, 3))
        # back on its address and data dir
        p = Proc(os.environ["SHOAL_NODE_BIN"], victim.data_dir,
                 listen=victim.url)
        self.procs.append(p)
        self.nodes[1] = p
        deadline = time.time() + 30
        while True:
            try:
                full = self.router.search("products", q, k=5)
                break
            except shoal.Error:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
        self.assertEqual((full.nodes_answered, full.nodes_asked), (3, 3))
        self.assertEqual(self.router.count("products"), before)
        b = self.ref.search("products", q, k=5, ef=2000)
        a = self.router.search("products", q, k=5, ef=2000)
        self.assertEqual([h.id for h in a], [h.id for h in b])


if __name__ == "__main__":
    unittest.main()
