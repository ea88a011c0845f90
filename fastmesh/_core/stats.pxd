# Counters and latency histograms kept in plain int64 slots of a shared mapping.
# The per-request path only does `blk.p[ST_X] += 1`; prometheus_client reads the slots
# at scrape time (no lock, no Python metric object per request).

from libc.stdint cimport int64_t

cdef extern from *:
    """
    #ifndef FASTMESH_STATS
    #define FASTMESH_STATS 1
    #endif
    """
    const int FASTMESH_STATS    # 0 when built with FASTMESH_NO_STATS=1 (cost benchmark)


cdef enum:  # StatSlot: offsets into a StatBlock
    ST_REQUESTS = 0
    ST_SUCCESS
    ST_FAILURES
    ST_PENDING            # gauge: requests in flight
    ST_CONNECTIONS        # gauge: open connections
    ST_CONNECTS
    ST_CONNECT_FAILURES
    ST_CLOSES
    ST_RECV_BYTES
    ST_SENT_BYTES
    ST_POOL_HITS          # request served on a pooled (reused) upstream connection
    ST_POOL_MISSES        # request had to open a new upstream connection
    ST_TLS_HANDSHAKES
    ST_TLS_FAILURES
    ST_REQUEUES
    ST_ERRORS             # requests answered by fastmesh itself (l5d-err)
    ST_ROUTE_MISSES       # router block: route-cache misses (names bound by Python)
    ST_ROUTE_OVERRIDES    # router block: requests bound uncached (l5d-dtab overrides)
    ST_ROUTE_REFRESHES    # router block: cached routes re-bound after a namer change
    ST_RETRIES            # service block: retries (classifier said retryable, budget allowed)
    ST_BUDGET_EXHAUSTED   # service block: a retry the budget refused
    ST_TIMEOUTS           # requests answered 503 because totalTimeoutMs/attempt timeout fired
    ST_LAT_COUNT
    ST_LAT_SUM_US
    ST_CLASS_BASE         # +0 error, +1..+5 = 1XX..5XX
    ST_CODE_BASE = ST_CLASS_BASE + 6      # + (code - 100), codes 100..599
    ST_HIST_BASE = ST_CODE_BASE + 500     # latency buckets, see BUCKET_BOUNDS_US
    ST_NBUCKETS = 40
    ST_BLOCK_SLOTS = ST_HIST_BASE + ST_NBUCKETS


cdef enum:  # arena layout
    KEY_BYTES = 496        # a block's key (JSON text), NUL-padded
    OWNER_OFFSET = 504     # int64 pid of the process that writes the block
    DIR_ENTRY_BYTES = 512  # int64 state word + key + owner pid


cdef class StatBlock:
    # One scope's counters (a server, a client, a service). Written by exactly one
    # process (the worker that allocated it); summed by key at scrape time.
    cdef int64_t* p
    cdef readonly object arena     # keeps the mapping alive while the block is used
    cdef readonly int index
    cdef readonly str key


cdef int64_t now_us() noexcept nogil
cdef void record_latency(int64_t* p, int64_t us) noexcept nogil
cdef void record_status(int64_t* p, int status) noexcept nogil
