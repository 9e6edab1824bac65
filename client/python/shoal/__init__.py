"""shoal: the Python client of shoal, a sharded vector database.

A thin layer over the C library libshoal (client/include/shoal.h) through
ctypes; standard library only. Vectors may be lists, tuples, array.array or,
when numpy is installed, numpy arrays (numpy is never required).

    import shoal
    with shoal.Client("tcp://127.0.0.1:7000") as c:
        c.create_collection("products", dim=4, metric="cosine",
                            indexes={"category": "keyword", "price": "float"})
        c.upsert("products", [
            {"id": 1, "vector": [0.1, 0.2, 0.3, 0.4],
             "payload": {"category": "shoes", "price": 59.5}},
            ("sku-2", [0.4, 0.3, 0.2, 0.1], {"category": "hats"}),
        ])
        hits = c.search("products", [0.1, 0.2, 0.3, 0.4], k=5,
                        filter="category = 'shoes' and price < 100",
                        with_payload=True)
        for h in hits:
            print(h.id, h.distance, h.payload)

The library is found through the SHOAL_LIB environment variable, next to
this package (libshoal.so), in the source tree's build directories, or on
the system's library path.

Every failure raises shoal.Error with .code (the number of shoal's error
codes, e.g. shoal.ENOCOLLECTION), .name ("ENOCOLLECTION") and the server's
message. A Client may be shared by many threads: each call is its own
request, and the GIL is released while it waits.
"""

import array
import ctypes
import json
import math
import sys
from ctypes import POINTER, byref, c_bool, c_char_p, c_float, c_int64, \
    c_uint8, c_uint64, c_void_p

from . import _lib
from ._lib import lib

__all__ = ["Client", "Embedder", "Filter", "Error", "Hit", "Hits", "Point",
           "WriteResult", "MUST", "SHOULD", "MUST_NOT"]
__version__ = "0.1.0"

# ---- errors -----------------------------------------------------------------

OK = 0
ENOMEM = 1
EINVAL = 2
ENOTFOUND = 3
EIO = 4
ETIMEDOUT = 5
EEXIST = 6
EFULL = 7
ECORRUPT = 8
EDIM = 9
ENAN = 10
ETOOBIG = 11
ESTALE = 12
EUNSUPPORTED = 13
EBUSY = 14
EMOVED = 15
ENOCOLLECTION = 16


class Error(Exception):
    """A failed shoal call.

    code: the error code (shoal.EINVAL, shoal.ENOCOLLECTION, ...), the
    numbers of shoal's common/error.h; name: its symbolic name; message:
    the server's or the library's explanation."""

    def __init__(self, code, message=None):
        self.code = int(code)
        self.name = lib.shoal_errname(self.code).decode()
        if message is None:
            message = lib.shoal_strerror(self.code).decode()
        self.message = message
        super().__init__("%s: %s" % (self.name, message))


def _check(rc):
    if rc != OK:
        msg = lib.shoal_last_error().decode("utf-8", "replace")
        raise Error(rc, msg or None)


# ---- conversions -------------------------------------------------------------

def _b(s):
    return s.encode("utf-8") if isinstance(s, str) else s


def _id_in(x):
    """A Python id (int or str) -> shoal_id (the string is kept alive by the
    returned object's _keep)."""
    i = _lib.Id()
    if isinstance(x, bool):
        raise Error(EINVAL, "a point id is an int or a str, not a bool")
    if isinstance(x, int):
        if x < 0 or x >= 1 << 64:
            raise Error(EINVAL, "integer id %d is not in 0..2^64-1" % x)
        i.kind = 0
        i.num = x
    elif isinstance(x, (str, bytes)):
        i.kind = 1
        i.str = _b(x)
    else:
        raise Error(EINVAL, "a point id is an int or a str, not %s"
                    % type(x).__name__)
    return i


def _id_out(i):
    return i.num if i.kind == 0 else i.str.decode("utf-8", "replace")


def _ids_in(ids):
    ids = list(ids)
    arr = (_lib.Id * max(len(ids), 1))()
    for n, x in enumerate(ids):
        arr[n] = _id_in(x)
    return arr, len(ids)


def _numpy():
    return sys.modules.get("numpy")


def _floats(v):
    """A vector -> (pointer to float32, length, object to keep alive)."""
    np = _numpy()
    if np is not None and isinstance(v, np.ndarray):
        a = np.ascontiguousarray(v, dtype=np.float32).reshape(-1)
        return a.ctypes.data_as(POINTER(c_float)), a.size, a
    a = array.array("f", v)
    if not len(a):
        return None, 0, a
    buf = (c_float * len(a)).from_buffer(a)
    return ctypes.cast(buf, POINTER(c_float)), len(a), (a, buf)


