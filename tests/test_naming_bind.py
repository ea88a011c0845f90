"""Binding: dtab rewriting, namer precedence, /$ built-ins, depth limit, transformers
(spec §2.2, §3.5–§3.7, §5.4, §6.2)."""

import os
import time

import pytest

from fastmesh.errors import NotSupportedError
from fastmesh.naming import (
    PENDING,
    Address,
    AddrBound,
    AddrFailed,
    AddrNeg,
    BoundName,
    Closable,
    Dtab,
    Empty,
    Fail,
    Interpreter,
    Leaf,
    Neg,
    Path,
    Union,
    build_transformer,
    lookup_builtin,
)
from fastmesh.naming.addr import AddrVar
from fastmesh.namers import build_namer

P = Path.read


class TableNamer:
    """A namer answering from a table: path → tree, PENDING, or an exception to raise.

    It stands in for discovery backends fastmesh cannot run here; it speaks the same
    protocol the interpreter uses with the real fs namer (tested below too).
    """

    def __init__(self, prefix, table):
        self.prefix = P(prefix)
        self.table = {P(k): v for k, v in table.items()}
        self.asked = []

    def lookup(self, path):
        self.asked.append(path)
        for key, value in self.table.items():
            if path.startswith(key):
                if isinstance(value, Exception):
                    raise value
                if value is PENDING or value is Neg:
                    return value
                return Leaf(BoundName(P("/#") + self.prefix + key, AddrVar(value), path.drop(len(key))))
        return Neg

    def add_listener(self, cb):
        return Closable()


def bound1(host, port):
    return AddrBound.of(Address(host, port))


def bind(dtab, path, namers=(), transformers=()):
    return Interpreter(namers, transformers).bind(Dtab.read(dtab), P(path))


def only_leaf(result):
    assert result.ok, result
    assert isinstance(result.tree, Leaf), result.tree
    return result.tree.value


def addrs(bound):
    value = bound.addr.value
    assert isinstance(value, AddrBound), value
    return sorted(a.show for a in value.addresses)


# --- /$ built-ins ---------------------------------------------------------------------------------

INET_CASES = [
    # path, id, residual, addresses
    ("/$/inet/127.1/8080", "/$/inet/127.1/8080", "/", ["127.0.0.1:8080"]),
    ("/$/inet/127.1/8080/ya", "/$/inet/127.1/8080", "/ya", ["127.0.0.1:8080"]),
    ("/$/inet/10.1.2/80", "/$/inet/10.1.2/80", "/", ["10.1.0.2:80"]),
    ("/$/inet/1234/foobar", "/$/inet/1234", "/foobar", ["127.0.0.1:1234"]),  # port-only form
    ("/$/inet/8080/9090", "/$/inet/8080/9090", "/", ["0.0.31.144:9090"]),  # host form first
    ("/$/inet/localhost/80/a/b", "/$/inet/localhost/80", "/a/b", ["localhost:80"]),  # names resolve at connect
    ("/$/fixedinet/127.0.0.1/8888", "/$/fixedinet/127.0.0.1/8888", "/", ["127.0.0.1:8888"]),
    ("/$/io.buoyant.rinet/8080/127.1/res", "/$/io.buoyant.rinet/8080/127.1", "/res", ["127.0.0.1:8080"]),
]


@pytest.mark.parametrize("path,ident,residual,expected", INET_CASES)
def test_inet_names(path, ident, residual, expected):
    b = only_leaf(bind("", path))
    assert (b.id.show, b.residual.show, addrs(b)) == (ident, residual, expected)


def test_inet_port_out_of_range_is_a_failed_address():
    b = only_leaf(bind("", "/$/inet/127.1/70000"))
    assert b.addr.value == AddrFailed("port out of range:70000")


SPECIAL_CASES = [
    ("/$/fail", Fail),
    ("/$/fail/x/y", Fail),
    ("/$/nil/x", Empty),
    ("/$", Neg),
    ("/$/io.buoyant.rinet/8080", Neg),
    ("/#/nothing/here", Neg),
    ("/plain", Neg),
]


@pytest.mark.parametrize("path,tree", SPECIAL_CASES)
def test_special_names(path, tree):
    result = bind("", path)
    assert result.ok and result.tree is tree


