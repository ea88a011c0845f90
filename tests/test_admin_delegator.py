"""linkerd's `/delegator.json` and the `/delegator` page (spec §8.4), on a real fastmesh.

Most tests talk HTTP to a `fastmesh run` process (admin on a free loopback port). Waiting
out a pending name needs a namer that has no answer yet, which a running io.l5d.fs never is
after start; those two tests build the Linker in the test's own uvloop (as `run_single`
does), serve its real admin server, and give one namespace an io.l5d.fs namer that has not
scanned its directory yet.

Expected JSON shapes follow the rules in the spec: compact JSON, `type` on every node, the
root has no dentry, a dentry is `{prefix, dst}` shown, a leaf's `bound` is `{addr, id,
path}` with the residual `"/"` when empty, `~`/`!` from a dentry show as those symbols,
alternates list later dtab entries first, and the dtab given is the whole dtab used.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from pathlib import Path

import pytest
import uvloop
from naming_harness import (FastmeshProcess, HttpConn, admin_request, free_port)

ADMIN_IP = "127.0.0.1"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("admin-delegator")
    disco = d / "disco"
    (disco / "team").mkdir(parents=True)
    (disco / "web").write_text("127.0.0.1 8081\n127.0.0.2 8082 * 3\n")
    (disco / "team" / "api").write_text("127.0.0.1 9090\n")
    (disco / "broken").write_text("127.0.0.1 eighty\n")
    admin_port = free_port()
    ports = [free_port() for _ in range(3)]
    cfg = d / "fastmesh.yaml"
    cfg.write_text(f"""\
admin:
  ip: {ADMIN_IP}
  port: {admin_port}
namers:
- kind: io.l5d.fs
  rootDir: {disco}
routers:
- protocol: http
  label: out
  dtab: |
    /srv => /#/io.l5d.fs;
    /svc => /srv;
  servers: [{{ip: 127.0.0.1, port: {ports[0]}}}]
- protocol: http
  label: gateway
  dtab: /svc => /#/io.l5d.fs;
  interpreter:
    transformers:
    - kind: io.l5d.port
      port: 4141
  servers: [{{ip: 127.0.0.1, port: {ports[1]}}}]
- protocol: http
  label: replaced
  interpreter:
    transformers:
    - kind: io.l5d.replace
      path: /$/inet/127.1/1
  servers: [{{ip: 127.0.0.1, port: {ports[2]}}}]