def _matrix(vectors):
    """Many vectors of one dimension -> (pointer, nq, dim, keepalive)."""
    np = _numpy()
    if np is not None and isinstance(vectors, np.ndarray):
        a = np.ascontiguousarray(vectors, dtype=np.float32)
        if a.ndim == 1:
            a = a.reshape(1, -1)
        if a.ndim != 2:
            raise Error(EINVAL, "vectors must be a 2-d array")
        return a.ctypes.data_as(POINTER(c_float)), a.shape[0], a.shape[1], a
    rows = [list(r) if not (np is not None and isinstance(r, np.ndarray))
            else r.astype("float32").tolist() for r in vectors]
    dim = len(rows[0]) if rows else 0
    flat = array.array("f")
    for n, r in enumerate(rows):
        if len(r) != dim:
            raise Error(EDIM, "queries[%d] has %d values, queries[0] %d"
                        % (n, len(r), dim))
        flat.extend(r)
    if not len(flat):
        return None, len(rows), dim, flat
    buf = (c_float * len(flat)).from_buffer(flat)
    return ctypes.cast(buf, POINTER(c_float)), len(rows), dim, (flat, buf)


def _vec_out(ptr, n):
    return [ptr[i] for i in range(n)] if n and ptr else None


def _payload_out(s):
    if not s:
        return None
    try:
        return json.loads(s.decode("utf-8"))
    except ValueError as e:
        raise Error(EINVAL, "malformed response: payload is not JSON (%s)"
                    % e) from None


def _payload_in(p):
    if p is None:
        return b""
    if isinstance(p, (str, bytes)):
        return _b(p)
    return json.dumps(p, allow_nan=False).encode("utf-8")


# ---- results -----------------------------------------------------------------

class Hit:
    """One search result: id (int or str), distance (smaller is closer),
    payload (dict, or None unless with_payload), vector (list of floats, or
    None unless with_vector), version."""
    __slots__ = ("id", "distance", "payload", "vector", "version")

    def __init__(self, id, distance, payload=None, vector=None, version=0):
        self.id = id
        self.distance = distance
        self.payload = payload
        self.vector = vector
        self.version = version

    def to_dict(self):
        return {k: getattr(self, k) for k in self.__slots__}

    def __repr__(self):
        return "Hit(id=%r, distance=%g)" % (self.id, self.distance)


class Hits(list):
    """The hits of one query, closest first (a list of Hit), with how the
    server answered it: plan ("graph", "filtered_graph", "exact_scan"),
    estimated_passing, distances, unindexed_filter, and the coverage a
    router reports: nodes_answered / nodes_asked (1 / 1 from a single
    node)."""
    plan = None
    estimated_passing = 0
    distances = 0
    unindexed_filter = False
    nodes_answered = 0
    nodes_asked = 0


class Point:
    """A stored point: id, vector (or None), payload (dict or None),
    version."""
    __slots__ = ("id", "vector", "payload", "version")

    def __init__(self, id, vector=None, payload=None, version=0):
        self.id = id
        self.vector = vector
        self.payload = payload
        self.version = version

    def to_dict(self):
        return {k: getattr(self, k) for k in self.__slots__}

    def __repr__(self):
        return "Point(id=%r)" % (self.id,)


class WriteResult:
    """The outcome of a write: applied and ignored counts, and statuses, a
    list of (id, code, message) per point (code OK, ESTALE, ENOTFOUND...)."""
    __slots__ = ("applied", "ignored", "statuses")

    def __init__(self, applied, ignored, statuses):
        self.applied = applied
        self.ignored = ignored
        self.statuses = statuses

    def __repr__(self):
        return "WriteResult(applied=%d, ignored=%d)" % (self.applied,
                                                        self.ignored)


_PLANS = {0: None, 1: "graph", 2: "filtered_graph", 3: "exact_scan"}
_METRICS = {"l2": 1, "ip": 2, "cosine": 3}
_STORAGES = {"f32": 0, "int8": 1}
_PTYPES = {"keyword": 1, "integer": 2, "float": 3, "bool": 4}


def _rev(d, v):
    for k, x in d.items():
        if x == v:
            return k
    return v