UNKNOWN_CASES = [
    ("/$/inet", "Unknown namer: inet for path: /$/inet"),
    ("/$/inet/onlyhost", "Unknown namer: inet for path: /$/inet/onlyhost"),
    ("/$/com.example.Nope/a", "Unknown namer: com.example.Nope for path: /$/com.example.Nope/a"),
]


@pytest.mark.parametrize("path,message", UNKNOWN_CASES)
def test_unknown_builtin_fails_like_linkerd(path, message):
    result = bind("", path)
    assert result.error == message and result.tree is Neg and not result.ok


REWRITE_CASES = [
    ("/$/io.buoyant.hostportPfx/pfx/web:8080/etc", "/pfx/web/8080/etc"),
    ("/$/io.buoyant.porthostPfx/pfx/web:8080/etc", "/pfx/8080/web/etc"),
    ("/$/io.buoyant.porthostPfx/pfx/web:http", "/pfx/http/web"),  # named port
    ("/$/io.buoyant.hostportPfx/pfx/a:b:c", None),  # two colons
    ("/$/io.buoyant.hostportPfx/pfx/web:HTTP", None),  # not a DNS label
    ("/$/io.buoyant.hostportPfx/pfx/web", None),
    ("/$/io.buoyant.hostportPfx/pfx", None),
    ("/$/io.buoyant.http.domainToPathPfx/pfx/foo.buoyant.io/r", "/pfx/io/buoyant/foo/r"),
    ("/$/io.buoyant.http.subdomainOfPfx/buoyant.io/pfx/foo.buoyant.io:8080/r", "/pfx/foo/r"),
    ("/$/io.buoyant.http.subdomainOfPfx/buoyant.io/pfx/foo.example.com", None),
    ("/$/io.buoyant.http.anyMethodPfx/pfx/GET/x", "/pfx/x"),
    ("/$/io.buoyant.http.anyHostPfx/pfx/foo.com/x", "/pfx/x"),
]


@pytest.mark.parametrize("path,rewritten", REWRITE_CASES)
def test_rewriting_builtins(path, rewritten):
    tree = lookup_builtin(P(path))
    if rewritten is None:
        assert tree is Neg
    else:
        assert tree == Leaf(P(rewritten))


def test_rewriters_recurse_through_the_dtab():
    # linkerd's proxy.yaml pattern: split host:port, then route to inet.
    dtab = "/hp => /$/inet; /svc => /$/io.buoyant.hostportPfx/hp"
    b = only_leaf(bind(dtab, "/svc/127.1:7777/rest"))
    assert (b.id.show, b.residual.show, addrs(b)) == ("/$/inet/127.1/7777", "/rest", ["127.0.0.1:7777"])


# --- the rewriting walk ---------------------------------------------------------------------------

def test_residual_accumulates_through_rewrites():
    b = only_leaf(bind("/srv => /$/inet/127.1/9; /svc => /srv", "/svc/a/b"))
    assert b.id.show == "/$/inet/127.1/9" and b.residual.show == "/a/b"


def test_later_dentries_win_and_earlier_ones_are_fallbacks():
    dtab = "/svc => /$/inet/127.1/1; /svc => /$/inet/127.1/2"
    assert addrs(only_leaf(bind(dtab, "/svc/x"))) == ["127.0.0.1:2"]
    dtab = "/svc => /$/inet/127.1/1; /svc => /nowhere"
    assert addrs(only_leaf(bind(dtab, "/svc/x"))) == ["127.0.0.1:1"]


def test_override_order_base_then_ctx_then_user():
    base = Dtab.read("/svc => /$/inet/127.1/1")
    ctx = Dtab.read("/svc => /$/inet/127.1/2")
    user = Dtab.read("/svc => /$/inet/127.1/3")
    interp = Interpreter()
    assert addrs(only_leaf(interp.bind(base + ctx + user, P("/svc/a")))) == ["127.0.0.1:3"]
    assert addrs(only_leaf(interp.bind(base + ctx, P("/svc/a")))) == ["127.0.0.1:2"]
    # A user override that finds nothing falls back to the ctx one, then the base.
    miss = Dtab.read("/svc => /gone")
    assert addrs(only_leaf(interp.bind(base + ctx + miss, P("/svc/a")))) == ["127.0.0.1:2"]