""")
    with FastmeshProcess(cfg, admin_port, d / "fastmesh.log") as proc:
        yield proc


def get(mesh, **params) -> tuple[int, dict, bytes]:
    query = urllib.parse.urlencode(params)
    return admin_request(ADMIN_IP, mesh.admin_port, "GET", f"/delegator.json?{query}")


def post(mesh, body, content_type: str | None = "application/json") -> tuple[int, dict, bytes]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    return admin_request(ADMIN_IP, mesh.admin_port, "POST", "/delegator.json", raw, headers)


def ok_json(resp) -> dict:
    status, headers, body = resp
    assert status == 200, body
    assert headers["content-type"].startswith("application/json")
    tree = json.loads(body)
    assert body == json.dumps(tree, separators=(",", ":")).encode(), "compact JSON"
    return tree


def inet(ip: str, port: int) -> dict:
    return {"ip": ip, "port": port, "meta": {}}


WEB_ADDR = {"type": "bound", "addrs": [inet("127.0.0.1", 8081),
                                       {"ip": "127.0.0.2", "port": 8082, "meta": {"weight": 3.0}}],
            "meta": {}}


# --- GET: the tree shapes ----------------------------------------------------------------------

def test_leaf_through_a_configured_namer(mesh) -> None:
    tree = ok_json(get(mesh, namespace="out", path="/svc/web", dtab="/svc=>/#/io.l5d.fs"))
    assert tree == {
        "type": "delegate", "path": "/svc/web",
        "delegate": {"type": "leaf", "path": "/#/io.l5d.fs/web",
                     "dentry": {"prefix": "/svc", "dst": "/#/io.l5d.fs"},
                     "bound": {"addr": WEB_ADDR, "id": "/#/io.l5d.fs/web", "path": "/"}}}


def test_nested_fs_name_with_residual(mesh) -> None:
    tree = ok_json(get(mesh, namespace="out", path="/svc/team/api/v1/users",
                       dtab="/svc=>/#/io.l5d.fs"))
    leaf = tree["delegate"]
    assert leaf["type"] == "leaf" and leaf["path"] == "/#/io.l5d.fs/team/api/v1/users"
    assert leaf["bound"]["id"] == "/#/io.l5d.fs/team/api"
    assert leaf["bound"]["path"] == "/v1/users"
    assert leaf["bound"]["addr"] == {"type": "bound", "addrs": [inet("127.0.0.1", 9090)], "meta": {}}


def test_the_given_dtab_is_the_whole_dtab(mesh) -> None:
    # the router `out` has /svc=>/srv; /srv=>/#/io.l5d.fs as its base, but the server must
    # not add it: with no dtab the name finds nothing
    assert ok_json(get(mesh, namespace="out", path="/svc/web")) == {"type": "neg", "path": "/svc/web"}
    with_base = ok_json(get(mesh, namespace="out", path="/svc/web",
                            dtab="/srv=>/#/io.l5d.fs;/svc=>/srv"))
    assert with_base["delegate"]["path"] == "/srv/web"
    assert with_base["delegate"]["dentry"] == {"prefix": "/svc", "dst": "/srv"}
    assert with_base["delegate"]["delegate"]["bound"]["id"] == "/#/io.l5d.fs/web"


def test_without_namespace_only_the_builtins(mesh) -> None:
    assert ok_json(get(mesh, path="/#/io.l5d.fs/web")) == {"type": "neg", "path": "/#/io.l5d.fs/web"}
    tree = ok_json(get(mesh, path="/$/inet/127.1/8080/rest"))
    assert tree == {"type": "leaf", "path": "/$/inet/127.1/8080/rest",
                    "bound": {"addr": {"type": "bound", "addrs": [inet("127.0.0.1", 8080)], "meta": {}},
                              "id": "/$/inet/127.1/8080", "path": "/rest"}}
    # the namespace is what brings the router's namers
    assert ok_json(get(mesh, namespace="out", path="/#/io.l5d.fs/web"))["type"] == "leaf"


def test_alternates_show_every_branch_later_entries_first(mesh) -> None:
    tree = ok_json(get(mesh, namespace="out", path="/svc/web",
                       dtab="/svc=>/#/io.l5d.fs;/svc=>/$/inet/127.1/7001;/svc=>/nowhere"))
    assert tree["type"] == "alt" and tree["path"] == "/svc/web"
    assert [b["type"] for b in tree["alt"]] == ["neg", "leaf", "leaf"]
    assert [b["dentry"]["dst"] for b in tree["alt"]] == ["/nowhere", "/$/inet/127.1/7001", "/#/io.l5d.fs"]
    assert tree["alt"][0]["path"] == "/nowhere/web"
    assert tree["alt"][2]["bound"]["id"] == "/#/io.l5d.fs/web"  # evaluated although not routed to


def test_weighted_union(mesh) -> None:
    tree = ok_json(get(mesh, namespace="out", path="/svc/web",
                       dtab="/svc=>0.25*/$/inet/127.1/1 & 0.75*/#/io.l5d.fs"))
    assert tree["type"] == "union"
    assert [m["weight"] for m in tree["union"]] == [0.25, 0.75]
    assert tree["union"][0]["tree"]["bound"]["id"] == "/$/inet/127.1/1"
    assert tree["union"][1]["tree"]["bound"]["id"] == "/#/io.l5d.fs/web"


@pytest.mark.parametrize("dtab,expected", [
    ("/svc=>!", {"type": "fail", "path": "!", "dentry": {"prefix": "/svc", "dst": "!"}}),
    ("/svc=>~", {"type": "delegate", "path": "/svc/web",
                 "delegate": {"type": "neg", "path": "~", "dentry": {"prefix": "/svc", "dst": "~"}}}),
    ("/svc=>$", {"type": "empty", "path": "/svc/web", "dentry": {"prefix": "/svc", "dst": "$"}}),
    ("/svc=>/$/fail", {"type": "delegate", "path": "/svc/web",
                       "delegate": {"type": "fail", "path": "/$/fail/web",
                                    "dentry": {"prefix": "/svc", "dst": "/$/fail"}}}),
])
def test_neg_fail_empty(mesh, dtab: str, expected: dict) -> None:
    assert ok_json(get(mesh, namespace="out", path="/svc/web", dtab=dtab)) == expected


def test_failed_addresses_and_namer_errors(mesh) -> None:
    broken = ok_json(get(mesh, namespace="out", path="/svc/broken", dtab="/svc=>/#/io.l5d.fs"))
    assert broken["delegate"]["bound"]["addr"] == {"type": "failed",
                                                   "cause": "malformed address: 127.0.0.1 eighty"}
    unknown = ok_json(get(mesh, namespace="out", path="/svc/web", dtab="/svc=>/$/no.such.namer"))
    assert unknown["delegate"]["type"] == "exception"
    assert "no.such.namer" in unknown["delegate"]["message"]
    loop = ok_json(get(mesh, namespace="out", path="/a/b", dtab="/a/b=>/b/a;/b/a=>/a/b"))
    assert loop == {"type": "exception", "path": "/a/b", "message": "Max recursion level reached."}


def test_transformer_shows_as_a_transformation(mesh) -> None:
    tree = ok_json(get(mesh, namespace="gateway", path="/svc/web", dtab="/svc=>/#/io.l5d.fs"))
    node = tree["delegate"]
    assert node["type"] == "transformation" and node["path"] == "/#/io.l5d.fs/web"
    assert node["bound"]["id"] == "/#/io.l5d.fs/web"            # before
    assert node["bound"]["addr"] == WEB_ADDR
    after = node["tree"]
    assert after["type"] == "leaf"
    assert after["bound"]["id"] == "/%/io.l5d.port/4141/#/io.l5d.fs/web"
    assert [(a["ip"], a["port"]) for a in after["bound"]["addr"]["addrs"]] == [
        ("127.0.0.1", 4141), ("127.0.0.2", 4141)]


def test_url_encoded_dtab_with_comments_and_spaces(mesh) -> None:
    dtab = "/svc => /#/io.l5d.fs ; # where names live\n/svc/web => /$/inet/127.1/7002 ;"
    tree = ok_json(get(mesh, namespace="out", path="/svc/web", dtab=dtab))
    assert tree["type"] == "alt"
    assert tree["alt"][0]["bound"]["id"] == "/$/inet/127.1/7002"


# --- the error statuses ---------------------------------------------------------------------------

def test_unknown_namespace_is_501(mesh) -> None:
    status, headers, body = get(mesh, namespace="sideways", path="/svc/web")
    assert (status, body) == (501, b"Name Interpreter for sideways cannot show delegations")


def test_non_delegatable_interpreter_is_501(mesh) -> None:
    status, _, body = get(mesh, namespace="replaced", path="/svc/web", dtab="/svc=>/$/inet/127.1/9")
    assert (status, body) == (501, b"Name Interpreter for replaced cannot show delegations")
    status, _, _ = post(mesh, {"namespace": "replaced", "path": "/svc/web", "dtab": ""})
    assert status == 501


@pytest.mark.parametrize("path,dtab,prefix,marker", [
    ("/svc/web/", "", b"Invalid path: ", b"'/svc/web/[]'"),
    ("svc", "", b"Invalid path: ", b"'[s]vc'"),
    ("/svc/web", "/svc=>/a/", b"Invalid dtab: ", b"[]"),
    ("/svc/web", "/svc=/a", b"Invalid dtab: ", b"'/svc=[/]a'"),
    ("/svc/web/", "/svc=/a", b"Invalid dtab: ", None),   # the dtab is checked first
])
def test_bad_path_or_dtab_is_400(mesh, path: str, dtab: str, prefix: bytes, marker: bytes | None) -> None:
    for resp in (get(mesh, namespace="out", path=path, dtab=dtab),
                 post(mesh, {"namespace": "out", "path": path, "dtab": dtab})):
        status, _, body = resp
        assert status == 400 and body.startswith(prefix), body
        if marker is not None:
            assert marker in body


def test_missing_path_is_400(mesh) -> None:
    status, _, body = get(mesh, namespace="out")
    assert status == 400 and body.startswith(b"Invalid path: ")


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_other_methods_are_405(mesh, method: str) -> None:
    status, headers, body = admin_request(ADMIN_IP, mesh.admin_port, method, "/delegator.json")
    assert status == 405 and body == b""
    assert set(headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", None])
def test_post_other_content_type_is_415(mesh, ctype: str | None) -> None:
    status, _, _ = post(mesh, {"namespace": "out", "path": "/svc/web", "dtab": ""}, content_type=ctype)
    assert status == 415


@pytest.mark.parametrize("body", [
    b"{not json",
    b'{"namespace": "out", "path": "/svc/web"}',                  # dtab is required
    b'{"namespace": "out", "dtab": "/svc=>/#/io.l5d.fs"}',        # path is required
    b'["out", "/svc/web", ""]',
    b'{"namespace": "out", "path": 5, "dtab": ""}',
])
def test_post_malformed_is_400(mesh, body: bytes) -> None:
    status, _, text = post(mesh, body)
    assert status == 400
    assert text == b"Malformed delegation request: " + body


def test_post_matches_get(mesh) -> None:
    args = {"namespace": "out", "path": "/svc/team/api", "dtab": "/svc=>/#/io.l5d.fs"}
    assert ok_json(post(mesh, args)) == ok_json(get(mesh, **args))
    # the namespace is optional in a POST (only the built-ins then)
    bare = ok_json(post(mesh, {"path": "/svc/x", "dtab": "/svc=>/$/inet/127.1/7003"}))
    assert bare["delegate"]["bound"]["id"] == "/$/inet/127.1/7003"
    # the UI's media type with parameters is accepted
    status, _, _ = post(mesh, args, content_type="application/json; charset=utf-8")
    assert status == 200


def test_head_has_no_body(mesh) -> None:
    status, headers, body = admin_request(ADMIN_IP, mesh.admin_port, "HEAD",
                                          "/delegator.json?namespace=out&path=/svc/web&dtab=/svc=>/%23/io.l5d.fs")
    assert status == 200 and body == b""
    assert int(headers["content-length"]) > 0


def test_fs_edits_show_up_in_the_delegator(mesh) -> None:
    disco = Path(mesh.config_path).parent / "disco"
    (disco / "late").write_text("127.0.0.9 9999\n")
    deadline = time.monotonic() + 3.0
    tree = {}
    while time.monotonic() < deadline:
        tree = ok_json(get(mesh, namespace="out", path="/svc/late", dtab="/svc=>/#/io.l5d.fs"))
        if tree.get("delegate", {}).get("type") == "leaf":
            break
        time.sleep(0.05)
    assert tree["delegate"]["bound"]["addr"]["addrs"] == [inet("127.0.0.9", 9999)]


# --- the playground page ----------------------------------------------------------------------------

def test_delegator_page(mesh) -> None:
    status, headers, body = admin_request(ADMIN_IP, mesh.admin_port, "GET", "/delegator")
    assert status == 200 and headers["content-type"].startswith("text/html")
    page = body.decode()
    for label in ("out", "gateway", "replaced"):
        assert f'<option value="{label}">' in page
    # every router's base dtab is embedded for the form, and the form posts JSON
    dtabs = json.loads(page.split("const dtabs = ", 1)[1].split(";\n", 1)[0])
    assert dtabs["out"] == "/srv=>/#/io.l5d.fs;/svc=>/srv"
    assert dtabs["gateway"] == "/svc=>/#/io.l5d.fs"
    assert 'fetch("delegator.json"' in page and '"Content-Type": "application/json"' in page


# --- pending names: waited out up to 2 s, then 503 -----------------------------------------------------

def _in_process(tmp_path: Path, scenario) -> None:
    """Run `scenario(linker, admin_port, late_namer)` with a real Linker + admin server in
    this test's uvloop; namespace `late` has an io.l5d.fs namer that has not scanned yet."""
    from fastmesh.config import load_config
    from fastmesh.linker import Linker
    from fastmesh.namers.fs import FsNamer
    from fastmesh.naming import Interpreter

    disco = tmp_path / "disco"
    disco.mkdir()
    (disco / "web").write_text("127.0.0.1 8081\n")
    admin_port = free_port()
    config = load_config("inline.yaml", text=f"""\
admin: {{ip: {ADMIN_IP}, port: {admin_port}}}
namers:
- kind: io.l5d.fs
  rootDir: {disco}
routers:
- protocol: http
  label: out
  servers: [{{ip: 127.0.0.1, port: {free_port()}}}]
""")
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        linker = Linker.build(config, loop)
        late = FsNamer(str(disco))   # no load_now(): every lookup is pending until it scans
        linker.interpreters["late"] = Interpreter([late])

        async def main() -> None:
            await linker.start()
            try:
                await asyncio.wait_for(scenario(linker, admin_port, late), 15)
            finally:
                late.close()
                await linker.stop(0.1)

        loop.run_until_complete(main())
    finally:
        loop.close()
        asyncio.set_event_loop(None)


