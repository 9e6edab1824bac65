#!/usr/bin/env python3
"""shoal's fault-injection harness: runs a cluster, a workload and a nemesis
inside the namespaces jepsen/run.sh made, records the history, heals, reads
back, and checks (jepsen/checker/checker.py). Standard library only.

A run: start 3 nodes (127.0.0.11-13) and a router (127.0.0.10), start W
client processes (jepsen/client/shoal-jepsen-client), have them issue the
workload's operations while the nemesis starts and stops faults on a seeded
schedule, then heal every fault, wait (bounded) until the cluster answers
again, do the final reads, and hand the history to the checker.

Everything random comes from one seeded random.Random, so a run's schedule
(which operations, which faults, when) is replayed from its seed; the
timing of the processes themselves is not.
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BUILD = os.environ.get("SHOAL_BUILD_DIR", os.path.join(ROOT, "build"))
PY = "/usr/bin/python3"

WORKLOADS = ["set", "register", "delete", "search"]
NEMESES = ["none", "kill-node", "kill-router", "kill-all", "pause",
           "partition", "isolate", "loss", "clock", "fsync", "write-errors",
           "disk-full",
           "moves", "wipe"]
# Nemeses that prove the checkers see what they must: a run under them must
# be reported invalid (loss), and counts as passed when it is. Only for the
# workloads whose checker looks for lost writes: the delete workload deletes
# each point once it is acknowledged, so a wipe can only lose what it was
# about to delete, and its run must be valid (nothing comes back).
CONTROLS = {"wipe"}
LOSS_CHECKED = {"set", "register", "search"}

# The libfiu calls of the write-errors nemesis (fiu-utils' function list):
# RocksDB writes its WAL and tables with these; writev/sendmsg, which the
# node's sockets use, are left alone so that the fault stays on the disk.
WRITE_CALLS = ("write", "pwrite")
# each fails with EIO, or writes short ("/reduce")
WRITE_POINTS = ["posix/io/rw/%s%s" % (c, v) for c in WRITE_CALLS
                for v in ("", "/reduce")]

ROUTER_IP = "127.0.0.10"
NODE_IPS = ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
ROUTER_URL = "tcp://%s:7000" % ROUTER_IP
COLL = "jepsen"
DIM = 8
OP_DEADLINE_MS = 2000
FAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"

# The CI sample: (workload, nemesis, seconds); a few minutes in all.
CI_SAMPLE = [("set", "kill-node", 20), ("register", "partition", 20),
             ("delete", "pause", 20), ("search", "moves", 25),
             ("register", "kill-router", 15), ("set", "wipe", 15),
             # the regression of a bug it found: a full disk made a node
             # acknowledge writes it never stored
             ("set", "disk-full", 15)]


def now_ns():
    return time.monotonic_ns()


def log(msg):
    print("jepsen: " + msg, file=sys.stderr, flush=True)


def http_get(addr, path, timeout=2):
    """(status, body text) of a GET, or (None, None) without an answer."""
    try:
        with urllib.request.urlopen("http://%s%s" % (addr, path),
                                    timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, None
    except Exception:
        return None, None


def http_status(addr, path="/healthz"):
    return http_get(addr, path)[0]


# ---- Processes ---------------------------------------------------------------

class Proc:
    """One shoal process, started again with the same arguments after a
    kill (same address, same data)."""

    def __init__(self, name, argv, run_dir, env=None, metrics=None):
        self.name, self.argv, self.env = name, argv, env
        self.metrics = metrics
        self.ready = os.path.join(run_dir, name + ".ready")
        self.logpath = os.path.join(run_dir, "logs", name + ".log")
        self.p = None
        self.paused = False

    def start(self, wait=True):
        if os.path.exists(self.ready):
            os.unlink(self.ready)
        logf = open(self.logpath, "ab")
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        self.p = subprocess.Popen(self.argv + ["--ready-file", self.ready],
                                  stdout=logf, stderr=logf,
                                  stdin=subprocess.DEVNULL, env=env)
        logf.close()
        self.paused = False
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout=60):
        end = time.time() + timeout
        while time.time() < end:
            if os.path.exists(self.ready):
                return True
            if self.p.poll() is not None:
                raise RuntimeError("%s exited while starting (%s)" %
                                   (self.name, self.logpath))
            time.sleep(0.05)
        raise RuntimeError("%s did not start within %d s" %
                           (self.name, timeout))

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def signal(self, sig):
        if self.alive():
            try:
                os.kill(self.p.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self):
        if self.paused:
            self.signal(signal.SIGCONT)
        self.signal(signal.SIGKILL)
        if self.p is not None:
            self.p.wait()
        self.paused = False

    def stop(self):
        """SIGTERM, and 15 s to exit (a stop drains for 5 s at most).
        Returns False for a process that did not: its threads' stacks go
        to logs/NAME.stop-stacks, then it is killed."""
        if not self.alive():
            return True
        if self.paused:
            self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.p.wait(timeout=15)
            return True
        except subprocess.TimeoutExpired:
            log("%s did not stop within 15 s of SIGTERM" % self.name)
            self.stacks(self.logpath[:-len(".log")] + ".stop-stacks")
            self.kill()
            return False

    def stacks(self, path):
        """Every thread's stack, by gdb (where installed), into path."""
        if not shutil.which("gdb") or not self.alive():
            return
        try:
            with open(path, "w") as f:
                subprocess.run(["gdb", "-batch", "-p", str(self.p.pid),
                                "-ex", "thread apply all bt 30"],
                               stdout=f, stderr=subprocess.STDOUT,
                               timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            pass

    def pause(self):
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        self.signal(signal.SIGCONT)
        self.paused = False


class Cluster:
    """3 nodes and a router on their own loopback addresses."""

    def __init__(self, run_dir, nemesis):
        self.dir = run_dir
        os.makedirs(os.path.join(run_dir, "logs"), exist_ok=True)
        self.nemesis = nemesis
        self.nodes = []
        for i, ip in enumerate(NODE_IPS):
            data = os.path.join(run_dir, "node%d" % (i + 1))
            os.makedirs(data, exist_ok=True)
            if nemesis == "disk-full" and i == 0:
                # a small disk of its own, filled by the nemesis
                subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m",
                                "tmpfs", data], check=True)
            argv = [os.path.join(BUILD, "node/shoal-node"),
                    "--listen", "tcp://%s:7100" % ip,
                    "--metrics", "%s:9100" % ip,
                    "--data-dir", os.path.join(data, "db"),
                    "--fsync", "always", "--threads", "2"]
            env = self.clock_env("node%d" % (i + 1))
            if nemesis in ("fsync", "write-errors"):
                argv = ["fiu-run", "-x"] + argv
            self.nodes.append(Proc("node%d" % (i + 1), argv, run_dir, env,
                                   "%s:9100" % ip))
        rdir = os.path.join(run_dir, "router")
        self.router = Proc("router", [
            os.path.join(BUILD, "router/shoal-router"),
            "--listen", ROUTER_URL, "--metrics", "%s:9000" % ROUTER_IP,
            "--data-dir", rdir,
            "--nodes", ",".join("tcp://%s:7100" % ip for ip in NODE_IPS),
            "--read-timeout-ms", "1000", "--write-timeout-ms", "1500",
            "--threads", "8"], run_dir, self.clock_env("router"),
            "%s:9000" % ROUTER_IP)

    def clock_env(self, name):
        """Processes of the clock nemesis run under libfaketime with a
        time-stamp file of their own, re-read at every call: writing an
        offset there moves that process's wall clock at once."""
        if self.nemesis != "clock":
            return None
        path = os.path.join(self.dir, name + ".faketime")
        with open(path, "w") as f:
            f.write("+0\n")
        return {"LD_PRELOAD": FAKETIME, "FAKETIME_TIMESTAMP_FILE": path,
                "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}

    def procs(self):
        return self.nodes + [self.router]

    def by_name(self, name):
        for p in self.procs():
            if p.name == name:
                return p
        raise KeyError(name)

    def start(self):
        for n in self.nodes:
            n.start(wait=False)
        for n in self.nodes:
            n.wait_ready()
        self.router.start()

    def stop(self):
        """Stops every process; returns the names of those that did not
        stop on SIGTERM."""
        stuck = [p.name for p in [self.router] + self.nodes if not p.stop()]
        if self.nemesis == "disk-full":
            subprocess.run(["umount", "-l",
                            os.path.join(self.dir, "node1")],
                           stderr=subprocess.DEVNULL)
        return stuck

    def answer_timeouts(self):
        """{node: answers given up on}, from the nodes' logs (the line of
        common/serve/server.c)."""
        out = {}
        for n in self.nodes:
            try:
                with open(n.logpath, errors="replace") as f:
                    k = sum("a peer took no answer" in line for line in f)
            except OSError:
                continue
            if k:
                out[n.name] = k
        return out

    def healthy(self):
        return all(p.alive() and not p.paused and
                   http_status(p.metrics) == 200 for p in self.procs())

    def diagnose(self, why):
        """What a stuck cluster looks like, for a run whose final reads did
        not all succeed: every live process's threads (gdb, where
        installed) and the namespace's TCP sockets, into logs/."""
        logs = os.path.join(self.dir, "logs")
        log("diagnosing (%s): stacks and sockets into %s" % (why, logs))
        try:
            with open(os.path.join(logs, "sockets.txt"), "w") as f:
                subprocess.run(["ss", "-tanoi"], stdout=f,
                               stderr=subprocess.STDOUT, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            pass
        for p in self.procs():
            p.stacks(os.path.join(logs, p.name + ".stacks"))


class Watch:
    """Samples the router's shoal_router_node_reconnects_total every 0.5 s
    and writes each increase to watch.jsonl ({"time", "type": "reconnect",
    "nemesis": "watch", "target": node, "count"}): a connection the router
    replaced because its node answered nothing. The checker tells those a
    fault explains from those it does not (a node that went silent on its
    own, as in bug 5). A restarted router counts from 0 again."""

    PERIOD_S = 0.5

    def __init__(self, cluster, path):
        self.c = cluster
        self.f = open(path, "w")
        self.last = {}
        self.done = threading.Event()
        self.t = threading.Thread(target=self.loop, daemon=True)

    def start(self):
        self.t.start()

    def sample(self):
        _, body = http_get(self.c.router.metrics, "/metrics", timeout=1)
        prefix = "shoal_router_node_reconnects_total{node=\""
        for line in (body or "").splitlines():
            if not line.startswith(prefix):
                continue
            node = "node" + line[len(prefix):].split("\"", 1)[0]
            try:
                n = int(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                continue
            prev = self.last.get(node, 0)
            new = n - prev if n >= prev else n  # a restart counts from 0
            self.last[node] = n
            if new > 0:
                self.f.write(json.dumps({"time": now_ns(),
                                         "type": "reconnect",
                                         "nemesis": "watch", "target": node,
                                         "count": new}) + "\n")
                self.f.flush()
                log("router reconnected %s (%d)" % (node, new))

    def loop(self):
        while not self.done.wait(self.PERIOD_S):
            self.sample()

    def stop(self):
        self.done.set()
        self.t.join(timeout=10)
        self.sample()  # what the last period saw
        self.f.close()


# ---- Clients and the history ------------------------------------------------

class History:
    """The history, written as it happens (one JSON object a line)."""

    def __init__(self, path):
        self.f = open(path, "w")
        self.lock = threading.Lock()

    def add(self, ev):
        ev["time"] = now_ns()
        with self.lock:
            self.f.write(json.dumps(ev) + "\n")
            self.f.flush()
        return ev

    def close(self):
        self.f.close()


class Client:
    """One shoal-jepsen-client process: one operation at a time."""

    def __init__(self, run_dir, name):
        self.name = name
        self.logpath = os.path.join(run_dir, "logs", name + ".log")
        self.p = None
        self.n = 0
        self.start()

    def start(self):
        logf = open(self.logpath, "ab")
        self.p = subprocess.Popen(
            [os.path.join(BUILD, "jepsen/client/shoal-jepsen-client"),
             "--router", ROUTER_URL, "--collection", COLL, "--dim",
             str(DIM), "--timeout-ms", str(OP_DEADLINE_MS)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logf,
            text=True, bufsize=1)
        logf.close()

    def call(self, op):
        """Sends op, returns its completion. A client that does not answer
        within the deadline and a margin is killed and replaced, and the
        operation's outcome is unknown (info)."""
        self.n += 1
        op = dict(op, id=self.n)
        deadline = op.get("deadline_ms", OP_DEADLINE_MS) / 1000.0 + 5
        result = {}

        def read():
            line = self.p.stdout.readline()
            if line:
                try:
                    result["r"] = json.loads(line)
                except ValueError:
                    pass

        try:
            self.p.stdin.write(json.dumps(op) + "\n")
            self.p.stdin.flush()
        except (BrokenPipeError, OSError):
            self.restart()
            return {"type": "info", "error": "client died"}
        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(deadline)
        r = result.get("r")
        if r is None or r.get("id") != self.n:
            self.restart()
            return {"type": "info", "error": "client did not answer in time"}
        return r

    def restart(self):
        try:
            self.p.kill()
            self.p.wait(timeout=5)
        except Exception:
            pass
        self.start()

    def close(self):
        try:
            self.p.stdin.close()
            self.p.wait(timeout=10)
        except Exception:
            self.p.kill()


# ---- Workloads --------------------------------------------------------------

class Counter:
    def __init__(self, start=1):
        self.v = start
        self.lock = threading.Lock()

    def next(self):
        with self.lock:
            self.v += 1
            return self.v


class Workload:
    """Generates operations; one instance shared by the workers (thread
    safe). Keys of different runs never meet: the cluster is new."""

    name = "?"

    def __init__(self, rng):
        self.rng = rng
        self.lock = threading.Lock()
        self.versions = Counter()
        self.values = Counter(1000)
        self.keys = set()  # every key used

    def pick(self, seq):
        with self.lock:
            return self.rng.choice(seq)

    def rand(self):
        with self.lock:
            return self.rng.random()

    def next(self, worker):
        raise NotImplementedError

    def final(self):
        """Operations of the final read, after healing."""
        return [{"f": "get", "key": k} for k in sorted(self.keys)]


class SetWorkload(Workload):
    """Unique keys upserted concurrently; a final read of everything."""

    name = "set"

    def __init__(self, rng):
        super().__init__(rng)
        self.next_key = Counter(0)

    def next(self, worker):
        k = self.next_key.next()
        with self.lock:
            self.keys.add(k)
        return {"f": "upsert", "key": k, "value": k, "version": 1}

    def final(self):
        return [{"f": "read_all", "deadline_ms": 30000}]


class RegisterWorkload(Workload):
    """A few keys at a time, rotated so that each key's history stays
    short: upserts of unique values with rising versions, and gets."""

    name = "register"
    ACTIVE, OPS_PER_KEY = 4, 40

    def __init__(self, rng):
        super().__init__(rng)
        self.next_key = Counter(0)
        self.active = [self.next_key.next() for _ in range(self.ACTIVE)]
        self.ops = {k: 0 for k in self.active}
        self.keys.update(self.active)

    def next(self, worker):
        with self.lock:
            i = self.rng.randrange(len(self.active))
            k = self.active[i]
            self.ops[k] += 1
            if self.ops[k] >= self.OPS_PER_KEY:
                nk = self.next_key.next()
                self.active[i] = nk
                self.ops[nk] = 0
                self.keys.add(nk)
            write = self.rng.random() < 0.5
        if write:
            return {"f": "upsert", "key": k, "value": self.values.next(),
                    "version": self.versions.next()}
        return {"f": "get", "key": k}


class DeleteWorkload(Workload):
    """Each worker: upsert a fresh key, delete it once acknowledged, then
    read it (and others' recently deleted keys) a few times."""

    name = "delete"

    def __init__(self, rng):
        super().__init__(rng)
        self.next_key = Counter(0)
        self.state = {}  # worker -> [key, step]
        self.recent = []

    def next(self, worker):
        st = self.state.get(worker)
        if st is None or st[1] >= 6:
            k = self.next_key.next()
            with self.lock:
                self.keys.add(k)
            self.state[worker] = [k, 1]
            return {"f": "upsert", "key": k, "value": self.values.next(),
                    "version": self.versions.next()}
        k, step = st
        st[1] += 1
        if step == 1:
            with self.lock:
                self.recent.append(k)
                self.recent = self.recent[-32:]
            return {"f": "delete", "key": k, "version": self.versions.next()}
        if self.rand() < 0.5 and self.recent:
            k = self.pick(self.recent)
        if self.rand() < 0.3:
            return {"f": "search", "key": k, "exact": True, "k": 5}
        return {"f": "get", "key": k}

    def on_result(self, worker, op, res):
        # a refused write ends the key's life early
        if op["f"] == "upsert" and res.get("type") != "ok":
            self.state[worker] = [op["key"], 99]


class SearchWorkload(Workload):
    """Upserts and deletes of a pool of keys, and searches probing them
    with their own vectors (exact and graph)."""

    name = "search"
    POOL = 400

    def next(self, worker):
        r = self.rand()
        with self.lock:
            k = self.rng.randrange(self.POOL)
        if r < 0.35:
            with self.lock:
                self.keys.add(k)
            return {"f": "upsert", "key": k, "value": self.values.next(),
                    "version": self.versions.next()}
        if r < 0.45:
            return {"f": "delete", "key": k, "version": self.versions.next()}
        return {"f": "search", "key": k, "exact": self.rand() < 0.6,
                "k": 10, "deadline_ms": 1500}

    def final(self):
        return [{"f": "search", "key": k, "exact": True, "k": 10,
                 "deadline_ms": 5000} for k in sorted(self.keys)]


WORKLOAD_CLASSES = {"set": SetWorkload, "register": RegisterWorkload,
                    "delete": DeleteWorkload, "search": SearchWorkload}


# ---- Nemeses -----------------------------------------------------------------

def iptables(*args):
    subprocess.run(["iptables", "-w"] + list(args), check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def fiu_ctrl(proc, cmds):
    """fiu-ctrl's commands to a live process run under fiu-run. It talks
    through the process's FIFO and would wait for ever on a dead one (a
    node that died of an injected fault): skip those, and bound the rest."""
    if not proc.alive():
        return
    try:
        subprocess.run(["fiu-ctrl"] + cmds + [str(proc.p.pid)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=5, check=False)
    except subprocess.TimeoutExpired:
        log("fiu-ctrl: %s did not answer within 5 s" % proc.name)


class Nemesis:
    """Starts and stops one kind of fault on a seeded schedule; heal()
    undoes every fault, whatever its state."""

    def __init__(self, kind, cluster, rng, events, run_dir, setup=None):
        self.kind, self.c, self.rng = kind, cluster, rng
        self.events, self.dir = events, run_dir
        self.setup = setup  # re-creates the collection (after a wipe)
        self.active = None  # what the current fault holds
        self.failed_nodes = set()  # restart at heal (fsync, disk full)

    def record(self, typ, **kw):
        ev = {"time": now_ns(), "type": typ, "nemesis": self.kind}
        ev.update(kw)
        self.events.write(json.dumps(ev) + "\n")
        self.events.flush()
        log("nemesis %s %s %s" % (self.kind, typ,
                                  json.dumps(kw) if kw else ""))

    def node(self):
        return self.rng.choice(self.c.nodes)

    def start(self):
        k = self.kind
        if k == "kill-node":
            n = self.node()
            n.kill()
            self.active = n
            self.record("start", target=n.name)
        elif k == "kill-router":
            self.c.router.kill()
            self.active = self.c.router
            self.record("start", target="router")
        elif k == "kill-all":
            for p in self.c.procs():
                p.kill()
            self.active = "all"
            self.record("start", target="all")
        elif k == "pause":
            p = self.rng.choice(self.c.procs())
            p.pause()
            self.active = p
            self.record("start", target=p.name)
        elif k in ("partition", "isolate"):
            # On one loopback every connection's source address is
            # 127.0.0.1 whoever makes it, so a fault is named by the
            # node's side: "partition" cuts its data port (the router's
            # and the other nodes' requests, and its answers), "isolate"
            # everything to and from its address (health checks too).
            i = self.rng.randrange(len(NODE_IPS))
            ip = NODE_IPS[i]
            if k == "partition":
                rules = [("-p", "tcp", "-d", ip, "--dport", "7100"),
                         ("-p", "tcp", "-s", ip, "--sport", "7100")]
            else:
                rules = [("-d", ip), ("-s", ip)]
            for r in rules:
                iptables("-I", "INPUT", *r, "-j", "DROP")
            self.active = rules
            self.record("start", target="node%d" % (i + 1))
        elif k == "loss":
            p = round(self.rng.uniform(0.1, 0.3), 2)
            rule = ("-m", "statistic", "--mode", "random", "--probability",
                    str(p))
            iptables("-I", "INPUT", *rule, "-j", "DROP")
            self.active = rule
            self.record("start", probability=p)
        elif k == "clock":
            p = self.rng.choice(self.c.procs())
            off = self.rng.choice([-1, 1]) * self.rng.randint(30, 600)
            self.set_clock(p.name, "%+ds" % off)
            self.active = p
            self.record("start", target=p.name, offset_s=off)
        elif k == "fsync":
            n = self.node()
            fiu_ctrl(n, ["-c", "enable_random name=posix/io/sync/*,"
                         "probability=0.5"])
            self.active = n
            self.failed_nodes.add(n.name)
            self.record("start", target=n.name)
        elif k == "write-errors":
            # EIO from write/pwrite, or a short write, now and then: in
            # RocksDB's WAL and table files (and the node's log lines)
            n = self.node()
            fiu_ctrl(n, [x for pt in WRITE_POINTS for x in (
                "-c", "enable_random name=%s,probability=0.05" % pt)])
            self.active = n
            self.failed_nodes.add(n.name)
            self.record("start", target=n.name)
        elif k == "disk-full":
            n = self.c.nodes[0]
            filler = os.path.join(self.c.dir, "node1", "filler")
            subprocess.run(["dd", "if=/dev/zero", "of=" + filler, "bs=1M",
                            "count=64"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            self.active = filler
            self.failed_nodes.add(n.name)
            self.record("start", target=n.name)
        elif k == "moves":
            self.active = self.start_move()
        elif k == "wipe":
            n = self.c.nodes[0]
            n.kill()
            shutil.rmtree(os.path.join(self.c.dir, "node1", "db"),
                          ignore_errors=True)
            self.active = n
            self.record("start", target=n.name)

    def stop(self):
        k, a = self.kind, self.active
        if a is None:
            return
        if k in ("kill-node", "kill-router", "wipe"):
            a.start()
            if k == "wipe" and self.setup:
                self.setup()  # an empty node: give it the collection
            self.record("stop", target=a.name)
        elif k == "kill-all":
            self.c.start()
            self.record("stop", target="all")
        elif k == "pause":
            a.resume()
            self.record("stop", target=a.name)
        elif k in ("partition", "isolate"):
            for r in a:
                iptables("-D", "INPUT", *r, "-j", "DROP")
            self.record("stop")
        elif k == "loss":
            iptables("-D", "INPUT", *a, "-j", "DROP")
            self.record("stop")
        elif k == "clock":
            self.set_clock(a.name, "+0")
            self.record("stop", target=a.name)
        elif k in ("fsync", "write-errors"):
            if k == "fsync":
                off = ["-c", "disable name=posix/io/sync/*"]
            else:
                off = [x for pt in WRITE_POINTS
                       for x in ("-c", "disable name=%s" % pt)]
            fiu_ctrl(a, off)
            # a commit that failed leaves its partition refusing
            # everything until the node reopens its store
            a.kill()
            a.start()
            self.record("stop", target=a.name)
        elif k == "disk-full":
            try:
                os.unlink(a)
            except OSError:
                pass
            n = self.c.nodes[0]
            n.kill()
            n.start()
            self.record("stop", target=n.name)
        elif k == "moves":
            self.finish_move(a)
        self.active = None

    def set_clock(self, name, spec):
        with open(os.path.join(self.dir, name + ".faketime"), "w") as f:
            f.write(spec + "\n")

    def shoalctl(self, *args, background=False):
        argv = [os.path.join(BUILD, "ctl/shoalctl"), "--router", ROUTER_URL,
                "--timeout", "20000"] + list(args)
        logf = open(os.path.join(self.dir, "logs", "shoalctl.log"), "ab")
        p = subprocess.Popen(argv, stdout=logf, stderr=logf)
        logf.close()
        if background:
            return p
        try:
            return p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            return -1

    def start_move(self):
        first = self.rng.randrange(0, 16384 - 1024)
        last = first + self.rng.randrange(64, 1024)
        to = self.rng.randrange(1, len(NODE_IPS) + 1)
        p = self.shoalctl("move-slots", "%d-%d" % (first, last), "--to",
                          str(to), "--grace-ms", "300", background=True)
        self.record("start", slots="%d-%d" % (first, last), to=to)
        return p

    def finish_move(self, p):
        # killed half way, or left to finish; then resumed or aborted
        how = self.rng.choice(["kill+abort", "kill+resume", "wait"])
        if how != "wait" and p.poll() is None:
            p.kill()
            p.wait()
        else:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        rc = 0
        if how == "kill+abort":
            rc = self.shoalctl("abort")
            if rc != 0:  # switched already: it can only be finished
                rc = self.shoalctl("resume")
        elif how == "kill+resume":
            rc = self.shoalctl("resume")
        self.record("stop", how=how, rc=rc)

    def heal(self):
        """Undoes everything, whatever state a fault was left in."""
        if self.active is not None:
            self.stop()
        iptables("-F", "INPUT")
        for p in self.c.procs():
            if p.paused:
                p.resume()
            if self.kind == "clock":
                self.set_clock(p.name, "+0")
        for p in self.c.procs():
            if not p.alive():
                p.start()
        for name in self.failed_nodes:
            p = self.c.by_name(name)
            p.kill()
            p.start()
        self.failed_nodes.clear()
        if self.kind == "moves":
            self.shoalctl("resume")


# ---- A run -------------------------------------------------------------------

def run_one(workload, nemesis, seconds, seed, out, workers=4):
    os.makedirs(out, exist_ok=True)
    rng = random.Random("%s/%s/%d" % (workload, nemesis, seed))
    log("run %s x %s, %d s, seed %d -> %s" % (workload, nemesis, seconds,
                                             seed, out))
    cluster = Cluster(out, nemesis)
    history = History(os.path.join(out, "history.jsonl"))
    events = open(os.path.join(out, "nemesis.jsonl"), "w")
    clients = []
    watch = None
    result = {"workload": workload, "nemesis": nemesis, "seed": seed,
              "seconds": seconds}
    try:
        cluster.start()
        watch = Watch(cluster, os.path.join(out, "watch.jsonl"))
        watch.start()
        clients = [Client(out, "client%d" % i) for i in range(workers + 1)]
        setup = clients[-1].call({"f": "create", "deadline_ms": 10000})
        if setup.get("type") != "ok":
            raise RuntimeError("creating the collection: %s" % setup)
        wl = WORKLOAD_CLASSES[workload](random.Random(rng.random()))
        setup_lock = threading.Lock()

        def setup_again():
            with setup_lock:
                clients[-1].call({"f": "create", "deadline_ms": 10000})

        nem = Nemesis(nemesis, cluster, random.Random(rng.random()), events,
                      out, setup_again)
        stop = threading.Event()
        procs = {"next": workers}
        plock = threading.Lock()

        def worker(w):
            process = w
            cl = clients[w]
            while not stop.is_set():
                op = wl.next(w)
                op.setdefault("deadline_ms", OP_DEADLINE_MS)
                history.add(dict(op, process=process, type="invoke"))
                res = cl.call(op)
                comp = dict(op, process=process, type=res.get("type",
                                                              "info"))
                for f in ("value", "version", "complete", "stale",
                          "absent", "error", "code"):
                    if f in res:
                        comp[f] = res[f]
                history.add(comp)
                if hasattr(wl, "on_result"):
                    wl.on_result(w, op, res)
                if comp["type"] == "info":
                    with plock:  # an unknown op retires its process
                        process = procs["next"]
                        procs["next"] += 1
                time.sleep(0.002)

        threads = [threading.Thread(target=worker, args=(w,), daemon=True)
                   for w in range(workers)]
        for t in threads:
            t.start()
        end = time.time() + seconds
        if nemesis != "none":
            time.sleep(min(2, seconds / 4))
            while time.time() < end - 2:
                nem.start()
                time.sleep(max(0, min(end - time.time(),
                                      rng.uniform(1.5, 5))))
                nem.stop()
                time.sleep(max(0, min(end - time.time(),
                                      rng.uniform(1, 4))))
        rest = end - time.time()
        if rest > 0:
            time.sleep(rest)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        # heal, and wait (bounded) until the cluster serves again
        nem.heal()
        t0 = time.time()
        while time.time() - t0 < 60 and not cluster.healthy():
            time.sleep(0.2)
        result["recovery_s"] = round(time.time() - t0, 2)
        probe = clients[-1]
        ok = False
        while time.time() - t0 < 60 and not ok:
            r = probe.call({"f": "get", "key": 1, "deadline_ms": 3000})
            ok = r.get("type") == "ok"
            if not ok:
                time.sleep(0.5)
        result["recovered"] = ok
        # the final reads (part of the history), bounded: a cluster that
        # does not serve them is stuck, and its run fails (below)
        fp = procs["next"] + 1
        failed, cut = 0, False
        final_end = time.time() + 150
        for op in wl.final():
            if time.time() > final_end:
                cut = True
                break
            op.setdefault("deadline_ms", 10000)
            done = False
            for attempt in range(5 if not failed else 1):
                history.add(dict(op, process=fp, type="invoke", final=True))
                res = probe.call(op)
                comp = dict(op, process=fp, type=res.get("type", "info"),
                            final=True)
                for f in ("value", "version", "complete", "error", "code"):
                    if f in res:
                        comp[f] = res[f]
                history.add(comp)
                if comp["type"] == "info":
                    fp += 1
                if comp["type"] == "ok" and (op["f"] != "search" or
                                              comp.get("complete")):
                    done = True
                    break
                time.sleep(1)
            if not done:
                failed += 1
                if failed == 1:  # keep the evidence while it lasts
                    cluster.diagnose("a final read failed")
        result["final_failed"] = failed
        if cut:
            result["final_cut"] = True
    except Exception as e:
        result["error"] = str(e)
        log("run failed: %s" % e)
    finally:
        for c in clients:
            c.close()
        if watch:
            watch.stop()
        stuck = cluster.stop()
        if stuck:  # a stop that hangs is a bug (bug 5's node never stopped)
            result["stuck_stops"] = stuck
        # answers a node gave up on after --send-timeout-ms (bug 6's fix):
        # no fault here lasts that long, so each one is a finding
        timeouts = cluster.answer_timeouts()
        if timeouts:
            result["answer_timeouts"] = timeouts
        history.close()
        events.close()
    # the verdict
    rpath = os.path.join(out, "results.json")
    if "error" not in result:
        cp = subprocess.run(
            [PY, os.path.join(ROOT, "jepsen/checker/checker.py"),
             "--workload", workload, "--history",
             os.path.join(out, "history.jsonl"), "--nemesis",
             os.path.join(out, "nemesis.jsonl"), "--watch",
             os.path.join(out, "watch.jsonl"), "--out", rpath],
            capture_output=True, text=True)
        if cp.returncode == 2 or not os.path.exists(rpath):
            result["error"] = "checker: " + (cp.stderr or cp.stdout)[-2000:]
        else:
            with open(rpath) as f:
                checked = json.load(f)
            checked.update(result)
            result = checked
    valid = result.get("valid") is True
    if nemesis in CONTROLS and workload in LOSS_CHECKED:
        # a control passes when the checker did find the loss
        result["control"] = True
        result["passed"] = "error" not in result and result.get(
            "valid") is False
    else:
        # (after healing, every final read must succeed: a cluster that
        # stays stuck fails the run, whatever the checkers say)
        result["passed"] = (valid and "error" not in result and
                            not result.get("final_failed") and
                            not result.get("final_cut"))
    silent = result.get("liveness", {}).get("unexplained", [])
    if silent:  # measured, not judged: the router healed it
        log("reconnects no fault explains: %s" % ", ".join(
            "%s at %.1f s" % (u["node"], u["at_s"]) for u in silent))
    if result.get("answer_timeouts"):
        log("answers given up on: %s" % json.dumps(result["answer_timeouts"]))
    # a stop that hangs fails any run, a control's too (bug 11)
    if result.get("stuck_stops"):
        result["passed"] = False
        log("stuck stops: %s" % ", ".join(result["stuck_stops"]))
    with open(rpath, "w") as f:
        json.dump(result, f, indent=1)
    log("%s x %s seed %d: %s" % (workload, nemesis, seed,
                                 "PASS" if result["passed"] else "FAIL"))
    return result


def budget(args):
    """The outer timeout of run.sh, in seconds."""
    if args.ci:
        return sum(s for _, _, s in CI_SAMPLE) + 150 * len(CI_SAMPLE)
    if args.all:
        n = len(args.workloads) * len(args.nemeses) * len(
            args.seeds.split(","))
        return n * (args.time_limit + 150)
    return args.time_limit + 600


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workload", choices=WORKLOADS)
    ap.add_argument("--nemesis", choices=NEMESES)
    ap.add_argument("--time-limit", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--out")
    ap.add_argument("--all", action="store_true")
    ap.add_argument("--ci", action="store_true")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--budget", action="store_true",
                    help=argparse.SUPPRESS)
    ap.add_argument("--workloads", default=",".join(WORKLOADS),
                    help="--all: only these (comma-separated)")
    ap.add_argument("--nemeses", default=",".join(NEMESES),
                    help="--all: only these (comma-separated)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="--all in this many lanes (run.sh)")
    ap.add_argument("--pairs", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--summarize", metavar="DIR", help=argparse.SUPPRESS)
    ap.add_argument("--table", metavar="DIR",
                    help="print a markdown table of the results under DIR")
    args = ap.parse_args()
    args.workloads = args.workloads.split(",")
    args.nemeses = args.nemeses.split(",")
    for x, known in ((args.workloads, WORKLOADS), (args.nemeses, NEMESES)):
        bad = [v for v in x if v not in known]
        if bad:
            ap.error("unknown: %s" % ", ".join(bad))
    if args.list:
        print("workloads: " + " ".join(WORKLOADS))
        print("nemeses: " + " ".join(NEMESES))
        return 0
    if args.pairs:
        # the matrix, one "workload nemesis seed" per line (run.sh --jobs)
        # (seed by seed, so that a cut-short matrix has whole seeds)
        for k in args.seeds.split(","):
            for w in args.workloads:
                for n in args.nemeses:
                    print(w, n, int(k))
        return 0
    if args.summarize:
        return summarize(args.summarize)
    if args.table:
        return table(args.table)
    if not (args.all or args.ci or (args.workload and args.nemesis)):
        ap.error("--workload and --nemesis, or --all, or --ci")
    if args.budget:
        print(budget(args))
        return 0
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = args.out or os.path.join(ROOT, "jepsen", "store", stamp)
    if args.ci:
        runs = [(w, n, s, 1) for w, n, s in CI_SAMPLE]
    elif args.all:
        runs = [(w, n, args.time_limit, int(k)) for w in args.workloads
                for n in args.nemeses for k in args.seeds.split(",")]
    else:
        runs = [(args.workload, args.nemesis, args.time_limit, args.seed)]
    results = []
    for w, n, s, k in runs:
        out = (os.path.join(base, "%s-%s-%d" % (w, n, k))
               if len(runs) > 1 or not args.out else base)
        iptables("-F", "INPUT")
        results.append(run_one(w, n, s, k, out))
    return report(results, base if len(runs) > 1 else out)


def _runs(base):
    """(folder name, its results.json, or the error reading it) of every
    run folder under base, in name order."""
    for d in sorted(os.listdir(base)):
        path = os.path.join(base, d)
        if not os.path.isdir(path):
            continue
        try:
            with open(os.path.join(path, "results.json")) as f:
                yield d, json.load(f), None
        except (OSError, ValueError) as e:
            yield d, None, e


def summarize(base):
    """summary.json of a matrix run by parallel lanes (run.sh --jobs): one
    result per run folder; a run that left no results.json failed."""
    results = [r if r is not None else
               {"run": d, "passed": False, "error": "no results: %s" % e}
               for d, r, e in _runs(base)]
    return report(results, base)


def _finding(r):
    """The one line of what a run's checkers counted that matters most."""
    c = r.get("checks", {})
    w = r.get("workload")
    if w == "set":
        x = c.get("set", {})
        return {"lost": x.get("lost_count", 0),
                "unexpected": x.get("unexpected_count", 0)}
    if w == "register":
        x = c.get("register", {})
        return {"non-linearizable keys": x.get("invalid_count", 0),
                "unchecked keys": x.get("unknown_count", 0)}
    if w == "delete":
        x = c.get("delete", {})
        return {"resurrected": x.get("resurrections_count", 0),
                "phantoms": x.get("phantoms_count", 0)}
    if w == "search":
        x = c.get("search", {})
        return {"missed": x.get("missed_probe_count", 0),
                "not live": x.get("not_live_count", 0),
                "never written": x.get("never_attempted_count", 0)}
    return {}


def table(base):
    """A markdown table of a matrix's results, one row per pair over its
    seeds (docs/reliability.md)."""
    rows = {}
    for _, r, _ in _runs(base):
        if r is not None:
            rows.setdefault((r["workload"], r["nemesis"]), []).append(r)
    print("| workload | nemesis | seeds | time | operations | "
          "ok / fail / info | found | deadline overruns | "
          "reconnects (no fault) | verdict |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    order = {(w, n): (i, j) for i, w in enumerate(WORKLOADS)
             for j, n in enumerate(NEMESES)}
    for key in sorted(rows, key=lambda k: order.get(k, (99, 99))):
        rs = sorted(rows[key], key=lambda r: r.get("seed", 0))
        tot = {"ops": 0, "ok": 0, "fail": 0, "info": 0}
        found, overruns, rec, silent = {}, 0, 0, 0
        for r in rs:
            a = r.get("availability", {}).get("overall", {}).get("total", {})
            for k in tot:
                tot[k] += a.get(k, 0)
            for k, v in _finding(r).items():
                found[k] = found.get(k, 0) + v
            # (every operation's; the search check's own is a subset)
            overruns += r.get("checks", {}).get("deadline", {}).get(
                "overruns", 0)
            rec += r.get("liveness", {}).get("reconnects", 0)
            silent += r.get("liveness", {}).get("unexplained_count", 0)
        bad = [str(r.get("seed")) for r in rs if not r.get("passed")]
        if rs[0].get("control"):
            verdict = ("control: loss found at every seed" if not bad else
                       "control FAILED: no loss found at seed " +
                       ", ".join(bad))
        else:
            verdict = ("valid" if not bad else
                       "INVALID at seed " + ", ".join(bad))
        secs = sorted({r.get("seconds") for r in rs})
        print("| %s | %s | %s | %s s | {:,} | {:,} / {:,} / {:,} | %s | %d | "
              "%d (%d) | %s |".format(tot["ops"], tot["ok"], tot["fail"],
                                      tot["info"])
              % (key[0], key[1], ", ".join(str(r.get("seed")) for r in rs),
                 "/".join(str(x) for x in secs),
                 ", ".join("%s %d" % kv for kv in found.items()), overruns,
                 rec, silent, verdict))
    return 0


def report(results, where):
    with open(os.path.join(where, "summary.json"), "w") as f:
        json.dump(results, f, indent=1)
    bad = [r for r in results if not r.get("passed")]
    for r in results:
        print(json.dumps({k: r.get(k) for k in (
            "workload", "nemesis", "seed", "seconds", "valid", "passed",
            "recovery_s", "error")}))
    log("%d runs, %d passed, %d failed" % (len(results),
                                           len(results) - len(bad),
                                           len(bad)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
