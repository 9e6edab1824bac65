/*
 * shoal-ingest's records: the value of one Kafka message turned into one
 * change to one point, or a clear reason why it cannot be (the reason goes
 * to the dead-letter topic with the original bytes).
 *
 * A message is keyed by its point id (so that every change of a point is
 * in one partition, in order). Its value is a protobuf IngestRecord
 * (proto/shoal.proto) when the content-type header says
 * "application/x-protobuf" (or "application/protobuf"), else a JSON object
 * (the default, also for "application/json"):
 *
 *   {"op": "upsert", "collection": "products", "id": "sku-1" or 17,
 *    "version": 1732544400000000 or "1732544400000000",
 *    "vector": [0.1, ...], "text": "red running shoes",
 *    "payload": {"category": "shoes", "price": 79}}
 *   {"op": "delete", "collection": "products", "id": 17, "version": 12}
 *
 * Rules (each broken rule is an error naming the field):
 * - op is upsert or delete; collection a collection name; id an integer
 *   0..2^53 or a string of 1..64 bytes of UTF-8 (the protobuf form takes
 *   any u64); version is required, an integer (JSON numbers above 2^53 lose
 *   precision: send a decimal string);
 * - when the message has a key, it must be the id as text ("17" or
 *   "sku-1"): a record under another key could overtake or be overtaken by
 *   the id's other changes in another partition;
 * - an upsert carries a vector (1..4096 finite numbers) or a text (1 byte
 *   to 64 KiB of UTF-8, embedded by the embedding tier) or both (the vector
 *   wins); a payload, when present, is a JSON object of at most 64 KiB;
 *   a delete carries none of them.
 * What depends on the collection (its dimension, whether it exists) is the
 * node's to check when the write arrives.
 */
#ifndef SH_INGEST_RECORD_H
#define SH_INGEST_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pid.h"

typedef enum sh_ingest_op {
	SH_INGEST_UPSERT = 1,
	SH_INGEST_DELETE = 2,
} sh_ingest_op;

typedef enum sh_ingest_format {
	SH_INGEST_JSON = 0,
	SH_INGEST_PROTOBUF = 1,
} sh_ingest_format;

/* One change. Strings and arrays are owned by the record
 * (sh_ingest_record_clear). */
typedef struct sh_ingest_record {
	sh_ingest_op op;
	char collection[65];
	sh_pid id;
	uint64_t version;
	float *vector; /* dim floats, or NULL */
	size_t dim;
	char *text;	    /* NUL-terminated, or NULL */
	char *payload_json; /* a compact JSON object, or NULL */
} sh_ingest_record;

/* The format a content-type header names (NULL: JSON). */
sh_ingest_format sh_ingest_format_of(const char *content_type);

/* Parses and checks one message value (len bytes, untrusted) of the given
 * format, with its key (NULL/0: none). Returns SH_OK with *out filled, or
 * SH_EINVAL / SH_ETOOBIG / SH_ENAN / SH_EDIM with a message in err; *out
 * is then empty. */
int sh_ingest_parse(const void *value, size_t len, sh_ingest_format fmt,
		    const void *key, size_t keylen, sh_ingest_record *out,
		    char *err, size_t errlen);

void sh_ingest_record_clear(sh_ingest_record *r);

#endif
