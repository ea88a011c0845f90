"""The io.l5d.fs namer on real directories, watched under a running uvloop (spec §2.2)."""

import asyncio
import os
import time

import pytest
import uvloop

from fastmesh.errors import NotSupportedError
from fastmesh.naming import (
    PENDING,
    Address,
    AddrBound,
    AddrFailed,
    AddrNeg,
    Dtab,
    Interpreter,
    Leaf,
    Meta,
    Neg,
    Path,
)
from fastmesh.namers import FsNamer, build_namer
from fastmesh.namers.fs import parse_addresses

P = Path.read


def run(coro, timeout=10):
    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))
    finally:
        loop.close()


async def wait_for(predicate, within=1.0):
    """Poll ``predicate`` until true; fail if it takes longer than ``within`` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {within}s")
        await asyncio.sleep(0.02)
    return time.monotonic()


def shown(addr):
    assert isinstance(addr, AddrBound), addr
    return sorted(a.show for a in addr.addresses)


# --- file format ----------------------------------------------------------------------------------

FORMAT_CASES = [
    ("127.1 8888\n", ["127.0.0.1:8888"]),
    ("10.0.0.1 80\n10.0.0.2\t81\n", ["10.0.0.1:80", "10.0.0.2:81"]),
    ("# header\n\n  10.0.0.1   80   # trailing\n\n", ["10.0.0.1:80"]),
    ("10.0.0.1 80\r\n", ["10.0.0.1:80"]),
    ("web.internal 8080\n", ["web.internal:8080"]),  # names are resolved by the connector
    ("", []),
    ("# only comments\n", []),
    ("10.0.0.1 1\n10.0.0.1 65535\n", ["10.0.0.1:1", "10.0.0.1:65535"]),
]


@pytest.mark.parametrize("text,expected", FORMAT_CASES)
def test_file_format(text, expected):
    assert shown(parse_addresses(text)) == expected


def test_weights():
    addr = parse_addresses("10.0.0.1 80 * 2.5\n10.0.0.2 80\n")
    by_host = {a.host: a for a in addr.addresses}
    assert by_host["10.0.0.1"].weight == 2.5 and by_host["10.0.0.1"].meta == Meta({"weight": "2.5"})
    assert by_host["10.0.0.2"].weight == 1.0


MALFORMED_CASES = [
    ("10.0.0.1\n", "10.0.0.1"),
    ("10.0.0.1 80 90\n", "10.0.0.1 80 90"),
    ("10.0.0.1 0\n", "10.0.0.1 0"),
    ("10.0.0.1 65536\n", "10.0.0.1 65536"),
    ("10.0.0.1 http\n", "10.0.0.1 http"),
    ("10.0.0.1 80 * heavy\n", "10.0.0.1 80 * heavy"),
    ("10.0.0.1 80 x 2\n", "10.0.0.1 80 x 2"),
    ("10.0.0.1 80\nbroken   # why\n10.0.0.2 80\n", "broken"),  # one bad line fails the file
]


@pytest.mark.parametrize("text,line", MALFORMED_CASES)
def test_malformed_lines_fail_the_whole_file(text, line):
    assert parse_addresses(text) == AddrFailed(f"malformed address: {line}")


# --- lookup ------------------------------------------------------------------------------------------

@pytest.fixture()
def tree(tmp_path):
    (tmp_path / "web").write_text("10.0.0.1 8080\n")
    (tmp_path / "team").mkdir()
    (tmp_path / "team" / "api").write_text("10.0.0.2 9090\n")
    (tmp_path / "team" / "deep").mkdir()
    (tmp_path / "team" / "deep" / "db").write_text("10.0.0.3 5432\n")
    (tmp_path / ".hidden").write_text("10.0.0.9 1\n")
    return tmp_path


LOOKUP_CASES = [
    ("/web", "/#/io.l5d.fs/web", "/"),
    ("/web/a/b", "/#/io.l5d.fs/web", "/a/b"),
    ("/team/api", "/#/io.l5d.fs/team/api", "/"),
    ("/team/api/v1", "/#/io.l5d.fs/team/api", "/v1"),
    ("/team/deep/db/x", "/#/io.l5d.fs/team/deep/db", "/x"),
]


@pytest.mark.parametrize("path,ident,residual", LOOKUP_CASES)
def test_lookup_files_and_directories(tree, path, ident, residual):
    fs = FsNamer(str(tree))
    fs.load_now()
    result = fs.lookup(P(path))
    assert isinstance(result, Leaf)
    assert (result.value.id.show, result.value.residual.show) == (ident, residual)


@pytest.mark.parametrize("path", ["/nope", "/team", "/team/nope", "/team/deep", "/.hidden", "/..", "/"])
def test_lookup_negative(tree, path):
    fs = FsNamer(str(tree))
    fs.load_now()
    assert fs.lookup(P(path)) is Neg


def test_pending_until_first_scan(tree):
    fs = FsNamer(str(tree))
    assert fs.lookup(P("/web")) is PENDING
    assert Interpreter([fs]).bind(Dtab.empty, P("/#/io.l5d.fs/web")).pending
    fs.load_now()
    assert isinstance(fs.lookup(P("/web")), Leaf)


def test_names_and_state(tree):
    fs = FsNamer(str(tree), prefix=P("/disco"))
    fs.load_now()
    assert [p.show for p in fs.names()] == ["/#/disco/team/api", "/#/disco/team/deep/db", "/#/disco/web"]
    state = fs.state()
    assert state["files"]["/web"]["addrs"] == [{"ip": "10.0.0.1", "port": 8080, "meta": {}}]


def test_build_namer(tree):
    fs = build_namer("io.l5d.fs", {"kind": "io.l5d.fs", "rootDir": str(tree), "prefix": "/disco", "experimental": False})
    assert fs.prefix == P("/disco")
    assert isinstance(fs.lookup(P("/web")), Leaf)  # scanned once already
    with pytest.raises(ValueError, match="'rootDir' is required"):
        build_namer("io.l5d.fs", {})
    with pytest.raises(ValueError, match="is not a directory"):
        build_namer("io.l5d.fs", {"rootDir": str(tree / "web")})
    with pytest.raises(ValueError, match="unknown key 'rootdir'"):
        build_namer("io.l5d.fs", {"rootdir": str(tree)})
    with pytest.raises(NotSupportedError, match="io.l5d.consul is not supported yet"):
        build_namer("io.l5d.consul", {"host": "localhost", "port": 8500})
    with pytest.raises(ValueError, match="unknown namer kind"):
        build_namer("io.l5d.fancy", {})


# --- watching under a running loop -------------------------------------------------------------------

def test_address_edit_updates_the_same_addr_var_within_a_second(tree):
    async def scenario():
        fs = FsNamer(str(tree))
        fs.start(asyncio.get_running_loop())
        interp = Interpreter([fs])
        dtab = Dtab.read("/svc => /#/io.l5d.fs")
        first = interp.bind(dtab, P("/svc/web")).tree.value
        var = first.addr
        notified = []
        fs.add_listener(lambda: notified.append("shape"))
        seen = []
        var.observe(seen.append)

        started = time.monotonic()
        (tree / "web").write_text("10.0.0.1 8080\n10.0.0.7 8080\n")
        done = await wait_for(lambda: shown(var.value) == ["10.0.0.1:8080", "10.0.0.7:8080"])
        assert done - started < 1.0
        again = interp.bind(dtab, P("/svc/web")).tree.value
        assert again.addr is var  # the route cache's client keeps working
        assert notified == []  # an address-only change is not a re-bind
        assert len(seen) == 1

        # A malformed edit fails the addresses in place; fixing it restores them.
        (tree / "web").write_text("10.0.0.1 eighty\n")
        await wait_for(lambda: isinstance(var.value, AddrFailed))
        assert var.value == AddrFailed("malformed address: 10.0.0.1 eighty")
        (tree / "web").write_text("10.0.0.1 8081\n")
        await wait_for(lambda: isinstance(var.value, AddrBound) and shown(var.value) == ["10.0.0.1:8081"])
        assert notified == []
        fs.close()

    run(scenario())


def test_files_appearing_and_disappearing_notify_listeners(tree):
    async def scenario():
        fs = FsNamer(str(tree))
        fs.start()
        interp = Interpreter([fs])
        notified = []
        handle = interp.add_listener(lambda: notified.append(time.monotonic()))
        assert interp.bind(Dtab.empty, P("/#/io.l5d.fs/new")).tree is Neg

        started = time.monotonic()
        (tree / "new").write_text("10.0.0.5 80\n")
        await wait_for(lambda: notified)
        assert notified[0] - started < 1.0
        bound = interp.bind(Dtab.empty, P("/#/io.l5d.fs/new")).tree.value
        assert shown(bound.addr.value) == ["10.0.0.5:80"]

        notified.clear()
        os.remove(tree / "new")
        await wait_for(lambda: notified)
        assert interp.bind(Dtab.empty, P("/#/io.l5d.fs/new")).tree is Neg
        assert bound.addr.value is AddrNeg  # holders of the old name see it gone

        notified.clear()
        (tree / "team" / "later").write_text("10.0.0.6 80\n")
        await wait_for(lambda: notified)
        handle.close()
        notified.clear()
        (tree / "another").write_text("10.0.0.8 80\n")
        await asyncio.sleep(0.6)
        assert notified == []  # closed listeners stay quiet
        fs.close()

    run(scenario())


def test_same_size_same_mtime_edit_is_still_seen(tree):
    async def scenario():
        path = tree / "web"
        fs = FsNamer(str(tree))
        fs.start()
        var = fs.lookup(P("/web")).value.addr
        stamp = os.stat(path).st_mtime_ns
        path.write_text("10.0.0.1 8081\n")  # same length as before
        os.utime(path, ns=(stamp, stamp))  # and the same timestamp
        await wait_for(lambda: shown(var.value) == ["10.0.0.1:8081"])
        fs.close()

    run(scenario())


def test_configmap_style_symlinks(tmp_path):
    # Kubernetes mounts a ConfigMap as symlinks into a hidden, atomically swapped directory.
    (tmp_path / "..v1").mkdir()
    (tmp_path / "..v1" / "web").write_text("10.0.0.1 80\n")
    (tmp_path / "..v2").mkdir()
    (tmp_path / "..v2" / "web").write_text("10.0.0.2 80\n")
    os.symlink("..v1", tmp_path / "..data")
    os.symlink("..data/web", tmp_path / "web")

    async def scenario():
        fs = FsNamer(str(tmp_path))
        fs.start()
        assert [p.show for p in fs.names()] == ["/#/io.l5d.fs/web"]
        var = fs.lookup(P("/web")).value.addr
        os.symlink("..v2", tmp_path / "..data.tmp")
        os.replace(tmp_path / "..data.tmp", tmp_path / "..data")
        await wait_for(lambda: shown(var.value) == ["10.0.0.2:80"])
        fs.close()

    run(scenario())


def test_root_disappearing_makes_names_negative(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "web").write_text("10.0.0.1 80\n")
    fs = FsNamer(str(root))
    fs.load_now()
    var = fs.lookup(P("/web")).value.addr
    (root / "web").unlink()
    root.rmdir()
    assert fs.load_now() is True
    assert fs.lookup(P("/web")) is Neg and var.value is AddrNeg


def test_close_stops_polling(tree):
    async def scenario():
        fs = FsNamer(str(tree), poll_interval=0.05)
        fs.start()
        await asyncio.sleep(0.2)
        fs.close()
        scans = fs.scans
        await asyncio.sleep(0.2)
        assert fs.scans == scans

    run(scenario())


def test_address_type_is_hashable_and_compares():
    a = Address("10.0.0.1", 80, {"nodeName": "n1"})
    b = Address("10.0.0.1", 80, Meta({"nodeName": "n1"}))
    assert a == b and hash(a) == hash(b) and a.node_name == "n1"
    assert AddrBound.of(a) == AddrBound(frozenset([b]))