def test_blog_dtab_with_fs_namer(tmp_path):
    (tmp_path / "world-v1").write_text("10.1.1.5 8080\n")
    (tmp_path / "hello").write_text("10.1.1.6 8080\n")
    fs = build_namer("io.l5d.fs", {"rootDir": str(tmp_path)})
    dtab = "/srv => /#/io.l5d.fs; /host => /srv; /svc => /host; /host/world => /srv/world-v1;"
    world = only_leaf(bind(dtab, "/svc/world", [fs]))
    assert world.id.show == "/#/io.l5d.fs/world-v1" and addrs(world) == ["10.1.1.5:8080"]
    hello = only_leaf(bind(dtab, "/svc/hello", [fs]))
    assert hello.id.show == "/#/io.l5d.fs/hello"
    assert bind(dtab, "/svc/nobody", [fs]).tree is Neg


ALT_CASES = [
    ("/a => ~ | /$/inet/127.1/1", ["127.0.0.1:1"]),
    ("/a => /nowhere | /$/inet/127.1/2 | /$/inet/127.1/3", ["127.0.0.1:2"]),
    ("/a => /$/nil | /$/inet/127.1/2", "empty"),  # Empty is an answer, not a miss
    ("/a => /$/fail | /$/inet/127.1/2", "fail"),  # Fail stops the search
    ("/a => ~ | ~", "neg"),
]


@pytest.mark.parametrize("dtab,expected", ALT_CASES)
def test_alternates(dtab, expected):
    result = bind(dtab, "/a")
    assert result.ok
    if expected == "empty":
        assert result.tree is Empty
    elif expected == "fail":
        assert result.tree is Fail
    elif expected == "neg":
        assert result.tree is Neg
    else:
        assert addrs(result.tree.value) == expected


def test_alt_does_not_evaluate_later_branches():
    broken = TableNamer("/broken", {"/x": RuntimeError("boom")})
    result = bind("/a => /$/inet/127.1/1 | /#/broken/x", "/a", [broken])
    assert result.ok and broken.asked == []
    # ...but an error in the branch that is reached fails the binding.
    result = bind("/a => ~ | /#/broken/x", "/a", [broken])
    assert result.error == "boom"


def test_union_keeps_weights_and_simplifies():
    result = bind("/a => 0.3*/$/inet/127.1/1 & 0.7*/$/inet/127.1/2", "/a")
    assert isinstance(result.tree, Union)
    assert [w.weight for w in result.tree.weighted] == [0.3, 0.7]
    assert result.tree.show == "0.30*/$/inet/127.1/1 & 0.70*/$/inet/127.1/2"
    # Neg and Fail members drop out; one member left is the member itself.
    result = bind("/a => 0.3*/nowhere & 0.7*/$/inet/127.1/2 & /$/fail", "/a")
    assert addrs(only_leaf(result)) == ["127.0.0.1:2"]
    assert bind("/a => /nowhere & /$/fail", "/a").tree is Neg


def test_union_drops_errored_members_when_another_is_ok():
    broken = TableNamer("/broken", {"/x": RuntimeError("namer down")})
    result = bind("/a => /#/broken/x & /$/inet/127.1/5", "/a", [broken])
    assert addrs(only_leaf(result)) == ["127.0.0.1:5"]
    result = bind("/a => /#/broken/x & /#/broken/x/y", "/a", [broken])
    assert result.error == "namer down"


def test_pending_namer():
    slow = TableNamer("/slow", {"/x": PENDING})
    assert bind("", "/#/slow/x", [slow]).pending
    assert bind("/a => /#/slow/x | /$/inet/127.1/1", "/a", [slow]).pending  # the Alt must wait
    # A union with another Ok member routes to that member.
    result = bind("/a => /#/slow/x & /$/inet/127.1/1", "/a", [slow])
    assert addrs(only_leaf(result)) == ["127.0.0.1:1"]


def test_namer_exception_message_or_class_name():
    class Quiet(Exception):
        pass

    broken = TableNamer("/b", {"/x": RuntimeError("lost contact"), "/y": Quiet()})
    assert bind("", "/#/b/x", [broken]).error == "lost contact"
    assert bind("", "/#/b/y", [broken]).error == "Quiet"


