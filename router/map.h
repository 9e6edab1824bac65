/*
 * The cluster map: which node owns each of the 16384 hash slots, under a
 * version (the epoch) that grows with every change, and the slot moves in
 * flight.
 *
 * Kept by the router in a JSON file in its data directory (written to a
 * temporary file, fsynced, renamed: a crash leaves the old map or the new
 * one, never half of each), or in one etcd key, changed only by
 * compare-and-swap (mapstore.h):
 *
 *   {"format": 2, "epoch": 7, "next_id": 12, "next_node": 5,
 *    "nodes": [{"id": 1, "address": "tcp://10.0.0.7:7100"}, ...],
 *    "slots": [{"first": 0, "last": 5461, "node": 1, "epoch": 1}, ...,
 *              {"first": 5462, "last": 6000, "node": 2, "epoch": 5,
 *               "moving_to": 4}],
 *    "job": {"id": 9, "description": "rebalance", "max_bytes_per_sec": 0,
 *            "grace_ms": 5000, "started_at_ms": 1700000000000,
 *            "aborted": false,
 *            "moves": [{"id": 10, "first": 5462, "last": 6000, "from": 2,
 *                       "to": 4, "state": "copying", "points": 5123,
 *                       "switched_at_ms": 0, "error": ""}]}}
 *
 * Every slot has exactly one owner, a node of the list, and the epoch at
 * which it got that owner; a slot that a move in flight carries to another
 * node says which (moving_to). The job is the list of moves that
 * `shoalctl rebalance` (or drain, or move-slots) runs one after another;
 * each move's state is the step it has reached, so a coordinator that
 * crashed can resume or abort it (docs/rebalancing.md). Node, move and job
 * ids are never reused. Format 1 (before moves: no slot epochs, no job) is
 * read too; unknown members are refused, so an older router cannot
 * silently drop a move it does not understand.
 *
 * An sh_map is a plain value (about half a megabyte): the router keeps one
 * under its lock and replaces it whole.
 */
#ifndef SH_MAP_H
#define SH_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "slots.h"

/* Nodes in one cluster: a bound that keeps the map small and the fan-out
 * sane; far above what one router can fan out to within a deadline. */
#define SH_MAP_MAX_NODES 256
/* Node addresses (nng URLs), in bytes. */
#define SH_MAP_MAX_ADDR 255
/* Moves in one job. The planner hands over contiguous ranges, a few per
 * node pair, so real jobs hold tens. */
#define SH_MAP_MAX_MOVES 1024
/* A move's last error and a job's description, in bytes. */
#define SH_MAP_MAX_ERROR 200
#define SH_MAP_MAX_DESC 256

/* The steps of a move, in order (the numbers of proto MoveState). */
typedef enum sh_move_state {
	SH_MOVE_PENDING = 1,	/* waiting for the moves before it */
	SH_MOVE_PREPARED = 2,	/* the target imports the slots */
	SH_MOVE_COPYING = 3,	/* the source copies them, capturing writes */
	SH_MOVE_FENCED = 4,	/* the source refuses writes; target has all */
	SH_MOVE_HANDED_OFF = 5, /* the source serves the slots no more */
	SH_MOVE_SWITCHED = 6,	/* the map names the target the owner */
	SH_MOVE_DONE = 7,	/* the source dropped its copy */
	SH_MOVE_ABORTED = 8,	/* given up; the source still owns them */
} sh_move_state;

const char *sh_move_state_name(int state);
/* DONE or ABORTED. */
bool sh_move_terminal(int state);

typedef struct sh_map_move {
	uint64_t id;
	uint32_t first, last; /* slots */
	uint32_t from, to;    /* node ids */
	uint8_t state;	      /* sh_move_state */
	uint64_t points;      /* estimated when planned */
	uint64_t switched_at_ms;
	char error[SH_MAP_MAX_ERROR + 1]; /* the last step's failure */
} sh_map_move;

