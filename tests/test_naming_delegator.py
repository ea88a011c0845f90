"""Delegation trees for /delegator.json and the CLI (spec §8.4, §3.5)."""

import json

import pytest

from fastmesh.naming import (
    PENDING,
    Closable,
    Dtab,
    Interpreter,
    Neg,
    Path,
    build_transformer,
    delegate,
    delegation_to_cli_json,
    format_delegation,
)
from fastmesh.namers import build_namer

P = Path.read


class FailingNamer:
    """A namer whose backend is down: every lookup raises."""

    def __init__(self, prefix):
        self.prefix = P(prefix)

    def lookup(self, path):
        raise RuntimeError(f"cannot reach backend for /#{self.prefix.show}{path.show}")

    def add_listener(self, cb):
        return Closable()


class PendingNamer:
    def __init__(self, prefix):
        self.prefix = P(prefix)

    def lookup(self, path):
        return PENDING

    def add_listener(self, cb):
        return Closable()


def compact(obj):
    return json.dumps(obj, separators=(",", ":"))


DTAB = Dtab.read("""
    /down   => /#/down ;
    /pets/cat => /$/inet/127.1/7001 ;
    /zoo    => /pets | /down | /$/fail ;
    /zoo    => /birds ;
    /start  => /zoo ;
    /lost   => /nowhere ;
    /never  => ~ ;
    /deny   => ! ;
    /blank  => /$/nil ;
""")


def test_every_alternate_is_evaluated_and_shown():
    d = delegate(DTAB, P("/start/cat"), Interpreter([FailingNamer("/down")]))
    assert compact(d.to_delegator_json()) == compact({
        "type": "delegate", "path": "/start/cat",
        "delegate": {
            "type": "alt", "path": "/zoo/cat", "dentry": {"prefix": "/start", "dst": "/zoo"},
            "alt": [
                # later dentry first; a path nothing answers shows as neg with its path
                {"type": "neg", "path": "/birds/cat", "dentry": {"prefix": "/zoo", "dst": "/birds"}},
                {"type": "delegate", "path": "/pets/cat",
                 "dentry": {"prefix": "/zoo", "dst": "/pets | /down | /$/fail"},
                 "delegate": {
                     "type": "leaf", "path": "/$/inet/127.1/7001",
                     "dentry": {"prefix": "/pets/cat", "dst": "/$/inet/127.1/7001"},
                     "bound": {"addr": {"type": "bound", "addrs": [{"ip": "127.0.0.1", "port": 7001, "meta": {}}],
                                        "meta": {}},
                               "id": "/$/inet/127.1/7001", "path": "/"}}},
                {"type": "delegate", "path": "/down/cat",
                 "dentry": {"prefix": "/zoo", "dst": "/pets | /down | /$/fail"},
                 "delegate": {"type": "exception", "path": "/#/down/cat",
                              "dentry": {"prefix": "/down", "dst": "/#/down"},
                              "message": "cannot reach backend for /#/down/cat"}},
                {"type": "fail", "path": "/$/fail/cat",
                 "dentry": {"prefix": "/zoo", "dst": "/pets | /down | /$/fail"}},
            ]}})
    # Routing itself takes the first non-negative branch and never asks the broken namer.
    assert d.bound_show == "/$/inet/127.1/7001"
    assert d.ok


NODE_CASES = [
    ("/lost", {"type": "delegate", "path": "/lost",
               "delegate": {"type": "neg", "path": "/nowhere", "dentry": {"prefix": "/lost", "dst": "/nowhere"}}}),
    ("/never", {"type": "delegate", "path": "/never",
                "delegate": {"type": "neg", "path": "~", "dentry": {"prefix": "/never", "dst": "~"}}}),
    # a delegate whose child keeps its path collapses into the child
    ("/deny/x", {"type": "fail", "path": "!", "dentry": {"prefix": "/deny", "dst": "!"}}),
    ("/blank/x", {"type": "delegate", "path": "/blank/x",
                  "delegate": {"type": "empty", "path": "/$/nil/x", "dentry": {"prefix": "/blank", "dst": "/$/nil"}}}),
    ("/unknown", {"type": "neg", "path": "/unknown"}),
    ("/$/inet/127.1/9/res", {"type": "leaf", "path": "/$/inet/127.1/9/res",
                             "bound": {"addr": {"type": "bound",
                                                "addrs": [{"ip": "127.0.0.1", "port": 9, "meta": {}}], "meta": {}},
                                       "id": "/$/inet/127.1/9", "path": "/res"}}),
    ("/$/nope/x", {"type": "exception", "path": "/$/nope/x", "message": "Unknown namer: nope for path: /$/nope/x"}),
]


@pytest.mark.parametrize("path,expected", NODE_CASES)
def test_node_shapes(path, expected):
    d = delegate(DTAB, P(path), Interpreter())
    assert d.to_delegator_json() == expected


