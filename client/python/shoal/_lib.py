"""ctypes declarations of libshoal (client/include/shoal.h). Internal."""

import ctypes
import ctypes.util
import os
from ctypes import (POINTER, Structure, c_bool, c_char_p, c_double, c_float,
                    c_int, c_int64, c_size_t, c_uint8, c_uint32, c_uint64,
                    c_void_p)


class Id(Structure):
    _fields_ = [("kind", c_int), ("num", c_uint64), ("str", c_char_p)]


class PayloadIndex(Structure):
    _fields_ = [("field", c_char_p), ("type", c_int)]


class CollectionConfig(Structure):
    _fields_ = [("name", c_char_p), ("dim", c_uint32), ("metric", c_int),
                ("storage", c_int), ("m", c_uint32),
                ("ef_construction", c_uint32), ("ef_search", c_uint32),
                ("indexes", POINTER(PayloadIndex)), ("n_indexes", c_size_t)]


class CollectionInfo(Structure):
    _fields_ = [("config", CollectionConfig), ("points", c_uint64)]


class Collections(Structure):
    _fields_ = [("items", POINTER(CollectionInfo)), ("n", c_size_t),
                ("internal_", c_void_p)]


class Point(Structure):
    _fields_ = [("id", Id), ("vector", POINTER(c_float)), ("dim", c_size_t),
                ("payload_json", c_char_p), ("version", c_uint64)]


class PointStatus(Structure):
    _fields_ = [("id", Id), ("code", c_int), ("message", c_char_p)]


class WriteResult(Structure):
    _fields_ = [("statuses", POINTER(PointStatus)), ("n", c_size_t),
                ("applied", c_uint64), ("ignored", c_uint64),
                ("internal_", c_void_p)]


class Points(Structure):
    _fields_ = [("points", POINTER(Point)), ("n", c_size_t),
                ("next_cursor", POINTER(c_uint8)),
                ("next_cursor_len", c_size_t), ("internal_", c_void_p)]


class Embeddings(Structure):
    _fields_ = [("vectors", POINTER(c_float)), ("n", c_size_t),
                ("dim", c_size_t), ("cached", c_uint32),
                ("model", ctypes.c_char * 65)]


class SearchOptions(Structure):
    _fields_ = [("k", c_uint32), ("ef", c_uint32), ("filter", c_void_p),
                ("with_payload", c_bool), ("with_vector", c_bool),
                ("timeout_ms", c_uint32), ("min_coverage", c_float), ("exact", c_bool)]


class Hit(Structure):
    _fields_ = [("id", Id), ("distance", c_float),
                ("payload_json", c_char_p), ("vector", POINTER(c_float)),
                ("dim", c_size_t), ("version", c_uint64)]


class QueryResult(Structure):
    _fields_ = [("hits", POINTER(Hit)), ("n_hits", c_size_t),
                ("plan", c_int), ("estimated_passing", c_uint64),
                ("distances", c_uint64), ("unindexed_filter", c_bool)]


class SearchResult(Structure):
    _fields_ = [("queries", POINTER(QueryResult)), ("n_queries", c_size_t),
                ("nodes_answered", c_uint32), ("nodes_asked", c_uint32),
                ("internal_", c_void_p)]


class ScrollOptions(Structure):
    _fields_ = [("filter", c_void_p), ("cursor", POINTER(c_uint8)),
                ("cursor_len", c_size_t), ("limit", c_uint32),
                ("with_payload", c_bool), ("with_vector", c_bool)]


def _candidates():
    env = os.environ.get("SHOAL_LIB")
    if env:
        yield env
    here = os.path.dirname(os.path.abspath(__file__))
    yield os.path.join(here, "libshoal.so")
    root = os.path.abspath(os.path.join(here, "..", "..", ".."))
    for build in ("build", "build-client", "build-release"):
        yield os.path.join(root, build, "client", "libshoal.so")
    found = ctypes.util.find_library("shoal")
    if found:
        yield found


def _load():
    tried = []
    for path in _candidates():
        if os.sep in path and not os.path.exists(path):
            tried.append(path)
            continue
        try:
            return ctypes.CDLL(path)
        except OSError as e:
            tried.append("%s (%s)" % (path, e))
    raise ImportError("libshoal.so not found; set SHOAL_LIB. Tried: " +
                      ", ".join(tried))


lib = _load()

