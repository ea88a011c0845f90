"""`fastmesh run|check|delegate|certs|demo|bench|hello|world|helloworld`.

Each subcommand lives in the module that owns its job; this file only wires argparse to
them and maps failures to exit codes (0 ok, 1 failure or invalid config, 2 usage error).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys


def _run(args: argparse.Namespace) -> int:
    from fastmesh.config import ConfigError, load_config
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"fastmesh: invalid config: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"fastmesh: cannot read config {args.config}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    workers = args.workers if args.workers is not None else default_workers()
    if workers < 1:
        print("fastmesh: --workers must be at least 1", file=sys.stderr)
        return 2
    if workers > 1:
        from fastmesh.workers import run_workers
        return run_workers(config, workers)
    return run_single(config)


def default_workers() -> int:
    """One event loop per CPU this process may run on (taskset/cgroup cpusets respected)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def run_single(config, *, arena=None, reuse_port: bool = False, admin: bool = True,
               ready_fd: int | None = None, workers: int = 1) -> int:
    """Run one event loop with every router (and the admin server unless `admin=False`)."""
    import uvloop
    from fastmesh.config import ConfigError
    from fastmesh.linker import Linker

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        linker = Linker.build(config, loop, arena, workers=workers)
    except ConfigError as exc:
        print(f"fastmesh: invalid config: {exc}", file=sys.stderr)
        return 1
    try:
        loop.run_until_complete(linker.start(reuse_port=reuse_port, admin=admin))
    except OSError as exc:
        print(f"fastmesh: cannot listen: {exc}", file=sys.stderr)
        return 1
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, linker.request_shutdown, None)
    addrs = ", ".join(f"{rs.router} {rs.ip}:{rs.port}{' (tls)' if rs.tls else ''}"
                      for rs in linker.servers)
    logging.getLogger("fastmesh").info("serving %s; admin %s:%d", addrs,
                                       config.admin.ip, config.admin.port)
    if ready_fd is not None:
        os.write(ready_fd, b"ready\n")
    try:
        loop.run_until_complete(linker.serve_until_shutdown())
    finally:
        loop.close()
    return 0


def _check(args: argparse.Namespace) -> int:
    """The config checks, then what `run` would refuse (unsupported kinds and keys, namer
    directories, TLS files) — still without binding a port."""
    from fastmesh.config import ConfigError, load_config, run_check
    from fastmesh.linker import validate
    try:
        config = load_config(args.config)
    except (ConfigError, OSError):
        return run_check(args)  # reports the error in its own format
    try:
        validate(config)
    except ConfigError as exc:
        print(f"fastmesh: invalid config: {exc}", file=sys.stderr)
        return 1
    return run_check(args)


def _delegate(args: argparse.Namespace) -> int:
    from fastmesh.delegate_cmd import run_delegate
    return run_delegate(args)


def _demo(args: argparse.Namespace) -> int:
    from fastmesh.demo import run_demo
    return run_demo(once=args.once, workdir=args.workdir, loopback=args.loopback)


def _bench(args: argparse.Namespace) -> int:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.isdir(os.path.join(root, "benchmarks")):
        print("fastmesh bench runs from a source checkout (the benchmarks/ directory)",
              file=sys.stderr)
        return 1
    sys.path.insert(0, root)
    from benchmarks.run import main as bench_main
    return bench_main(args.bench_args)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI; `only="run"` builds just that subcommand, so the proxy process does
    not import what other subcommands need (`certs` pulls in cryptography: ~10 MB RSS)."""
    p = argparse.ArgumentParser(prog="fastmesh", description=__doc__.splitlines()[0])
    p.add_argument("--log-level", default=os.environ.get("FASTMESH_LOG", "info"))
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run routers and admin from a linkerd 1.x config")
    run.add_argument("config", help="YAML or JSON config file, '-' for stdin")
    run.add_argument("--workers", type=int, default=None,
                     help="event-loop processes sharing the ports (SO_REUSEPORT); "
                          "default: the CPUs this process may run on")
    run.set_defaults(func=_run)
    if only == "run":
        return p

    from fastmesh.config import add_check_arguments
    check = sub.add_parser("check", help="validate a config without binding ports")
    add_check_arguments(check)
    check.set_defaults(func=_check)

    from fastmesh.delegate_cmd import add_delegate_arguments
    dlg = sub.add_parser("delegate", help="show how a path delegates through a dtab")
    add_delegate_arguments(dlg)
    dlg.set_defaults(func=_delegate)

    from fastmesh import certs
    c = sub.add_parser("certs", help="generate a mesh CA and certificates")
    certs.add_arguments(c)
    c.set_defaults(func=certs.run)

    d = sub.add_parser("demo", help="run a two-node mesh with hello and world on this machine")
    d.add_argument("--once", action="store_true",
                   help="exit after the check (non-zero if it failed) instead of serving")
    d.add_argument("--workdir", help="where certs, configs and logs go (default: a temp dir)")
    d.add_argument("--loopback", action="store_true",
                   help="use 127.0.0.x addresses even where network namespaces work")
    d.set_defaults(func=_demo)

    b = sub.add_parser("bench", help="hello→world benchmark beside Envoy/nginx (source checkout)")
    b.add_argument("bench_args", nargs=argparse.REMAINDER)
    b.set_defaults(func=_bench)

    try:
        from fastmesh.apps import helloworld
    except ImportError:  # pragma: no cover - during bring-up
        return p
    for name, preset in (("helloworld", None), ("hello", "hello"), ("world", "world")):
        h = sub.add_parser(name, help=f"the {name} sample app")
        helloworld.add_arguments(h, preset=preset) if preset else helloworld.add_arguments(h)
        h.set_defaults(func=helloworld.run)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    words = [a for a in argv if not a.startswith("-")]
    only = "run" if words[:1] == ["run"] and "-h" not in argv and "--help" not in argv else None
    args = build_parser(only).parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
