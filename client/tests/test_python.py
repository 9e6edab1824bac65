"""Tests of the Python binding against a real shoal-node on a free
loopback port (port 0 + ready file), always stopped (try/finally + kill).

Run by meson (suite client) with SHOAL_LIB, SHOAL_NODE_BIN and PYTHONPATH
set."""

import math
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

import shoal

N = 120
COLORS = ["red", "green", "blue"]


def vec(i):
    return [float(i), float(i % 7), float(i % 3), 1.0]


def payload(i):
    return {"color": COLORS[i % 3], "price": i * 1.5, "stock": i % 7,
            "active": i % 2 == 0}


class NodeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="shoal-py-")
        ready = os.path.join(cls.tmp, "ready")
        log = open(os.path.join(cls.tmp, "node.log"), "wb")
        cls.proc = subprocess.Popen(
            [os.environ["SHOAL_NODE_BIN"], "--listen", "tcp://127.0.0.1:0",
             "--metrics", "", "--data-dir", os.path.join(cls.tmp, "data"),
             "--ready-file", ready, "--threads", "4"],
            stdout=log, stderr=log)
        log.close()
        try:
            url = None
            deadline = time.time() + 60
            while time.time() < deadline and url is None:
                if cls.proc.poll() is not None:
                    raise RuntimeError("shoal-node exited")
                if os.path.exists(ready):
                    for line in open(ready):
                        if line.startswith("listen="):
                            url = line.strip()[7:]
                time.sleep(0.01)
            if url is None:
                raise RuntimeError("shoal-node did not start")
            cls.url = url
            cls.c = shoal.Client(url, timeout_ms=5000)
            cls.c.create_collection("items", dim=4, metric="l2",
                                    indexes={"color": "keyword",
                                             "price": "float",
                                             "active": "bool"})
            r = cls.c.upsert("items", [
                {"id": i, "vector": vec(i), "payload": payload(i),
                 "version": 1} for i in range(N)])
            assert r.applied == N
        except BaseException:
            cls.stop()
            raise

    @classmethod
    def stop(cls):
        try:
            if getattr(cls, "c", None) is not None:
                cls.c.close()
        finally:
            cls.proc.kill()
            cls.proc.wait()
            shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def tearDownClass(cls):
        cls.stop()

    # -- collections --

    def test_collections_create_list_info_drop(self):
        c = self.c
        c.create_collection("other", dim=8, metric="cosine", storage="int8",
                            m=8, indexes={"tag": "keyword"})
        with self.assertRaises(shoal.Error) as e:
            c.create_collection("other", dim=8)
        self.assertEqual(e.exception.code, shoal.EEXIST)
        self.assertEqual(e.exception.name, "EEXIST")
        names = {x["name"] for x in c.collections()}
        self.assertTrue({"items", "other"} <= names)
        info = c.collection_info("other")
        self.assertEqual(info["dim"], 8)
        self.assertEqual(info["metric"], "cosine")
        self.assertEqual(info["storage"], "int8")
        self.assertEqual(info["indexes"], {"tag": "keyword"})
        self.assertEqual(c.collection_info("items")["points"] >= N - 10, True)
        c.drop_collection("other")
        with self.assertRaises(shoal.Error) as e:
            c.drop_collection("other")
        self.assertEqual(e.exception.code, shoal.ENOCOLLECTION)

    # -- reads --

    def test_get_returns_stored_points_in_order(self):
        pts = self.c.get("items", [5, 10 ** 9, 7], with_vector=True)
        self.assertEqual([p.id for p in pts], [5, 7])
        self.assertEqual(pts[0].vector, vec(5))
        self.assertEqual(pts[0].payload["color"], "blue")
        self.assertEqual(pts[0].version, 1)
        pts = self.c.get("items", [5], with_payload=False)
        self.assertIsNone(pts[0].payload)
        self.assertIsNone(pts[0].vector)

    def test_search_finds_the_exact_point_first(self):
        hits = self.c.search("items", vec(42), k=5, with_payload=True,
                             with_vector=True)
        self.assertEqual(len(hits), 5)
        self.assertEqual(hits[0].id, 42)
        self.assertEqual(hits[0].distance, 0.0)
        self.assertEqual(hits[0].payload["color"], "red")
        self.assertEqual(hits[0].vector, vec(42))
        self.assertIn(hits.plan, ("graph", "exact_scan"))
        self.assertEqual(hits.nodes_answered, hits.nodes_asked)
        ds = [h.distance for h in hits]
        self.assertEqual(ds, sorted(ds))

    def test_search_batch_answers_each_query_in_order(self):
        res = self.c.search_batch("items", [vec(i) for i in (0, 30, 60)],
                                  k=2, ef=32, timeout_ms=3000)
        self.assertEqual([r[0].id for r in res], [0, 30, 60])
        with self.assertRaises(shoal.Error) as e:
            self.c.search_batch("items", [[1, 2, 3, 4], [1, 2]])
        self.assertEqual(e.exception.code, shoal.EDIM)

    def test_numpy_arrays_when_installed(self):
        try:
            import numpy as np
        except ImportError:
            self.skipTest("numpy is not installed")
        hits = self.c.search("items", np.array(vec(9), dtype=np.float64), k=1)
        self.assertEqual(hits[0].id, 9)
        res = self.c.search_batch("items", np.array([vec(3), vec(4)]), k=1)
        self.assertEqual([r[0].id for r in res], [3, 4])
        # vectors to write, of any float dtype and not contiguous
        m = np.array([[7000.0, 1, 2, 3], [7001.0, 1, 2, 3]])
        self.c.upsert("items", [(7000, m[0]), {"id": 7001,
                                               "vector": m[1, ::1]}])
        self.c.upsert("items", [(7002, np.arange(8, dtype=np.float32)[::2])])
        got = self.c.get("items", [7000, 7001, 7002], with_vector=True)
        self.assertEqual([p.vector for p in got],
                         [[7000.0, 1, 2, 3], [7001.0, 1, 2, 3], [0, 2, 4, 6]])
        self.c.delete("items", ids=[7000, 7001, 7002])

    def test_filter_text_and_builder_agree(self):
        want = sum(1 for i in range(N)
                   if i % 3 == 0 and i * 1.5 < 100 and i % 2 == 0)
        text = 'color = "red" and price < 100 and active'
        built = (shoal.Filter().match("color", "red")
                 .range("price", lt=100).match("active", True))
        self.assertEqual(self.c.count("items", text), want)
        self.assertEqual(self.c.count("items", built), want)
        self.assertEqual(self.c.count("items", shoal.Filter.parse(text)),
                         want)
        # single quotes, as the issue writes it
        self.assertEqual(self.c.count(
            "items", "color = 'red' and price < 100 and active"), want)
        a = self.c.search("items", vec(60), k=N, filter=text)
        b = self.c.search("items", vec(60), k=N, filter=built)
        self.assertEqual([h.id for h in a], [h.id for h in b])
        self.assertEqual(len(a), want)
        self.assertEqual(a[0].id, 60)

    def test_every_builder_matches_its_text(self):
        cases = [
            (shoal.Filter().match_any("color", ["green", "blue"])
             .match_any("stock", [1, 2]),
             'color in ["green", "blue"] and stock in [1, 2]'),
            (shoal.Filter().exists("price")
             .has_id([1, 2, 3], occur=shoal.MUST_NOT),
             "exists(price) and not has_id(1, 2, 3)"),
            (shoal.Filter().match("stock", 3, occur=shoal.SHOULD)
             .nested(shoal.Filter().range("price", gte=30, lte=45),
                     occur=shoal.SHOULD),
             "stock = 3 or (price >= 30 and price <= 45)"),
        ]
        for built, text in cases:
            n = self.c.count("items", text)
            self.assertTrue(0 < n < N, text)
            self.assertEqual(self.c.count("items", built), n, text)

    def test_scroll_pages_through_every_point_once(self):
        seen, cursor, pages = [], None, 0
        while True:
            pts, cursor = self.c.scroll("items", limit=25, cursor=cursor,
                                        filter="stock >= 0")
            seen += [p.id for p in pts]
            pages += 1
            if cursor is None:
                break
        self.assertEqual(len(seen), len(set(seen)))
        self.assertEqual(len(seen), self.c.count("items", "stock >= 0"))
        self.assertGreaterEqual(pages, 4)

    # -- errors --

    def test_errors_raise_with_code_name_and_message(self):
        with self.assertRaises(shoal.Error) as e:
            self.c.search("nope", vec(1))
        self.assertEqual(e.exception.code, shoal.ENOCOLLECTION)
        self.assertTrue(e.exception.message)
        with self.assertRaises(shoal.Error) as e:
            self.c.upsert("items", [(5000, [1.0, 2.0])])
        self.assertEqual(e.exception.code, shoal.EDIM)
        self.assertEqual(e.exception.name, "EDIM")
        with self.assertRaises(shoal.Error) as e:
            self.c.upsert("items", [(5000, [1.0, math.nan, 0, 0])])
        self.assertEqual(e.exception.code, shoal.ENAN)
        self.assertIn("NaN", e.exception.message)
        with self.assertRaises(shoal.Error) as e:
            self.c.count("items", "price <")
        self.assertEqual(e.exception.code, shoal.EINVAL)
        with self.assertRaises(shoal.Error) as e:
            shoal.Filter().range("price")
        self.assertEqual(e.exception.code, shoal.EINVAL)
        with self.assertRaises(shoal.Error) as e:
            shoal.Client("tcp://127.0.0.1:1", timeout_ms=300)
        self.assertEqual(e.exception.code, shoal.ETIMEDOUT)
        self.assertEqual(self.c.get("items", [5000]), [])

    # -- writes --

    def test_string_ids_versions_and_deletes(self):
        c = self.c
        c.create_collection("skus", dim=2, metric="ip")
        try:
            r = c.upsert("skus", [("sku-1", [1, 0], {"t": "a"}, 3),
                                  ("sku-2", [0, 1]),
                                  {"id": 1, "vector": [0.7, 0.7]}])
            self.assertEqual(r.applied, 3)
            hits = c.search("skus", [1, 0], k=3, with_vector=True)
            self.assertEqual(hits[0].id, "sku-1")
            self.assertEqual(hits[0].version, 3)
            self.assertEqual([p.id for p in c.get("skus", ["sku-2", "1"])],
                             ["sku-2"])
            r = c.upsert("skus", [("sku-1", [1, 0], None, 2)])
            self.assertEqual(r.statuses[0][1], shoal.ESTALE)
            r = c.delete("skus", ids=["sku-1", "nope"], version=3)
            self.assertEqual([s[1] for s in r.statuses],
                             [shoal.OK, shoal.ENOTFOUND])
            self.assertEqual(c.count("skus"), 2)
            r = c.delete("skus", filter="has_id(1)", version=1)
            self.assertEqual(r.applied, 1)
            self.assertEqual(c.count("skus"), 1)
        finally:
            c.drop_collection("skus")

    def test_threads_share_one_client(self):
        errors = []

        def work(t):
            try:
                for r in range(20):
                    i = 100000 + t * 1000 + r
                    v = [float(i), 1.0, 2.0, 3.0]
                    self.c.upsert("items", [(i, v)])
                    # exact: the vectors lie on a line (x, 1, 2, 3), on
                    # which a graph search is not guaranteed to reach the
                    # newest point; this test is about sharing a client
                    hits = self.c.search("items", v, k=1, exact=True)
                    if hits[0].id != i:
                        errors.append((t, r, hits[0].id))
                    try:
                        self.c.count("nope")
                    except shoal.Error as e:
                        if e.code != shoal.ENOCOLLECTION or \
                                "nope" not in e.message:
                            errors.append(e)
            except Exception as e:  # reported below
                errors.append(e)

        ths = [threading.Thread(target=work, args=(t,)) for t in range(6)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        self.assertEqual(errors, [])
        ids = [100000 + t * 1000 + r for t in range(6) for r in range(20)]
        self.assertEqual(len(self.c.get("items", ids)), 120)
        self.c.delete("items", ids=ids)


if __name__ == "__main__":
    unittest.main()