# --- namer precedence -----------------------------------------------------------------------------

def test_matching_dentry_hides_the_namers():
    disco = TableNamer("/disco", {"/web": bound1("10.0.0.1", 80)})
    result = bind("/#/disco/web => /$/inet/127.1/9", "/#/disco/web", [disco])
    assert only_leaf(result).id.show == "/$/inet/127.1/9"
    assert disco.asked == []


def test_later_configured_namer_with_same_prefix_is_tried_first():
    first = TableNamer("/disco", {"/a": bound1("10.0.0.1", 1), "/b": bound1("10.0.0.1", 2)})
    second = TableNamer("/disco", {"/a": bound1("10.0.0.2", 1)})
    assert addrs(only_leaf(bind("", "/#/disco/a", [first, second]))) == ["10.0.0.2:1"]
    # second answers Neg for /b: the earlier namer gets asked next.
    assert addrs(only_leaf(bind("", "/#/disco/b", [first, second]))) == ["10.0.0.1:2"]
    assert second.asked[-1] == P("/b")


def test_namer_prefixes_match_whole_labels(tmp_path):
    (tmp_path / "web").write_text("127.0.0.1 80\n")
    fs = build_namer("io.l5d.fs", {"rootDir": str(tmp_path), "prefix": "/disco"})
    assert only_leaf(bind("", "/#/disco/web/x", [fs])).id.show == "/#/disco/web"
    assert bind("", "/#/discoteque/web", [fs]).tree is Neg
    assert bind("", "/#/io.l5d.fs/web", [fs]).tree is Neg


# --- loops and the depth limit ----------------------------------------------------------------------

def test_dtab_loop_fails_with_linkerds_message():
    result = bind("/foo/bar => /bar/foo; /bar/foo => /foo/bar", "/foo/bar")
    assert result.error == "Max recursion level: 100 reached in Namer lookup"
    assert result.tree is Neg and not result.ok


def _chain(n):
    entries = [f"/p{i} => /p{i + 1}" for i in range(n)]
    entries.append(f"/p{n} => /$/inet/127.1/80")
    return ";".join(entries)


def test_depth_limit_boundary():
    # /p0 is bound at depth 0; the /$/inet path is looked up at depth n+1 and its bound
    # leaf checked at n+2, which must not exceed 100.
    assert only_leaf(bind(_chain(98), "/p0")).id.show == "/$/inet/127.1/80"
    assert bind(_chain(99), "/p0").error == "Max recursion level: 100 reached in Namer lookup"


def test_self_referencing_union_stays_fast():
    started = time.monotonic()
    result = bind("/a => /a & /a", "/a")
    assert result.error == "Max recursion level: 100 reached in Namer lookup"
    assert time.monotonic() - started < 2.0


# --- transformers ---------------------------------------------------------------------------------

def test_port_transformer_rewrites_ids_and_ports():
    t = build_transformer("io.l5d.port", {"port": 4141})
    b = only_leaf(bind("/svc => /$/inet/127.1/8080", "/svc/x", transformers=[t]))
    assert b.id.show == "/%/io.l5d.port/4141/$/inet/127.1/8080"
    assert b.residual.show == "/x"
    assert addrs(b) == ["127.0.0.1:4141"]


def test_transformers_apply_in_order_and_custom_prefix():
    port = build_transformer("io.l5d.port", {"port": 4141, "prefix": "/gw"})
    host = build_transformer("io.l5d.specificHost", {"host": "127.0.0.1"})
    b = only_leaf(bind("", "/$/inet/127.1/80", transformers=[port, host]))
    assert b.id.show == "/%/io.l5d.specificHost/%/gw/$/inet/127.1/80"
    assert addrs(b) == ["127.0.0.1:4141"]


def test_specific_host_filters_and_empty_becomes_neg():
    t = build_transformer("io.l5d.specificHost", {"host": "10.0.0.2"})
    both = TableNamer("/d", {"/svc": AddrBound.of(Address("10.0.0.1", 80), Address("10.0.0.2", 80))})
    b = only_leaf(bind("", "/#/d/svc", [both], [t]))
    assert addrs(b) == ["10.0.0.2:80"]
    other = TableNamer("/d", {"/svc": bound1("10.0.0.9", 80)})
    b = only_leaf(bind("", "/#/d/svc", [other], [t]))
    assert b.addr.value is AddrNeg