async def _admin_get(port: int, target: str):
    conn = await HttpConn.open(ADMIN_IP, port)
    try:
        return await conn.request(target, host=f"{ADMIN_IP}:{port}")
    finally:
        conn.close()


def test_pending_is_waited_out(tmp_path: Path) -> None:
    async def scenario(linker, admin_port, late) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(0.4, late.start, loop)   # the namer's first scan comes 0.4 s later
        started = time.monotonic()
        resp = await _admin_get(admin_port, "/delegator.json?namespace=late&path=/svc/web"
                                            "&dtab=/svc=>/%23/io.l5d.fs")
        took = time.monotonic() - started
        assert resp.status == 200, resp.body
        assert 0.35 <= took < 1.9, took
        tree = resp.json()
        assert tree["delegate"]["bound"]["addr"]["addrs"] == [inet("127.0.0.1", 8081)]

    _in_process(tmp_path, scenario)


def test_pending_too_long_is_503(tmp_path: Path) -> None:
    async def scenario(linker, admin_port, late) -> None:
        started = time.monotonic()
        resp = await _admin_get(admin_port, "/delegator.json?namespace=late&path=/svc/web"
                                            "&dtab=/svc=>/%23/io.l5d.fs")
        took = time.monotonic() - started
        assert (resp.status, resp.body) == (503, b"Request timed out.")
        assert 1.9 <= took < 3.5, took
        # the admin server is still fine, and a name that does not need the namer is answered
        ok = await _admin_get(admin_port, "/delegator.json?namespace=late&path=/svc/web"
                                          "&dtab=/svc=>/$/inet/127.1/1")
        assert ok.status == 200 and ok.json()["delegate"]["type"] == "leaf"

    _in_process(tmp_path, scenario)
