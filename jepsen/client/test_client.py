"""shoal-jepsen-client against one real shoal-node and shoal-router on free
loopback ports (port 0 + --ready-file): every operation answers one JSON
line with the type the checkers rely on (ok / fail / info), a malformed
line answers fail and the client goes on, a write with the router dead
answers info (or fail) within its deadline plus a margin and a read answers
fail, the client reconnects to a restarted router by itself, and EOF exits
0.

Run by meson with SHOAL_NODE_BIN, SHOAL_ROUTER_BIN and
SHOAL_JEPSEN_CLIENT_BIN set. Every process it starts is stopped, also on
failure: by tearDownClass, by an atexit hook (a SIGTERM from meson's timeout
exits through it), and by the kernel (PR_SET_PDEATHSIG) should this
interpreter be killed outright."""

import atexit
import ctypes
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

DIM = 8
COLLECTION = "jc"
TIMEOUT_MS = 1000   # the client's --timeout-ms
MARGIN_MS = 100     # the client's --margin-ms
SLACK_S = 0.5       # what this test allows on top (pipes, a loaded CI box)
BIG = 2 ** 53 - 1   # the largest key and value the client takes exactly

_procs = []


def _stop_all():
    for p in _procs:
        if p.poll() is None:
            p.kill()
            p.wait()


atexit.register(_stop_all)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))

_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent():
    _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def spawn(argv, **kw):
    p = subprocess.Popen(argv, preexec_fn=_die_with_parent, **kw)
    _procs.append(p)
    return p


