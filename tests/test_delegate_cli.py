"""`fastmesh delegate` through the real CLI (subprocesses of this checkout's venv).

Every case is derived from the delegation rules of spec §3 (later entries win, `|` falls
back on neg and stops on fail, unions drop neg members, weight 1.0 prints bare, depth limit,
`/$` built-ins) and checks the contract of the command: the last line of the text output is
the bound tree in finagle's show syntax, `--json` is one object, exit 0 bound / 1 not / 2 a
parse error naming the position.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from naming_harness import cli_result, run_cli_many as _run_many

REPO = Path(__file__).resolve().parents[1]


def fastmesh(*args: str) -> subprocess.CompletedProcess:
    """The real CLI's result for these arguments (prefetched in parallel where possible)."""
    return cli_result(*args)


def last_line(out: str) -> str:
    return out.rstrip("\n").split("\n")[-1]


# (dtab, path, final bound tree, exit status)
CASES = [
    pytest.param("/svc=>/$/inet/10.0.0.1/8080", "/svc/world", "/$/inet/10.0.0.1/8080", 0, id="inet"),
    pytest.param("/svc=>/$/inet/127.1/8080", "/svc/world/a/b", "/$/inet/127.1/8080", 0, id="residual"),
    pytest.param("", "/svc/world", "~", 1, id="no-entry-neg"),
    pytest.param("/svc=>~", "/svc/world", "~", 1, id="dentry-neg"),
    pytest.param("/svc=>!", "/svc/world", "!", 1, id="dentry-fail"),
    pytest.param("/svc=>$", "/svc/world", "$", 1, id="dentry-empty"),
    pytest.param("/svc=>/$/nil", "/svc/world", "$", 1, id="builtin-nil"),
    pytest.param("/svc=>/$/fail", "/svc/world", "!", 1, id="builtin-fail"),
    pytest.param("/svc=>/$/inet/127.1/1; /svc=>/$/inet/127.1/2", "/svc/x", "/$/inet/127.1/2", 0,
                 id="later-entry-wins"),
    pytest.param("/svc=>/nowhere | /$/inet/127.1/2", "/svc/x", "/$/inet/127.1/2", 0,
                 id="alt-falls-back-on-neg"),
    pytest.param("/svc=>! | /$/inet/127.1/2", "/svc/x", "!", 1, id="alt-stops-on-fail"),
    pytest.param("/svc=>/$/inet/127.1/1; /svc=>/nowhere", "/svc/x", "/$/inet/127.1/1", 0,
                 id="earlier-entry-is-fallback"),
    pytest.param("/svc=>0.3*/$/inet/127.1/1 & 0.7*/$/inet/127.1/2", "/svc/x",
                 "0.30*/$/inet/127.1/1 & 0.70*/$/inet/127.1/2", 0, id="weighted-union"),
    pytest.param("/svc=>/$/inet/127.1/1 & 3*/$/inet/127.1/2", "/svc/x",
                 "/$/inet/127.1/1 & 3.00*/$/inet/127.1/2", 0, id="weight-one-prints-bare"),
    pytest.param("/svc=>0.5*/nowhere & 0.5*/$/inet/127.1/1", "/svc/x", "/$/inet/127.1/1", 0,
                 id="union-drops-neg-member"),
    pytest.param("/svc=>/nowhere & /elsewhere", "/svc/x", "~", 1, id="union-all-neg"),
    pytest.param("/foo/bar=>/bar/foo; /bar/foo=>/foo/bar", "/foo/bar", "!", 1, id="loop-depth-limit"),
    pytest.param("/svc=>/$/no.such.namer", "/svc/x", "!", 1, id="unknown-builtin"),
    pytest.param("/svc=>/$/io.buoyant.hostportPfx/inet; /inet=>/$/inet", "/svc/127.0.0.1:8080/a",
                 "/$/inet/127.0.0.1/8080", 0, id="hostport-rewriter"),
    pytest.param("/svc=>/$/io.buoyant.hostportPfx/inet", "/svc/127.0.0.1:8080", "~", 1,
                 id="rewritten-path-unbound"),
]


@pytest.mark.parametrize("dtab,path,bound,status", CASES)
def test_text_last_line_is_the_bound_tree(dtab: str, path: str, bound: str, status: int) -> None:
    res = fastmesh("delegate", "--dtab", dtab, path)
    assert res.returncode == status, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    lines = res.stdout.rstrip("\n").split("\n")
    assert lines[0] == f"delegating {path}"
    assert lines[-1] == bound
    # The steps start with the name itself and show the dentries that rewrote it.
    steps_at = lines.index("steps:")
    assert lines[steps_at + 1].startswith(f"  {path}")
    if dtab and "=> error:" not in res.stdout:  # a failed delegation has no steps to show
        first_prefix = dtab.split("=>")[0].strip()
        assert f"({first_prefix}=>" in res.stdout


