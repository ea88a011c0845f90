"""`fastmesh delegate [--config C --router LABEL] [--dtab DTAB] [--json] PATH`.

Role: the command-line twin of the admin `/delegator.json` (same code, fastmesh.naming's
`delegate`): how one name resolves through a dtab and namers, step by step. Not on the
request path.

Text output: a header, every rewriting step (indented by depth, each with the dentry that
produced it), the residual and the addresses of each bound name, and on the **last line
the final bound tree alone** in finagle's show syntax (`/$/inet/10.0.0.1/8080`, `~`, `!`,
`$`, `a | b`, `0.30*/a & 0.70*/b`), so `| tail -n1` gives a parseable tree.
`--json` prints one object `{"path", "steps": [...], "bound", "residual"}` instead.

Exit status: 0 when the tree binds to at least one address; 1 when it is neg, fail, empty,
an error, or has no addresses (also: an invalid or unsupported --config); 2 on a parse
error of PATH or --dtab (the message names the argument and the offset) or an unknown
--router label.
"""

from __future__ import annotations

import argparse
import json
import sys

EXIT_BOUND, EXIT_UNBOUND, EXIT_PARSE = 0, 1, 2
EXIT_CONFIG = EXIT_UNBOUND  # like `fastmesh run`: an invalid config exits 1
EXIT_USAGE = EXIT_PARSE     # argparse's convention for a bad argument


def add_delegate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="the name to delegate, e.g. /svc/world")
    parser.add_argument("--config", help="a fastmesh/linkerd config: use a router's dtab and namers")
    parser.add_argument("--router", help="router label in --config (default: the first router)")
    parser.add_argument("--dtab", default="", help="dtab entries appended after the router's dtab")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _fail(message: str, code: int) -> int:
    print(f"fastmesh delegate: {message}", file=sys.stderr)
    return code


def run_delegate(args: argparse.Namespace) -> int:
    from fastmesh.naming import Dtab, Interpreter, ParseError, Path, delegate

    # Parse the user's own input first: a typo there is reported even with a bad config.
    try:
        path = Path.read(args.path)
    except ParseError as exc:
        return _fail(f"invalid path (at offset {exc.offset}): {exc}", EXIT_PARSE)
    try:
        extra = Dtab.read(args.dtab or "")
    except ParseError as exc:
        return _fail(f"invalid --dtab (at offset {exc.offset}): {exc}", EXIT_PARSE)

    base = Dtab.empty
    interpreter = Interpreter([], [])
    namers: list = []
    if args.router and not args.config:
        return _fail("--router needs --config", EXIT_USAGE)
    if args.config:
        from fastmesh.config import ConfigError, load_config
        from fastmesh.linker import build_namers, build_transformers
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            return _fail(f"invalid config: {exc}", EXIT_CONFIG)
        except OSError as exc:
            return _fail(f"cannot read config {args.config}: {exc.strerror or exc}", EXIT_CONFIG)
        labels = [r.label for r in config.routers]
        index = 0
        if args.router:
            if args.router not in labels:
                return _fail(f"no router {args.router!r} in {args.config} (have: {', '.join(labels)})",
                             EXIT_USAGE)
            index = labels.index(args.router)
        rc = config.routers[index]
        try:
            namers = build_namers(config)   # io.l5d.fs scans its directory once, here
            interpreter = Interpreter(namers, build_transformers(rc, index))
        except ConfigError as exc:
            for namer in namers:
                namer.close()
            return _fail(f"invalid config: {exc}", EXIT_CONFIG)
        base = rc.dtab.parsed
    try:
        result = delegate(base + extra, path, interpreter)
    finally:
        for namer in namers:
            namer.close()
    if args.json:
        from fastmesh.naming import delegation_to_cli_json
        print(json.dumps(delegation_to_cli_json(result)))
    else:
        sys.stdout.write(render_text(result))
    return EXIT_BOUND if result.ok else EXIT_UNBOUND


def render_text(result) -> str:
    """The human-readable delegation; the last line is the bound tree alone."""
    from fastmesh.naming.delegator import addr_text

    lines = [f"delegating {result.path.show}"]
    lines.append(f"dtab: {result.dtab.show}" if result.dtab else "dtab: (empty)")
    lines.append("steps:")
    lines.extend("  " + step for step in result.steps)
    if result.bind.error is not None:
        lines.append(f"error: {result.bind.error}")
    elif result.bind.pending:
        lines.append("pending: a namer has no answer yet")
    lines.append(f"residual: {result.residual.show}")
    for name in result.bind.bound_names():
        lines.append(f"addresses of {name.id.show}: {addr_text(name.addr.value)}")
    lines.append(result.bound_show)
    return "\n".join(lines) + "\n"