class Server:
    """A shoal-node or shoal-router on a free port (port 0 + --ready-file),
    or on a given listen URL (a restart on the same address)."""

    def __init__(self, binary, data_dir, extra=(), listen="tcp://127.0.0.1:0"):
        self.binary, self.data_dir, self.extra = binary, data_dir, list(extra)
        self.start(listen)

    def start(self, listen):
        ready = self.data_dir + ".ready"
        if os.path.exists(ready):
            os.unlink(ready)
        with open(self.data_dir + ".log", "ab") as log:
            self.proc = spawn(
                [self.binary, "--listen", listen, "--metrics", "",
                 "--data-dir", self.data_dir, "--ready-file", ready]
                + self.extra, stdout=log, stderr=log)
        self.url = None
        deadline = time.time() + 60
        while time.time() < deadline and self.url is None:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited; see %s.log"
                                   % (self.binary, self.data_dir))
            if os.path.exists(ready):
                with open(ready) as f:
                    for line in f:
                        if line.startswith("listen="):
                            self.url = line.strip()[len("listen="):]
            time.sleep(0.01)
        if self.url is None:
            self.kill()
            raise RuntimeError("%s did not start" % self.binary)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Client:
    """shoal-jepsen-client with a thread reading its completions."""

    def __init__(self, router_url):
        self.proc = spawn(
            [os.environ["SHOAL_JEPSEN_CLIENT_BIN"], "--router", router_url,
             "--collection", COLLECTION, "--dim", str(DIM),
             "--timeout-ms", str(TIMEOUT_MS), "--margin-ms", str(MARGIN_MS)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            bufsize=1)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        with self.proc.stdout:
            for line in self.proc.stdout:
                self.lines.put(line)
        self.lines.put(None)

    def send_raw(self, text):
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def recv(self, timeout=15):
        line = self.lines.get(timeout=timeout)
        if line is None:
            raise AssertionError("the client closed its stdout")
        return json.loads(line)

    def op(self, **fields):
        """Sends one operation; returns (completion, seconds it took)."""
        t0 = time.monotonic()
        self.send_raw(json.dumps(fields))
        c = self.recv()
        return c, time.monotonic() - t0


class JepsenClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="shoal-jc-")
        try:
            cls.node = Server(os.environ["SHOAL_NODE_BIN"],
                              os.path.join(cls.tmp, "node"))
            cls.router = Server(os.environ["SHOAL_ROUTER_BIN"],
                                os.path.join(cls.tmp, "router"),
                                ["--nodes", cls.node.url])
            cls.client = Client(cls.router.url)
            cls.next_id = 0
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        _stop_all()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def op(self, f, **fields):
        type(self).next_id += 1
        c, took = self.client.op(id=self.next_id, f=f, **fields)
        self.assertEqual(c["id"], self.next_id, c)
        self.assertEqual(c["f"], f, c)
        return c, took

    def ok(self, f, **fields):
        c, _ = self.op(f, **fields)
        self.assertEqual(c["type"], "ok", c)
        return c

    def test_01_create_then_create_again_is_ok(self):
        self.assertNotIn("exists", self.ok("create"))
        self.assertTrue(self.ok("create")["exists"])

    def test_02_upsert_then_get_returns_value_and_version(self):
        for k in range(1, 21):
            c = self.ok("upsert", key=k, value=10 * k, version=5)
            self.assertNotIn("stale", c)
        c = self.ok("get", key=3)
        self.assertEqual((c["value"], c["version"]), (30, 5))
        # The extremes travel exactly (no float on the way).
        self.ok("upsert", key=BIG, value=-BIG, version=BIG)
        c = self.ok("get", key=BIG)
        self.assertEqual((c["value"], c["version"]), (-BIG, BIG))
        self.assertIsInstance(c["value"], int)

    def test_03_lower_version_upsert_is_ok_and_stale(self):
        c = self.ok("upsert", key=3, value=999, version=4)
        self.assertTrue(c["stale"], c)
        c = self.ok("get", key=3)
        self.assertEqual((c["value"], c["version"]), (30, 5))
        # Equal replaces (not stale).
        self.assertNotIn("stale", self.ok("upsert", key=3, value=31,
                                          version=5))
        self.assertEqual(self.ok("get", key=3)["value"], 31)

    def test_04_deleted_point_reads_null(self):
        self.assertNotIn("absent", self.ok("delete", key=4, version=6))
        c = self.ok("get", key=4)
        self.assertIsNone(c["value"])
        self.assertIsNone(c["version"])
        # A delete of a point never written: ok, absent.
        self.assertTrue(self.ok("delete", key=4000, version=1)["absent"])
        # The tombstone's version keeps a late, older upsert dead.
        self.assertTrue(self.ok("upsert", key=4, value=1, version=5)["stale"])
        self.assertIsNone(self.ok("get", key=4)["value"])

    def test_05_search_for_own_vector_returns_key_first_complete(self):
        for k in (7, 13, BIG):
            c = self.ok("search", key=k, exact=True)
            self.assertEqual(c["value"][0], k, c)
            self.assertTrue(c["complete"], c)
            self.assertLessEqual(len(c["value"]), 10)
        c = self.ok("search", key=9, k=3, deadline_ms=2000)
        self.assertEqual(c["value"][0], 9, c)
        self.assertEqual(len(c["value"]), 3)
        # A deleted point is never returned.
        c = self.ok("search", key=4, k=30, exact=True)
        self.assertNotIn(4, c["value"])

    def test_06_read_all_lists_every_live_key(self):
        c = self.ok("read_all")
        want = set(range(1, 21)) - {4} | {BIG}
        self.assertEqual(sorted(c["value"]), sorted(want))

    def test_07_malformed_lines_fail_and_the_client_goes_on(self):
        cases = [
            ("not json", None),
            ("[1, 2]", None),
            ('{"id": 500}', 500),
            ('{"id": 501, "f": "nope"}', 501),
            ('{"id": 502, "f": "upsert", "key": -1, "value": 1, '
             '"version": 1}', 502),
            ('{"id": 503, "f": "get", "key": 1.5}', 503),
            ('{"id": 504, "f": "upsert", "key": 1, "version": 1}', 504),
            ('{"id": 505, "f": "search", "key": 1, "exact": "yes"}', 505),
            ('{"id": 506, "f": "get", "key": 1, "deadline_ms": 0}', 506),
            ('{"id": 507, "f": "get", "key": 18014398509481984}', 507),
            ('{"id": {"a": 1}, "f": "get", "key": 1}', None),
            ('{"id": 508, "f": "get", "key": 1' + "]" * 5000, None),
            ("\x00\x01\x02", None),
        ]
        for text, want_id in cases:
            self.client.send_raw(text)
            c = self.client.recv()
            self.assertEqual(c["type"], "fail", (text, c))
            self.assertEqual(c["id"], want_id, (text, c))
            self.assertTrue(c["error"], c)
        self.client.send_raw("")  # a blank line is no operation
        self.assertEqual(self.ok("get", key=1)["value"], 10)

    def test_08_router_dead_write_is_info_within_deadline_read_fails(self):
        type(self).router_url = self.router.url
        self.router.kill()
        bound = 0.5 + MARGIN_MS / 1000 + SLACK_S
        # A deadline below the SDK's timeout: the client's watchdog.
        c, took = self.op("upsert", key=50, value=1, version=1,
                          deadline_ms=500)
        self.assertIn(c["type"], ("info", "fail"), c)
        self.assertLess(took, bound, c)
        c, took = self.op("delete", key=1, version=9, deadline_ms=500)
        self.assertIn(c["type"], ("info", "fail"), c)
        self.assertLess(took, bound, c)
        # No deadline: the SDK's own timeout (--timeout-ms).
        c, took = self.op("upsert", key=51, value=1, version=1)
        self.assertIn(c["type"], ("info", "fail"), c)
        self.assertIn(c["code"], ("ETIMEDOUT", "EIO"), c)
        self.assertLess(took, TIMEOUT_MS / 1000 + MARGIN_MS / 1000 + SLACK_S)
        for f, extra in (("get", {"key": 1}),
                         ("search", {"key": 1, "exact": True}),
                         ("read_all", {})):
            c, took = self.op(f, deadline_ms=500, **extra)
            self.assertEqual(c["type"], "fail", c)
            self.assertLess(took, bound, c)

    def test_09_client_reconnects_to_a_restarted_router(self):
        self.router.start(self.router_url)
        deadline = time.time() + 20
        while True:
            c, _ = self.op("upsert", key=52, value=5, version=1,
                           deadline_ms=500)
            if c["type"] == "ok" or time.time() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(c["type"], "ok", c)
        self.assertEqual(self.ok("get", key=52)["value"], 5)

    def test_10_eof_exits_zero(self):
        self.client.proc.stdin.close()
        self.assertEqual(self.client.proc.wait(30), 0)
        self.assertIsNone(self.client.lines.get(timeout=5))


if __name__ == "__main__":
    unittest.main()