def test_union_node_and_weights():
    dtab = Dtab.read("/svc => 0.25*/$/inet/127.1/1 & 0.75*/$/inet/127.1/2")
    d = delegate(dtab, P("/svc"), Interpreter())
    union = d.to_delegator_json()  # the root delegate collapses: same path
    assert union["type"] == "union" and union["path"] == "/svc"
    assert union["dentry"] == {"prefix": "/svc", "dst": "0.25*/$/inet/127.1/1 & 0.75*/$/inet/127.1/2"}
    assert [m["weight"] for m in union["union"]] == [0.25, 0.75]
    assert [m["tree"]["bound"]["id"] for m in union["union"]] == ["/$/inet/127.1/1", "/$/inet/127.1/2"]
    assert d.bound_show == "0.25*/$/inet/127.1/1 & 0.75*/$/inet/127.1/2"


def test_transformation_nodes(tmp_path):
    (tmp_path / "web").write_text("10.1.1.5 8080\n")
    fs = build_namer("io.l5d.fs", {"rootDir": str(tmp_path)})
    port = build_transformer("io.l5d.port", {"port": 4141})
    interp = Interpreter([fs], [port])
    d = delegate(Dtab.read("/svc => /#/io.l5d.fs"), P("/svc/web"), interp)
    tree = d.to_delegator_json()
    node = tree["delegate"]
    assert node["type"] == "transformation"
    assert node["name"] == "PortTransformer"
    assert node["path"] == "/#/io.l5d.fs/web"
    assert node["bound"]["id"] == "/#/io.l5d.fs/web"
    assert node["bound"]["addr"]["addrs"] == [{"ip": "10.1.1.5", "port": 8080, "meta": {}}]
    after = node["tree"]
    assert after["type"] == "leaf" and after["path"] == "/%/io.l5d.port/4141/#/io.l5d.fs/web"
    assert after["bound"]["addr"]["addrs"] == [{"ip": "10.1.1.5", "port": 4141, "meta": {}}]
    assert d.bound_show == "/%/io.l5d.port/4141/#/io.l5d.fs/web"
    assert interp.delegatable
    assert not Interpreter([], [build_transformer("io.l5d.replace", {"path": "/$/inet/127.1/1"})]).delegatable


def test_fs_failed_and_weighted_addresses_in_json(tmp_path):
    (tmp_path / "bad").write_text("not an address\n")
    (tmp_path / "w").write_text("127.0.0.1 80 * 2.5\n")
    fs = build_namer("io.l5d.fs", {"rootDir": str(tmp_path)})
    interp = Interpreter([fs])
    bad = delegate(Dtab.empty, P("/#/io.l5d.fs/bad"), interp).to_delegator_json()
    assert bad["bound"]["addr"] == {"type": "failed", "cause": "malformed address: not an address"}
    w = delegate(Dtab.empty, P("/#/io.l5d.fs/w"), interp).to_delegator_json()
    assert w["bound"]["addr"]["addrs"] == [{"ip": "127.0.0.1", "port": 80, "meta": {"weight": 2.5}}]


def test_loop_fails_delegation_with_its_own_message():
    dtab = Dtab.read("/foo/bar => /bar/foo; /bar/foo => /foo/bar")
    d = delegate(dtab, P("/foo/bar"), Interpreter())
    assert d.error == "Max recursion level reached."
    assert d.to_delegator_json() == {"type": "exception", "path": "/foo/bar", "message": "Max recursion level reached."}
    assert d.bind.error == "Max recursion level: 100 reached in Namer lookup"
    assert not d.ok


def test_pending_is_reported():
    d = delegate(Dtab.read("/svc => /#/slow"), P("/svc/x"), Interpreter([PendingNamer("/slow")]))
    assert d.pending and d.bind.pending and not d.ok


def test_cli_steps_text_and_json():
    dtab = Dtab.read("/srv => /$/inet/127.1; /host => /srv; /svc => /host; /host/world => /srv/8080")
    d = delegate(dtab, P("/svc/world"), Interpreter())
    assert d.steps == [
        "/svc/world",
        "  /host/world (/svc=>/host) alternates, first non-neg wins:",
        "    /srv/8080 (/host/world=>/srv/8080)",
        "      /$/inet/127.1/8080 (/srv=>/$/inet/127.1) => bound /$/inet/127.1/8080 residual / addresses [127.0.0.1:8080]",
        "    /srv/world (/host=>/srv)",
        "      /$/inet/127.1/world (/srv=>/$/inet/127.1) => error: Unknown namer: inet for path: /$/inet/127.1/world",
    ]
    assert delegation_to_cli_json(d) == {
        "path": "/svc/world", "steps": d.steps, "bound": "/$/inet/127.1/8080", "residual": "/",
    }
    text = format_delegation(d)
    assert text.startswith("delegating /svc/world\n")
    assert "bound: /$/inet/127.1/8080\n" in text
    assert "residual: /\n" in text


def test_cli_neg_and_residual():
    d = delegate(Dtab.read("/svc => /$/inet/127.1/80"), P("/svc/a/b"), Interpreter())
    assert d.residual.show == "/a/b" and d.bound_show == "/$/inet/127.1/80"
    none = delegate(Dtab.empty, P("/svc/a"), Interpreter())
    assert none.bound_show == "~" and none.tree is Neg and not none.ok