JSON_CASES = [CASES[0], CASES[4], CASES[9], CASES[12]]


@pytest.mark.parametrize("dtab,path,bound,status", JSON_CASES)
def test_json_matches_text(dtab: str, path: str, bound: str, status: int) -> None:
    res = fastmesh("delegate", "--json", "--dtab", dtab, path)
    assert res.returncode == status, res.stderr
    out = res.stdout.strip().split("\n")
    assert len(out) == 1, "one JSON object, one line"
    obj = json.loads(out[0])
    assert set(obj) == {"path", "steps", "bound", "residual"}
    assert obj["path"] == path and obj["bound"] == bound
    assert isinstance(obj["steps"], list) and all(isinstance(s, str) for s in obj["steps"])
    text = fastmesh("delegate", "--dtab", dtab, path).stdout
    for step in obj["steps"]:
        assert f"  {step}\n" in text


def test_residual_and_addresses_are_reported() -> None:
    res = fastmesh("delegate", "--json", "--dtab", "/svc=>/$/inet/127.1/8080", "/svc/world/a/b")
    obj = json.loads(res.stdout)
    assert obj["residual"] == "/world/a/b"
    text = fastmesh("delegate", "--dtab", "/svc=>/$/inet/127.1/8080", "/svc/world/a/b").stdout
    assert "residual: /world/a/b\n" in text
    assert "127.0.0.1:8080" in text  # the short IPv4 form is resolved


def test_loop_reports_the_depth_error() -> None:
    res = fastmesh("delegate", "--dtab", "/foo/bar=>/bar/foo; /bar/foo=>/foo/bar", "/foo/bar")
    assert res.returncode == 1
    assert "Max recursion level" in res.stdout


def test_alternates_are_all_shown_in_the_steps() -> None:
    res = fastmesh("delegate", "--json", "--dtab", "/svc=>/nowhere | /$/inet/127.1/2", "/svc/x")
    steps = json.loads(res.stdout)["steps"]
    assert any("/nowhere/x" in s and "neg" in s for s in steps)
    assert any("/$/inet/127.1/2/x" in s and "bound" in s for s in steps)


# --- parse errors: exit 2, the message names the argument and the position -------------------------

PARSE_CASES = [
    (["--dtab", "/svc=>/foo/", "/svc/x"], "--dtab", 11, "'/svc=>/foo/[]'"),
    (["--dtab", "/a=/b", "/svc/x"], "--dtab", 3, "'/a=[/]b'"),
    (["--dtab", "/a=>/b;/c=>(/d", "/svc/x"], "--dtab", 14, "[]"),
    (["--dtab", "/a=>1.2.3*/b", "/svc/x"], "--dtab", None, None),
    (["/svc/x/"], "path", 7, "'/svc/x/[]'"),
    (["svc"], "path", 0, "'[s]vc'"),
    (["/svc/a b"], "path", None, None),
]
JSON_PARSE_CASES = {0, 4}  # with --json too: nothing on stdout, the same message on stderr


@pytest.fixture(scope="module", autouse=True)
def _prefetch() -> None:
    """Start every table invocation at once, a few in parallel, before the tests read them."""
    argvs = []
    for case in CASES:
        dtab, path = case.values[0], case.values[1]
        argvs.append(("delegate", "--dtab", dtab, path))
    for case in JSON_CASES:
        argvs.append(("delegate", "--json", "--dtab", case.values[0], case.values[1]))
    for i, (args, *_) in enumerate(PARSE_CASES):
        argvs.append(("delegate", *args))
        if i in JSON_PARSE_CASES:
            argvs.append(("delegate", "--json", *args))
    _run_many(argvs)


@pytest.mark.parametrize("args,what,offset,marker", PARSE_CASES)
def test_parse_errors_exit_2_naming_the_position(args: list[str], what: str, offset: int | None,
                                                 marker: str | None) -> None:
    index = [c[0] for c in PARSE_CASES].index(args)
    for extra in ([], ["--json"]) if index in JSON_PARSE_CASES else ([],):
        res = fastmesh("delegate", *extra, *args)
        assert res.returncode == 2, res.stdout + res.stderr
        assert res.stdout == ""
        assert "Traceback" not in res.stderr
        assert f"invalid {what}" in res.stderr
        assert "at offset " in res.stderr
        if offset is not None:
            assert f"at offset {offset})" in res.stderr
        if marker is not None:
            assert marker in res.stderr


# --- with a config: the router's dtab, namers and transformers ---------------------------------------

