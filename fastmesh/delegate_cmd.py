"""`fastmesh delegate [--config C --router LABEL] [--dtab DTAB] [--json] PATH`.

Prints every rewriting step, then the final bound tree in finagle's show syntax on the
last line. Exit 0 when the tree binds to at least one address, 1 when it is neg, fail or
empty, 2 on a parse error (the message names the position).
"""

from __future__ import annotations

import argparse
import json
import sys

EXIT_BOUND, EXIT_UNBOUND, EXIT_PARSE = 0, 1, 2


def add_delegate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="the name to delegate, e.g. /svc/world")
    parser.add_argument("--config", help="a fastmesh/linkerd config: use a router's dtab and namers")
    parser.add_argument("--router", help="router label in --config (default: the first router)")
    parser.add_argument("--dtab", default="", help="dtab entries appended after the router's dtab")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run_delegate(args: argparse.Namespace) -> int:
    from fastmesh.naming import Dtab, Interpreter, ParseError, Path, delegate
    from fastmesh.naming import delegation_to_cli_json, format_delegation

    base = Dtab.empty
    interpreter = Interpreter([], [])
    namers = []
    if args.config:
        from fastmesh.config import ConfigError, load_config
        from fastmesh.linker import build_namers, build_transformers
        try:
            config = load_config(args.config)
            routers = list(config.routers)
            index = 0
            if args.router:
                labels = [r.label for r in routers]
                if args.router not in labels:
                    print(f"fastmesh delegate: no router {args.router!r} (have: {', '.join(labels)})",
                          file=sys.stderr)
                    return EXIT_UNBOUND
                index = labels.index(args.router)
            rc = routers[index]
            namers = build_namers(config)
            for namer in namers:
                if hasattr(namer, "load_now"):
                    namer.load_now()
            interpreter = Interpreter(namers, build_transformers(rc, index))
            base = rc.dtab.parsed
        except ConfigError as exc:
            print(f"fastmesh delegate: invalid config: {exc}", file=sys.stderr)
            return EXIT_UNBOUND
    try:
        path = Path.read(args.path)
        dtab = base + Dtab.read(args.dtab or "")
    except ParseError as exc:
        print(f"fastmesh delegate: {exc}", file=sys.stderr)
        return EXIT_PARSE
    try:
        result = delegate(dtab, path, interpreter)
    finally:
        for namer in namers:
            namer.close()
    if args.json:
        print(json.dumps(delegation_to_cli_json(result)))
    else:
        print(format_delegation(result))
    return EXIT_BOUND if result.ok else EXIT_UNBOUND
