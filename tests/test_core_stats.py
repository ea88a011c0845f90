"""The C counters: latency buckets, status classes, arena sums across processes, and a
dead worker's gauges retired — through the real shared mapping and real forked processes."""

import json
import os
import random

from fastmesh._core.stats import (CLASS_BASE, CODE_BASE, HIST_BASE, NBUCKETS, SLOT_NAMES,
                                  StatsArena, bucket_bounds_us)


def _bucket_by_search(us: int) -> int:
    bounds = bucket_bounds_us()
    for i, b in enumerate(bounds):
        if us <= b:
            return i
    return len(bounds) - 1


def test_latency_lands_in_the_first_bucket_whose_bound_holds_it():
    values = [0, 1, 24, 25, 26, 34, 35, 36, 1000, 10**6, 10**9, 2**40]
    bounds = bucket_bounds_us()
    values += [b for b in bounds[:-1]] + [b + 1 for b in bounds[:-1]]
    values += [random.randrange(0, 10**8) for _ in range(2000)]
    arena = StatsArena(len(values) + 1)
    for us in values:
        blk = arena.alloc(f"b{us}")
        blk.observe(us)
        hist = [blk[HIST_BASE + i] for i in range(NBUCKETS)]
        assert hist.index(1) == _bucket_by_search(us), us
        assert blk[SLOT_NAMES["latency_count"]] == 1 and blk[SLOT_NAMES["latency_sum_us"]] == us


def test_status_classes_and_codes():
    blk = StatsArena(4).alloc("s")
    for status in (200, 200, 404, 503, 0, 999):
        blk.observe(10, status)
    assert blk[CLASS_BASE + 2] == 2 and blk[CODE_BASE + 100] == 2
    assert blk[CLASS_BASE + 4] == 1 and blk[CODE_BASE + 304] == 1
    assert blk[CLASS_BASE + 5] == 1 and blk[CODE_BASE + 403] == 1
    # 0 (no response) and nonsense codes count as errors, not as a class
    assert blk[CLASS_BASE + 0] == 2


def test_blocks_of_every_process_sum_by_key_and_dead_workers_are_retired():
    arena = StatsArena(64)
    key = json.dumps({"kind": "client", "rt": "outgoing", "client": "/x"})
    mine = arena.alloc(key)
    mine.add_named("requests", 5)
    mine.add_named("connections", 1)
    pid = os.fork()
    if pid == 0:  # a "worker": its own block under the same key
        blk = arena.alloc(key)
        blk.add_named("requests", 7)
        blk.add_named("connections", 3)
        blk.add_named("pending", 2)
        os._exit(0)
    os.waitpid(pid, 0)
    snap = arena.snapshot()[key]
    assert snap[SLOT_NAMES["requests"]] == 12
    assert snap[SLOT_NAMES["connections"]] == 4 and snap[SLOT_NAMES["pending"]] == 2
    assert arena.retire(pid) == 1
    snap = arena.snapshot()[key]
    # counters keep what the dead worker served; its gauges no longer count
    assert snap[SLOT_NAMES["requests"]] == 12
    assert snap[SLOT_NAMES["connections"]] == 1 and snap[SLOT_NAMES["pending"]] == 0