def _write_result(p):
    try:
        r = p.contents
        st = [(_id_out(r.statuses[i].id), r.statuses[i].code,
               (r.statuses[i].message or b"").decode("utf-8", "replace"))
              for i in range(r.n)]
        return WriteResult(r.applied, r.ignored, st)
    finally:
        lib.shoal_write_result_free(p)


def _points(p, with_cursor=False):
    try:
        r = p.contents
        pts = [Point(_id_out(r.points[i].id),
                     _vec_out(r.points[i].vector, r.points[i].dim),
                     _payload_out(r.points[i].payload_json),
                     r.points[i].version) for i in range(r.n)]
        cursor = None
        if r.next_cursor_len:
            cursor = bytes(r.next_cursor[:r.next_cursor_len])
    finally:
        lib.shoal_points_free(p)
    return (pts, cursor) if with_cursor else pts


# ---- filters -------------------------------------------------------------------

MUST = 0
SHOULD = 1
MUST_NOT = 2


class Filter:
    """A filter on payloads and ids, built with methods or parsed from text.

    A point passes when it passes every MUST clause, at least one SHOULD
    clause (when there are any) and no MUST_NOT clause. Every builder takes
    occur (MUST by default) and returns the filter, so calls chain:

        f = (shoal.Filter().match("category", "shoes")
             .range("price", lt=100).match("in_stock", True))
        f = shoal.Filter.parse('category = "shoes" and price < 100')

    Values: match takes a str, int or bool; match_any a list of str or of
    int. Anywhere a filter is accepted, its text form is accepted too. A
    filter may be used by many threads at once once built."""

    def __init__(self):
        p = c_void_p()
        _check(lib.shoal_filter_new(byref(p)))
        self._ptr = p

    @classmethod
    def parse(cls, text):
        """Parses the text form (see docs/filters.md): and / or / not,
        = != < <= > >=, in [...], exists(f), has_id(...); strings in double
        or single quotes. Raises Error(EINVAL) naming the byte offset of an
        error."""
        f = cls.__new__(cls)
        p = c_void_p()
        _check(lib.shoal_filter_parse(_b(text), byref(p), None, 0))
        f._ptr = p
        return f

    def _add(self, rc):
        _check(rc)
        return self

    def _p(self):
        if self._ptr is None:
            raise Error(EINVAL, "this filter was nested into another one")
        return self._ptr

    def match(self, key, value, occur=MUST):
        """key equals value (str, int or bool)."""
        if isinstance(value, bool):
            return self._add(lib.shoal_filter_match_bool(
                self._p(), occur, _b(key), value))
        if isinstance(value, int):
            return self._add(lib.shoal_filter_match_integer(
                self._p(), occur, _b(key), value))
        if isinstance(value, (str, bytes)):
            return self._add(lib.shoal_filter_match_keyword(
                self._p(), occur, _b(key), _b(value)))
        raise Error(EINVAL, "match value must be str, int or bool")

    def match_any(self, key, values, occur=MUST):
        """key equals any of values (all str, or all int)."""
        values = list(values)
        if values and all(isinstance(v, int) and not isinstance(v, bool)
                          for v in values):
            arr = (c_int64 * len(values))(*values)
            return self._add(lib.shoal_filter_match_any_integer(
                self._p(), occur, _b(key), arr, len(values)))
        if values and all(isinstance(v, (str, bytes)) for v in values):
            arr = (c_char_p * len(values))(*[_b(v) for v in values])
            return self._add(lib.shoal_filter_match_any_keyword(
                self._p(), occur, _b(key), arr, len(values)))
        raise Error(EINVAL, "match_any needs a non-empty list of all str "
                    "or all int")

    def range(self, key, gt=None, gte=None, lt=None, lte=None, occur=MUST):
        """A numeric range on key; give at least one bound."""
        def b(x):
            return math.nan if x is None else float(x)
        return self._add(lib.shoal_filter_range(
            self._p(), occur, _b(key), b(gt), b(gte), b(lt), b(lte)))

    def exists(self, key, occur=MUST):
        """key is present, not null and not an empty array."""
        return self._add(lib.shoal_filter_exists(self._p(), occur, _b(key)))

    def has_id(self, ids, occur=MUST):
        """The point's id is one of ids (ints and strs)."""
        arr, n = _ids_in(ids)
        return self._add(lib.shoal_filter_has_id(self._p(), occur, arr, n))

    def nested(self, sub, occur=MUST):
        """Adds the filter sub as one clause; sub is consumed (it belongs
        to this filter afterwards and cannot be used on its own)."""
        if not isinstance(sub, Filter):
            sub = Filter.parse(sub)
        _check(lib.shoal_filter_nested(self._p(), occur, sub._p()))
        sub._ptr = None
        return self

    def close(self):
        """Frees the filter now (otherwise when it is collected)."""
        if getattr(self, "_ptr", None) is not None:
            lib.shoal_filter_free(self._ptr)
            self._ptr = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may be gone
            pass