def test_localhost_keeps_this_hosts_addresses():
    t = build_transformer("io.l5d.localhost", {})
    d = TableNamer("/d", {"/svc": AddrBound.of(Address("127.0.0.1", 80), Address("192.0.2.77", 80))})
    b = only_leaf(bind("", "/#/d/svc", [d], [t]))
    assert b.id.show == "/%/io.l5d.localhost/#/d/svc"
    assert addrs(b) == ["127.0.0.1:80"]


def test_transformer_does_not_make_an_alt_fall_back():
    t = build_transformer("io.l5d.specificHost", {"host": "10.9.9.9"})
    result = bind("/a => /$/inet/127.1/1 | /$/inet/10.9.9.9/1", "/a", transformers=[t])
    assert only_leaf(result).addr.value is AddrNeg


def test_replace_and_const():
    replace = build_transformer("io.l5d.replace", {"path": "/$/inet/127.1/9"})
    b = only_leaf(bind("/a => /$/inet/127.1/1", "/a", transformers=[replace]))
    assert b.id.show == "/%/io.l5d.replace/$/inet/127.1/9" and addrs(b) == ["127.0.0.1:9"]
    assert bind("/a => ~", "/a", transformers=[replace]).tree is Neg  # Neg stays Neg
    const = build_transformer("io.l5d.const", {"path": "/$/inet/127.1/7"})
    b = only_leaf(bind("/a => ~", "/a", transformers=[const]))
    assert b.id.show == "/%/io.l5d.const/$/inet/127.1/7" and addrs(b) == ["127.0.0.1:7"]


def test_transformed_addr_var_follows_its_source(tmp_path):
    svc = tmp_path / "web"
    svc.write_text("127.0.0.1 8080\n")
    fs = build_namer("io.l5d.fs", {"rootDir": str(tmp_path)})
    t = build_transformer("io.l5d.port", {"port": 4141})
    b = only_leaf(bind("", "/#/io.l5d.fs/web", [fs], [t]))
    seen = []
    handle = b.addr.observe(seen.append)
    svc.write_text("127.0.0.1 8080\n127.0.0.2 8080\n")
    os.utime(svc, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
    fs.load_now()
    assert addrs(b) == ["127.0.0.1:4141", "127.0.0.2:4141"]
    assert len(seen) == 1
    handle.close()


def test_namer_level_transformers(tmp_path):
    (tmp_path / "web").write_text("127.0.0.1 8080\n")
    fs = build_namer("io.l5d.fs", {"rootDir": str(tmp_path), "transformers": [{"kind": "io.l5d.port", "port": 1}]})
    b = only_leaf(bind("", "/#/io.l5d.fs/web", [fs]))
    assert b.id.show == "/%/io.l5d.port/1/#/io.l5d.fs/web" and addrs(b) == ["127.0.0.1:1"]


def test_unbuilt_transformer_kinds_are_not_supported_yet():
    # the k8s transformers are built (tests/test_k8s_transformers.py); io.l5d.ec2Host is not
    with pytest.raises(NotSupportedError, match="io.l5d.ec2Host is not supported yet"):
        build_transformer("io.l5d.ec2Host", {})


def test_transformer_config_errors():
    with pytest.raises(ValueError, match="unknown transformer kind"):
        build_transformer("io.l5d.nope", {})
    with pytest.raises(ValueError, match="unknown key 'prot'"):
        build_transformer("io.l5d.port", {"prot": 1})
    with pytest.raises(ValueError, match="'port' is required"):
        build_transformer("io.l5d.port", {})
    with pytest.raises(ValueError, match="'path' is required"):
        build_transformer("io.l5d.replace", {})


def test_bind_result_helpers(tmp_path):
    (tmp_path / "up").write_text("127.0.0.1 80\n")
    (tmp_path / "empty").write_text("# nobody home\n")
    fs = build_namer("io.l5d.fs", {"rootDir": str(tmp_path)})
    up = bind("", "/#/io.l5d.fs/up", [fs])
    assert up.has_addresses() and fs in up.namers
    empty = bind("", "/#/io.l5d.fs/empty", [fs])
    assert empty.ok and not empty.has_addresses()
