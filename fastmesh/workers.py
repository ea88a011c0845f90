"""`fastmesh run --workers N`: N event-loop processes on SO_REUSEPORT listeners.

The parent creates the shared stats arena, forks the workers (each runs every router on
its own uvloop, binding the same ports with SO_REUSEPORT so the kernel spreads
connections), then serves the admin port itself: a scrape there reads every worker's
counters from the shared arena, so one scrape shows the sum of all workers. Each worker
watches the namers on its own (route updates need no cross-process messages). A worker
that dies is restarted; SIGTERM/SIGINT stop them all gracefully.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time

log = logging.getLogger("fastmesh.workers")


def _fork_worker(config, arena, index: int, count: int) -> int:
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            _die_with_parent()
            from fastmesh._core import pool
            pool.reseed()
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent coordinates shutdown
            from fastmesh.cli import run_single
            code = run_single(config, arena=arena, reuse_port=True, admin=False, workers=count)
        except BaseException:
            logging.getLogger("fastmesh").exception("worker %d crashed", index)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def _die_with_parent() -> None:
    """Linux: a worker gets SIGTERM when the parent dies, so none is left orphaned."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def run_workers(config, n: int) -> int:
    import uvloop
    from fastmesh._core.stats import StatsArena
    from fastmesh.config import ConfigError
    from fastmesh.linker import Linker

    # Validate once, before forking, so a bad config is reported once (not per worker).
    from fastmesh.linker import validate
    try:
        validate(config)
    except ConfigError as exc:
        print(f"fastmesh: invalid config: {exc}", file=sys.stderr)
        return 1
    arena = StatsArena()
    workers: dict[int, int] = {}
    for i in range(n):
        workers[_fork_worker(config, arena, i, n)] = i

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    stopping = False
    try:
        # The parent's Linker binds no router ports: it serves admin (metrics from the
        # shared arena, delegator with its own namers).
        linker = Linker.build(config, loop, arena)
        linker.servers = []
        loop.run_until_complete(linker.start(admin=True))
    except ConfigError as exc:
        print(f"fastmesh: invalid config: {exc}", file=sys.stderr)
        for pid in workers:
            os.kill(pid, signal.SIGTERM)
        return 1
    except OSError as exc:
        print(f"fastmesh: cannot listen: {exc}", file=sys.stderr)
        for pid in workers:
            os.kill(pid, signal.SIGTERM)
        return 1

    def stop(*_):
        nonlocal stopping
        stopping = True
        for pid in list(workers):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if linker._shutdown is None or not linker._shutdown.is_set():
            linker.request_shutdown(None)

    def reap() -> None:
        # Restart a worker that died while we were not stopping (bounded: 1/s).
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            index = workers.pop(pid, None)
            arena.retire(pid)
            if index is not None and not stopping:
                log.warning("worker %d (pid %d) exited with status %s; restarting", index, pid,
                            status)
                workers[_fork_worker(config, arena, index, n)] = index

    loop.add_signal_handler(signal.SIGTERM, stop)
    loop.add_signal_handler(signal.SIGINT, stop)

    def reap_periodically() -> None:
        # uvloop keeps SIGCHLD for itself, so workers are reaped by polling.
        reap()
        if not stopping:
            loop.call_later(0.5, reap_periodically)

    loop.call_later(0.5, reap_periodically)
    try:
        loop.run_until_complete(linker.serve_until_shutdown())
        stop()  # also when /admin/shutdown asked the parent to stop
        deadline = time.monotonic() + config.admin.shutdown_grace_ms / 1000.0 + 5.0
        while workers and time.monotonic() < deadline:
            reap()
            time.sleep(0.05)
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
    finally:
        loop.close()
    return 0