class _FilterArg:
    """A filter argument (None, text or Filter) as a pointer for one call."""

    def __init__(self, f):
        self.owned = None
        if f is None:
            self.ptr = None
        elif isinstance(f, Filter):
            self.ptr = f._p()
        else:
            self.owned = Filter.parse(f)
            self.ptr = self.owned._ptr

    def __enter__(self):
        return self.ptr

    def __exit__(self, *a):
        if self.owned is not None:
            self.owned.close()


# ---- the client ------------------------------------------------------------------

class Client:
    """A connection to a shoal-router (or a single shoal-node).

    Client(url, timeout_ms=5000) connects and checks that the server
    answers (raises Error(ETIMEDOUT) if nothing does within timeout_ms);
    timeout_ms also bounds every later call. Use as a context manager or
    call close(). Thread-safe: share one Client between threads."""

    def __init__(self, url, timeout_ms=5000):
        self._c = None
        p = c_void_p()
        _check(lib.shoal_connect(_b(url), int(timeout_ms), byref(p)))
        self._c = p

    def close(self):
        """Closes the connection. No call may be running on it."""
        if self._c is not None:
            lib.shoal_close(self._c)
            self._c = None

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may be gone
            pass

    def _h(self):
        if self._c is None:
            raise Error(EINVAL, "the client is closed")
        return self._c

    # -- collections --

    def create_collection(self, name, dim, metric="l2", storage="f32", m=0,
                          ef_construction=0, ef_search=0, indexes=None):
        """Creates a collection. metric: "l2", "ip" or "cosine"; storage:
        "f32" or "int8"; m, ef_construction, ef_search: HNSW parameters
        (0 = server defaults); indexes: {field: "keyword" | "integer" |
        "float" | "bool"} payload indexes. Raises Error(EEXIST) when the
        name is taken."""
        indexes = dict(indexes or {})
        arr = (_lib.PayloadIndex * max(len(indexes), 1))()
        for n, (field, t) in enumerate(indexes.items()):
            if t not in _PTYPES:
                raise Error(EINVAL, "index type %r is not one of %s"
                            % (t, ", ".join(_PTYPES)))
            arr[n].field = _b(field)
            arr[n].type = _PTYPES[t]
        if metric not in _METRICS:
            raise Error(EINVAL, "metric %r is not l2, ip or cosine"
                        % (metric,))
        if storage not in _STORAGES:
            raise Error(EINVAL, "storage %r is not f32 or int8" % (storage,))
        cfg = _lib.CollectionConfig(_b(name), dim, _METRICS[metric],
                                    _STORAGES[storage], m, ef_construction,
                                    ef_search, arr, len(indexes))
        _check(lib.shoal_collection_create(self._h(), byref(cfg)))

    def drop_collection(self, name):
        """Drops a collection and its points (Error(ENOCOLLECTION) when
        unknown)."""
        _check(lib.shoal_collection_drop(self._h(), _b(name)))

    @staticmethod
    def _infos(p):
        try:
            return Client._infos_of(p.contents)
        finally:
            lib.shoal_collections_free(p)

    @staticmethod
    def _infos_of(r):
        out = []
        for i in range(r.n):
            it = r.items[i]
            c = it.config
            out.append({
                "name": c.name.decode(), "dim": c.dim,
                "metric": _rev(_METRICS, c.metric),
                "storage": _rev(_STORAGES, c.storage), "m": c.m,
                "ef_construction": c.ef_construction,
                "ef_search": c.ef_search,
                "indexes": {c.indexes[j].field.decode():
                            _rev(_PTYPES, c.indexes[j].type)
                            for j in range(c.n_indexes)},
                "points": it.points})
        return out

    def collections(self):
        """Every collection, as a list of dicts (name, dim, metric,
        storage, m, ef_construction, ef_search, indexes, points)."""
        p = POINTER(_lib.Collections)()
        _check(lib.shoal_collection_list(self._h(), byref(p)))
        return self._infos(p)

    def collection_info(self, name):
        """One collection's dict as in collections()
        (Error(ENOCOLLECTION) when unknown)."""
        p = POINTER(_lib.Collections)()
        _check(lib.shoal_collection_info_get(self._h(), _b(name), byref(p)))
        return self._infos(p)[0]

    # -- writes --

    def upsert(self, collection, points):
        """Inserts or replaces points: dicts {"id", "vector", "payload",
        "version"} or tuples (id, vector[, payload[, version]]); ids are
        ints (0..2^64-1) or strs (1..64 bytes); payload a dict (or JSON
        text); version defaults to 0. All or nothing: an invalid point
        raises (EDIM, ENAN, EINVAL, ETOOBIG) and nothing is written.
        Returns a WriteResult (statuses OK or ESTALE per point)."""
        points = list(points)
        arr = (_lib.Point * max(len(points), 1))()
        keep = []
        for n, p in enumerate(points):
            if isinstance(p, dict):
                pid, vec = p["id"], p["vector"]
                payload, version = p.get("payload"), p.get("version", 0)
            else:
                p = tuple(p)
                pid, vec = p[0], p[1]
                payload = p[2] if len(p) > 2 else None
                version = p[3] if len(p) > 3 else 0
            ptr, dim, k = _floats(vec)
            pl = _payload_in(payload)
            keep.append((k, pl))
            arr[n].id = _id_in(pid)
            arr[n].vector = ptr
            arr[n].dim = dim
            arr[n].payload_json = pl
            arr[n].version = version
        out = POINTER(_lib.WriteResult)()
        _check(lib.shoal_upsert(self._h(), _b(collection), arr, len(points),
                                byref(out)))
        return _write_result(out)

    def delete(self, collection, ids=None, filter=None, version=0,
               versions=None):
        """Deletes by ids (with version for all, or versions, one per id)
        or by a non-empty filter (tombstones at version). Returns a
        WriteResult (by ids: OK, ENOTFOUND or ESTALE per id; by filter: the
        points deleted)."""
        out = POINTER(_lib.WriteResult)()
        if (ids is None) == (filter is None):
            raise Error(EINVAL, "delete takes ids or a filter")
        if ids is not None:
            arr, n = _ids_in(ids)
            vs = list(versions) if versions is not None else [version] * n
            if len(vs) != n:
                raise Error(EINVAL, "%d versions for %d ids" % (len(vs), n))
            varr = (c_uint64 * max(n, 1))(*vs)
            _check(lib.shoal_delete(self._h(), _b(collection), arr, varr, n,
                                    byref(out)))
        else:
            with _FilterArg(filter) as fp:
                _check(lib.shoal_delete_by_filter(
                    self._h(), _b(collection), fp, version, byref(out)))
        return _write_result(out)

    # -- reads --

    def get(self, collection, ids, with_payload=True, with_vector=False):
        """The stored points among ids, in request order (absent ids are
        left out), as a list of Point."""
        arr, n = _ids_in(ids)
        out = POINTER(_lib.Points)()
        _check(lib.shoal_get(self._h(), _b(collection), arr, n,
                             with_payload, with_vector, byref(out)))
        return _points(out)

    def search_batch(self, collection, vectors, k=10, filter=None, ef=0,
                     with_payload=False, with_vector=False, timeout_ms=0,
                     min_coverage=0.0, exact=False):
        """The k nearest neighbours of each of vectors (a list of vectors
        or a 2-d numpy array): a list of Hits, one per query, in order.
        filter: text or Filter; ef: candidate list (0 = the collection's);
        timeout_ms: this request's deadline (0 = the client's);
        min_coverage: the fraction of a router's nodes that must answer
        for partial results to be accepted (0 = all); exact: distances to
        every passing point instead of the graph (slow; ground truth)."""
        ptr, nq, dim, keep = _matrix(vectors)
        out = POINTER(_lib.SearchResult)()
        with _FilterArg(filter) as fp:
            opt = _lib.SearchOptions(k, ef, fp, with_payload, with_vector,
                                     timeout_ms, min_coverage, exact)
            _check(lib.shoal_search_batch(self._h(), _b(collection), ptr,
                                          nq, dim, byref(opt), byref(out)))
        del keep
        try:
            return self._hits(out.contents)
        finally:
            lib.shoal_search_result_free(out)

    @staticmethod
    def _hits(r):
        res = []
        for q in range(r.n_queries):
            qr = r.queries[q]
            hits = Hits(Hit(_id_out(qr.hits[i].id), qr.hits[i].distance,
                            _payload_out(qr.hits[i].payload_json),
                            _vec_out(qr.hits[i].vector, qr.hits[i].dim),
                            qr.hits[i].version)
                        for i in range(qr.n_hits))
            hits.plan = _PLANS.get(qr.plan, qr.plan)
            hits.estimated_passing = qr.estimated_passing
            hits.distances = qr.distances
            hits.unindexed_filter = bool(qr.unindexed_filter)
            hits.nodes_answered = r.nodes_answered
            hits.nodes_asked = r.nodes_asked
            res.append(hits)
        return res

    def search(self, collection, vector, k=10, filter=None, **kw):
        """The k nearest neighbours of one vector, closest first: a Hits
        list of Hit (id, distance, payload, vector, version) with the plan
        and coverage as attributes. Options as search_batch."""
        np = _numpy()
        if np is not None and isinstance(vector, np.ndarray):
            vector = vector.reshape(1, -1)
        else:
            vector = [list(vector)]
        return self.search_batch(collection, vector, k=k, filter=filter,
                                 **kw)[0]

    def scroll(self, collection, filter=None, limit=100, cursor=None,
               with_payload=True, with_vector=False):
        """One page of the points passing filter, in storage order:
        (points, next_cursor). Pass next_cursor back for the next page; it
        is None after the last one."""
        cbuf = None
        if cursor:
            cbuf = (c_uint8 * len(cursor)).from_buffer_copy(cursor)
        out = POINTER(_lib.Points)()
        with _FilterArg(filter) as fp:
            opt = _lib.ScrollOptions(
                fp, ctypes.cast(cbuf, POINTER(c_uint8)) if cbuf else None,
                len(cursor) if cursor else 0, limit, with_payload,
                with_vector)
            _check(lib.shoal_scroll(self._h(), _b(collection), byref(opt),
                                    byref(out)))
        return _points(out, with_cursor=True)

    def count(self, collection, filter=None, exact=True):
        """The number of points passing filter (all when None)."""
        n = c_uint64()
        ex = c_bool()
        with _FilterArg(filter) as fp:
            _check(lib.shoal_count(self._h(), _b(collection), fp, exact,
                                   byref(n), byref(ex)))
        return n.value


