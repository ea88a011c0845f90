# cython: language_level=3
"""Counters and fixed-bucket latency histograms in shared memory.

Layout of the arena (one anonymous MAP_SHARED mapping, created before workers fork):

    header   64 bytes: magic, slot count per block, max blocks, next free block (atomic)
    dir      max_blocks entries: int64 state (0 free, 1 key written) + key text
    blocks   max_blocks * ST_BLOCK_SLOTS int64 counters

A worker allocates a block with an atomic fetch-and-add on `next`, writes the key, then
publishes state=1. Each block is written by one process only, so counters need no atomics
or locks; the admin side sums every published block with the same key, which is how one
scrape shows all workers.
"""

import json
import mmap
import os

from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy, memset
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

cdef extern from *:
    """
    static inline long long fm_fetch_add(long long* p, long long v) {
        return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
    }
    static inline void fm_store_release(long long* p, long long v) {
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
    }
    static inline long long fm_load_acquire(long long* p) {
        return __atomic_load_n(p, __ATOMIC_ACQUIRE);
    }
    """
    long long fm_fetch_add(long long* p, long long v) nogil
    void fm_store_release(long long* p, long long v) nogil
    long long fm_load_acquire(long long* p) nogil

DEF_MAGIC = 0x666d737461747301  # "fmstats" v1

# Upper bounds (µs, inclusive) of the latency buckets; the last bucket is +Inf.
# Roughly three buckets per doubling from 25 µs to about 120 s.
cdef int64_t[ST_NBUCKETS] BUCKET_BOUNDS_US
_bounds = []
_b = 25.0
for _i in range(ST_NBUCKETS - 1):
    _bounds.append(int(round(_b)))
    _b *= 1.4
_bounds.append(2 ** 62)
for _i in range(ST_NBUCKETS):
    BUCKET_BOUNDS_US[_i] = _bounds[_i]
# BUCKET_HINT[k]: the first bucket whose bound >= 2**(k-1) (the smallest value with bit
# length k), so record_latency scans only a couple of buckets.
cdef int[65] BUCKET_HINT
for _k in range(65):
    _smallest = 0 if _k == 0 else 2 ** (_k - 1)
    _h = 0
    while _h < ST_NBUCKETS - 1 and _bounds[_h] < _smallest:
        _h += 1
    BUCKET_HINT[_k] = _h

SLOT_NAMES = {
    "requests": ST_REQUESTS, "success": ST_SUCCESS, "failures": ST_FAILURES,
    "pending": ST_PENDING, "connections": ST_CONNECTIONS, "connects": ST_CONNECTS,
    "connect_failures": ST_CONNECT_FAILURES, "closes": ST_CLOSES,
    "received_bytes": ST_RECV_BYTES, "sent_bytes": ST_SENT_BYTES,
    "pool_hits": ST_POOL_HITS, "pool_misses": ST_POOL_MISSES,
    "tls_handshakes": ST_TLS_HANDSHAKES, "tls_failures": ST_TLS_FAILURES,
    "requeues": ST_REQUEUES, "errors": ST_ERRORS,
    "route_misses": ST_ROUTE_MISSES, "route_overrides": ST_ROUTE_OVERRIDES,
    "route_refreshes": ST_ROUTE_REFRESHES, "retries": ST_RETRIES,
    "budget_exhausted": ST_BUDGET_EXHAUSTED, "timeouts": ST_TIMEOUTS,
    "latency_count": ST_LAT_COUNT, "latency_sum_us": ST_LAT_SUM_US,
}
CLASS_BASE = ST_CLASS_BASE
CODE_BASE = ST_CODE_BASE
HIST_BASE = ST_HIST_BASE
NBUCKETS = ST_NBUCKETS
BLOCK_SLOTS = ST_BLOCK_SLOTS
STATS_ENABLED = bool(FASTMESH_STATS)


def bucket_bounds_us():
    """Inclusive upper bounds of the latency buckets in µs (last is effectively +Inf)."""
    return list(_bounds)


cdef int64_t now_us() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec * 1000000 + ts.tv_nsec // 1000


cdef void record_latency(int64_t* p, int64_t us) noexcept nogil:
    # The first bucket whose bound is >= us: start at the first bucket that can hold a
    # value of us's bit length (bounds grow 1.4x, so at most ~3 steps follow).
    cdef int lo
    cdef int bits = 0
    cdef uint64_t v = <uint64_t>us if us > 0 else 0
    while v:
        bits += 1
        v >>= 1
    lo = BUCKET_HINT[bits]
    while lo < ST_NBUCKETS - 1 and BUCKET_BOUNDS_US[lo] < us:
        lo += 1
    p[ST_LAT_COUNT] += 1
    p[ST_LAT_SUM_US] += us
    p[ST_HIST_BASE + lo] += 1