@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("delegate-config")
    disco = tmp_path / "disco"
    (disco / "team").mkdir(parents=True)
    (disco / "web").write_text("10.1.1.1 8080\n10.1.1.2 8080\n")
    (disco / "team" / "api").write_text("10.1.2.1 9090\n")
    (disco / "empty").write_text("# nobody home\n")
    local = tmp_path / "local"
    local.mkdir()
    (local / "web").write_text("10.9.9.9 80\n")
    cfg = tmp_path / "fastmesh.yaml"
    cfg.write_text(f"""\
admin: {{port: 0}}
namers:
- kind: io.l5d.fs
  rootDir: {disco}
- kind: io.l5d.fs
  prefix: /local
  rootDir: {local}
routers:
- protocol: http
  label: outgoing
  dtab: |
    /srv  => /#/io.l5d.fs;
    /host => /srv;
    /svc  => /host;
  interpreter:
    transformers:
    - kind: io.l5d.port
      port: 4141
  servers: [{{port: 4140}}]
- protocol: http
  label: incoming
  dtab: |
    /srv => /#/local;
    /svc => /srv;
  servers: [{{port: 4141}}]
""")
    c = str(cfg)
    _run_many([
        ("delegate", "--config", c, "/svc/web"),
        ("delegate", "--config", c, "/svc/team/api/extra"),
        ("delegate", "--json", "--config", c, "--router", "incoming", "/svc/web"),
        ("delegate", "--config", c, "--dtab", "/svc/web=>/$/inet/127.1/7", "/svc/web"),
        ("delegate", "--config", c, "--router", "incoming", "/svc/nothing"),
        ("delegate", "--config", c, "/svc/empty"),
        ("delegate", "--config", c, "--router", "sideways", "/svc/web"),
        ("delegate", "--config", str(REPO / "tests/data/configs/linkerd-example.yaml"), "/svc/world"),
        ("delegate", "--config", str(tmp_path / "nope.yaml"), "/svc/web"),
        ("delegate", "--router", "incoming", "/svc/web"),
    ])
    return cfg


def test_config_first_router_by_default(config: Path) -> None:
    res = fastmesh("delegate", "--config", str(config), "/svc/web")
    assert res.returncode == 0, res.stderr
    # the io.l5d.port transformer of the outgoing router rewrote the bound id
    assert last_line(res.stdout) == "/%/io.l5d.port/4141/#/io.l5d.fs/web"
    assert "10.1.1.1:4141" in res.stdout and "10.1.1.2:4141" in res.stdout
    assert "(/svc=>/host)" in res.stdout and "(/host=>/srv)" in res.stdout
    nested = fastmesh("delegate", "--config", str(config), "/svc/team/api/extra")
    assert last_line(nested.stdout) == "/%/io.l5d.port/4141/#/io.l5d.fs/team/api"
    assert "residual: /extra" in nested.stdout


def test_config_named_router_and_prefix_namer(config: Path) -> None:
    res = fastmesh("delegate", "--json", "--config", str(config), "--router", "incoming", "/svc/web")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["bound"] == "/#/local/web"


def test_config_dtab_is_appended_and_wins(config: Path) -> None:
    res = fastmesh("delegate", "--config", str(config), "--dtab", "/svc/web=>/$/inet/127.1/7", "/svc/web")
    assert res.returncode == 0
    # the router's transformers still apply to what the override bound
    assert last_line(res.stdout) == "/%/io.l5d.port/4141/$/inet/127.1/7"
    assert "dtab: /srv=>/#/io.l5d.fs;/host=>/srv;/svc=>/host;/svc/web=>/$/inet/127.1/7" in res.stdout


def test_config_no_addresses_and_missing_names_exit_1(config: Path) -> None:
    empty = fastmesh("delegate", "--config", str(config), "--router", "incoming", "/svc/nothing")
    assert empty.returncode == 1 and last_line(empty.stdout) == "~"
    bound_no_addr = fastmesh("delegate", "--config", str(config), "/svc/empty")
    assert bound_no_addr.returncode == 1, "a bound name with no address is not routable"
    assert last_line(bound_no_addr.stdout) == "/%/io.l5d.port/4141/#/io.l5d.fs/empty"


def test_config_errors(config: Path) -> None:
    tmp_path = config.parent
    res = fastmesh("delegate", "--config", str(config), "--router", "sideways", "/svc/web")
    assert res.returncode == 2
    assert "no router 'sideways'" in res.stderr and "outgoing, incoming" in res.stderr
    # the k8s namer is built but a one-shot delegation does not start its watches: pending
    k8s = fastmesh("delegate", "--config", str(REPO / "tests/data/configs/linkerd-example.yaml"), "/svc/world")
    assert k8s.returncode == 1
    assert "pending: a namer has no answer yet" in k8s.stdout
    assert "Traceback" not in k8s.stderr
    missing = fastmesh("delegate", "--config", str(tmp_path / "nope.yaml"), "/svc/web")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    alone = fastmesh("delegate", "--router", "incoming", "/svc/web")
    assert alone.returncode == 2 and "--router needs --config" in alone.stderr