_sigs = {
    "shoal_strerror": (c_char_p, [c_int]),
    "shoal_errname": (c_char_p, [c_int]),
    "shoal_last_error": (c_char_p, []),
    "shoal_connect": (c_int, [c_char_p, c_int, POINTER(c_void_p)]),
    "shoal_close": (None, [c_void_p]),
    "shoal_collection_create": (c_int, [c_void_p, POINTER(CollectionConfig)]),
    "shoal_collection_drop": (c_int, [c_void_p, c_char_p]),
    "shoal_collection_list": (c_int, [c_void_p, POINTER(POINTER(Collections))]),
    "shoal_collection_info_get": (c_int, [c_void_p, c_char_p,
                                          POINTER(POINTER(Collections))]),
    "shoal_collections_free": (None, [POINTER(Collections)]),
    "shoal_filter_new": (c_int, [POINTER(c_void_p)]),
    "shoal_filter_free": (None, [c_void_p]),
    "shoal_filter_match_keyword": (c_int, [c_void_p, c_int, c_char_p,
                                           c_char_p]),
    "shoal_filter_match_integer": (c_int, [c_void_p, c_int, c_char_p,
                                           c_int64]),
    "shoal_filter_match_bool": (c_int, [c_void_p, c_int, c_char_p, c_bool]),
    "shoal_filter_match_any_keyword": (c_int, [c_void_p, c_int, c_char_p,
                                               POINTER(c_char_p), c_size_t]),
    "shoal_filter_match_any_integer": (c_int, [c_void_p, c_int, c_char_p,
                                               POINTER(c_int64), c_size_t]),
    "shoal_filter_range": (c_int, [c_void_p, c_int, c_char_p, c_double,
                                   c_double, c_double, c_double]),
    "shoal_filter_exists": (c_int, [c_void_p, c_int, c_char_p]),
    "shoal_filter_has_id": (c_int, [c_void_p, c_int, POINTER(Id), c_size_t]),
    "shoal_filter_nested": (c_int, [c_void_p, c_int, c_void_p]),
    "shoal_filter_parse": (c_int, [c_char_p, POINTER(c_void_p), c_char_p,
                                   c_size_t]),
    "shoal_upsert": (c_int, [c_void_p, c_char_p, POINTER(Point), c_size_t,
                             POINTER(POINTER(WriteResult))]),
    "shoal_delete": (c_int, [c_void_p, c_char_p, POINTER(Id),
                             POINTER(c_uint64), c_size_t,
                             POINTER(POINTER(WriteResult))]),
    "shoal_delete_by_filter": (c_int, [c_void_p, c_char_p, c_void_p,
                                       c_uint64,
                                       POINTER(POINTER(WriteResult))]),
    "shoal_write_result_free": (None, [POINTER(WriteResult)]),
    "shoal_get": (c_int, [c_void_p, c_char_p, POINTER(Id), c_size_t, c_bool,
                          c_bool, POINTER(POINTER(Points))]),
    "shoal_points_free": (None, [POINTER(Points)]),
    "shoal_search_batch": (c_int, [c_void_p, c_char_p, POINTER(c_float),
                                   c_size_t, c_size_t,
                                   POINTER(SearchOptions),
                                   POINTER(POINTER(SearchResult))]),
    "shoal_search_result_free": (None, [POINTER(SearchResult)]),
    "shoal_scroll": (c_int, [c_void_p, c_char_p, POINTER(ScrollOptions),
                             POINTER(POINTER(Points))]),
    "shoal_count": (c_int, [c_void_p, c_char_p, c_void_p, c_bool,
                            POINTER(c_uint64), POINTER(c_bool)]),
    "shoal_embedder_connect": (c_int, [POINTER(c_char_p), c_size_t, c_int,
                                       POINTER(c_void_p)]),
    "shoal_embedder_close": (None, [c_void_p]),
    "shoal_embedder_server_for": (c_char_p, [c_void_p, c_char_p]),
    "shoal_embed": (c_int, [c_void_p, c_char_p, POINTER(c_char_p), c_size_t,
                            POINTER(POINTER(Embeddings))]),
    "shoal_embeddings_free": (None, [POINTER(Embeddings)]),
    "shoal_search_text": (c_int, [c_void_p, c_char_p, c_char_p, c_char_p,
                                  POINTER(SearchOptions),
                                  POINTER(POINTER(SearchResult))]),
}
for _name, (_res, _args) in _sigs.items():
    _f = getattr(lib, _name)
    _f.restype = _res
    _f.argtypes = _args