typedef struct sh_map_job {
	uint64_t id; /* 0: no job */
	char description[SH_MAP_MAX_DESC + 1];
	uint64_t max_bps;  /* copy throttle of every move; 0: none */
	uint32_t grace_ms; /* switch -> the source drops its copy */
	uint64_t started_at_ms;
	bool aborted; /* no pending move starts any more */
	uint32_t nmoves;
	sh_map_move moves[SH_MAP_MAX_MOVES];
} sh_map_job;

typedef struct sh_map_node {
	uint32_t id;
	char address[SH_MAP_MAX_ADDR + 1];
} sh_map_node;

typedef struct sh_map {
	uint64_t epoch;
	uint64_t next_id;   /* the next move or job id */
	uint32_t next_node; /* the next node id */
	uint32_t nnodes;
	sh_map_node nodes[SH_MAP_MAX_NODES]; /* ascending by id */
	uint32_t owner[SH_SLOTS];	     /* node id of each slot */
	uint64_t slot_epoch[SH_SLOTS];	     /* when it got that owner */
	uint32_t moving_to[SH_SLOTS];	     /* 0: stable */
	sh_map_job job;
} sh_map;

/* A map of nodes with ids 1..n at the given addresses, the slots split into
 * n contiguous ranges of (nearly) equal size, epoch 1. Returns SH_OK or
 * SH_EINVAL (n 0 or too large, an address empty, too long or repeated). */
int sh_map_init(sh_map *m, const char *const *addresses, size_t n, char *err,
		size_t errlen);

/* Parses and validates a map document (len bytes of JSON). `where` names
 * it in messages (a path, an etcd key). SH_OK, SH_ECORRUPT (not a valid
 * map: the message says why), SH_ENOMEM. */
int sh_map_parse(sh_map *m, const char *text, size_t len, const char *where,
		 char *err, size_t errlen);

/* The map as a JSON document (malloc'd, NUL-terminated; cJSON_free()),
 * indented for people or compact (etcd), or NULL when out of memory. */
char *sh_map_to_json(const sh_map *m, bool pretty);

/* Reads and validates a map file. SH_OK, SH_ENOTFOUND (no file), SH_EIO,
 * SH_ECORRUPT, SH_ENOMEM. */
int sh_map_load(sh_map *m, const char *path, char *err, size_t errlen);

/* Writes the map atomically (temporary file, fsync, rename, fsync of the
 * directory). SH_OK, SH_EIO or SH_ENOMEM. */
int sh_map_save(const sh_map *m, const char *path, char *err, size_t errlen);

/* Index of node id in m->nodes, or -1. */
int sh_map_node_index(const sh_map *m, uint32_t id);

/* Slots owned by node id, as ranges: fills up to cap (first, last) pairs
 * and returns how many there are. */
size_t sh_map_ranges(const sh_map *m, uint32_t id, uint32_t (*ranges)[2],
		     size_t cap);

/* Slots owned by node id. */
uint32_t sh_map_slot_count(const sh_map *m, uint32_t id);

/* Adds a node owning no slot under a new id (next_node: ids of removed
 * nodes are not reused), epoch + 1. Returns SH_OK with *id, SH_EEXIST
 * (address present), SH_EFULL, SH_EINVAL. */
int sh_map_add_node(sh_map *m, const char *address, uint32_t *id, char *err,
		    size_t errlen);

/* Removes node id, which must own no slot and take part in no unfinished
 * move; epoch + 1. SH_OK, SH_ENOTFOUND, SH_EBUSY (with the reason). */
int sh_map_remove_node(sh_map *m, uint32_t id, char *err, size_t errlen);

/* The job's first move that is not DONE or ABORTED, or NULL: the one in
 * flight (moves run in order). */
sh_map_move *sh_map_current_move(sh_map *m);
/* A move of the job by id, or NULL. */
sh_map_move *sh_map_find_move(sh_map *m, uint64_t id);
/* Whether the map holds a job with a move still to finish. */
bool sh_map_job_active(const sh_map *m);

#endif