cdef void record_status(int64_t* p, int status) noexcept nogil:
    if 100 <= status <= 599:
        p[ST_CLASS_BASE + status // 100] += 1
        p[ST_CODE_BASE + status - 100] += 1
    else:
        p[ST_CLASS_BASE] += 1


cdef class StatBlock:

    def __getitem__(self, int slot):
        if not 0 <= slot < ST_BLOCK_SLOTS:
            raise IndexError(slot)
        return self.p[slot]

    def add(self, int slot, int64_t value=1):
        """Python-side increment (connection-setup paths, tests)."""
        if not 0 <= slot < ST_BLOCK_SLOTS:
            raise IndexError(slot)
        self.p[slot] += value

    def add_named(self, str name, int64_t value=1):
        self.p[SLOT_NAMES[name]] += value

    def observe(self, int64_t latency_us, status=None):
        """What the request path records for one finished request (tests, tools)."""
        record_latency(self.p, latency_us)
        if status is not None:
            record_status(self.p, status)


cdef enum:
    HDR_MAGIC = 0
    HDR_SLOTS = 1
    HDR_MAX = 2
    HDR_NEXT = 3
    HEADER_BYTES = 64


cdef class StatsArena:
    """The shared counter memory of one fastmesh instance (all its workers)."""
    cdef object _map
    cdef char* _base
    cdef readonly int max_blocks
    cdef Py_ssize_t _dir_off, _blocks_off
    cdef object _view

    def __cinit__(self, int max_blocks=4096):
        cdef Py_ssize_t size
        self.max_blocks = max_blocks
        self._dir_off = HEADER_BYTES
        self._blocks_off = HEADER_BYTES + <Py_ssize_t>max_blocks * DIR_ENTRY_BYTES
        size = self._blocks_off + <Py_ssize_t>max_blocks * ST_BLOCK_SLOTS * 8
        # Anonymous shared mapping: pages are zero and only touched pages cost memory.
        self._map = mmap.mmap(-1, size, flags=mmap.MAP_SHARED)
        self._view = memoryview(self._map)
        cdef const unsigned char[::1] mv = self._view
        self._base = <char*>&mv[0]
        cdef long long* hdr = <long long*>self._base
        hdr[HDR_MAGIC] = DEF_MAGIC
        hdr[HDR_SLOTS] = ST_BLOCK_SLOTS
        hdr[HDR_MAX] = max_blocks
        hdr[HDR_NEXT] = 0

    def alloc(self, str key):
        """A fresh block for `key` (e.g. '{"kind":"client","rt":"outgoing",...}')."""
        cdef long long* hdr = <long long*>self._base
        cdef long long idx = fm_fetch_add(&hdr[HDR_NEXT], 1)
        cdef bytes kb = key.encode("utf-8")
        cdef char* entry
        cdef StatBlock blk
        if idx >= self.max_blocks:
            raise MemoryError(f"stats arena full ({self.max_blocks} blocks)")
        if len(kb) >= KEY_BYTES:
            kb = kb[:KEY_BYTES - 1]
        entry = self._base + self._dir_off + idx * DIR_ENTRY_BYTES
        memset(entry + 8, 0, KEY_BYTES)
        memcpy(entry + 8, <char*>kb, len(kb))
        (<long long*>(entry + OWNER_OFFSET))[0] = os.getpid()
        fm_store_release(<long long*>entry, 1)
        blk = StatBlock.__new__(StatBlock)
        blk.p = <int64_t*>(self._base + self._blocks_off + idx * ST_BLOCK_SLOTS * 8)
        blk.arena = self
        blk.index = <int>idx
        blk.key = key
        return blk

    def snapshot(self):
        """{key: [slot values summed over every block with that key]} (all workers)."""
        cdef long long* hdr = <long long*>self._base
        cdef long long n = min(fm_load_acquire(&hdr[HDR_NEXT]), self.max_blocks)
        cdef long long i
        cdef int j
        cdef char* entry
        cdef int64_t* p
        cdef dict out = {}
        cdef list acc
        for i in range(n):
            entry = self._base + self._dir_off + i * DIR_ENTRY_BYTES
            if fm_load_acquire(<long long*>entry) != 1:
                continue
            key = (<bytes>(entry + 8)).decode("utf-8", "replace")
            p = <int64_t*>(self._base + self._blocks_off + i * ST_BLOCK_SLOTS * 8)
            acc = out.get(key)
            if acc is None:
                out[key] = [p[j] for j in range(ST_BLOCK_SLOTS)]
            else:
                for j in range(ST_BLOCK_SLOTS):
                    acc[j] += p[j]
        return out

    def retire(self, long long pid):
        """A worker died: its gauges (pending, connections) no longer hold; its counters
        stay, so totals keep counting what it served. Returns the blocks touched."""
        cdef long long* hdr = <long long*>self._base
        cdef long long n = min(fm_load_acquire(&hdr[HDR_NEXT]), self.max_blocks)
        cdef long long i
        cdef int touched = 0
        cdef char* entry
        cdef int64_t* p
        for i in range(n):
            entry = self._base + self._dir_off + i * DIR_ENTRY_BYTES
            if fm_load_acquire(<long long*>entry) != 1:
                continue
            if (<long long*>(entry + OWNER_OFFSET))[0] != pid:
                continue
            p = <int64_t*>(self._base + self._blocks_off + i * ST_BLOCK_SLOTS * 8)
            p[ST_PENDING] = 0
            p[ST_CONNECTIONS] = 0
            touched += 1
        return touched

    def keys(self):
        return [json.loads(k) for k in self.snapshot()]