class Embedder:
    """The embedding tier: shoal-embed servers that turn texts into vectors
    and search collections by text. urls: one server URL or a list; a model
    is served by the server that rendezvous hashing of its name picks, so
    it always goes to the same one. Thread-safe; close() or use with."""

    def __init__(self, urls, timeout_ms=10000):
        if isinstance(urls, str):
            urls = [urls]
        arr = (c_char_p * len(urls))(*[_b(u) for u in urls])
        h = c_void_p()
        _check(lib.shoal_embedder_connect(arr, len(urls), timeout_ms,
                                          byref(h)))
        self._e = h

    def close(self):
        if getattr(self, "_e", None):
            lib.shoal_embedder_close(self._e)
            self._e = None

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def server_for(self, model=""):
        """The URL of the server that serves model ("" = the default)."""
        return lib.shoal_embedder_server_for(self._e, _b(model)).decode()

    def embed(self, texts, model=""):
        """Vectors of texts (a list of str, or one str): a list of lists of
        floats, L2-normalised, in order. The server's cache answers texts
        it has seen (see last_cached)."""
        if isinstance(texts, str):
            texts = [texts]
        arr = (c_char_p * len(texts))(*[_b(t) for t in texts])
        out = POINTER(_lib.Embeddings)()
        _check(lib.shoal_embed(self._e, _b(model), arr, len(texts),
                               byref(out)))
        try:
            r = out.contents
            d = r.dim
            self.last_cached = r.cached
            flat = r.vectors[:r.n * d]
            return [flat[i * d:(i + 1) * d] for i in range(r.n)]
        finally:
            lib.shoal_embeddings_free(out)

    def search_text(self, collection, text, k=10, filter=None, model="",
                    ef=0, with_payload=True, with_vector=False,
                    timeout_ms=0, min_coverage=0.0, exact=False):
        """Searches collection with the embedding of text (the server
        embeds it and asks its router): a Hits list, as Client.search."""
        out = POINTER(_lib.SearchResult)()
        with _FilterArg(filter) as fp:
            opt = _lib.SearchOptions(k, ef, fp, with_payload, with_vector,
                                     timeout_ms, min_coverage, exact)
            _check(lib.shoal_search_text(self._e, _b(model), _b(collection),
                                         _b(text), byref(opt), byref(out)))
        try:
            return Client._hits(out.contents)[0]
        finally:
            lib.shoal_search_result_free(out)
