"""`fastmesh run` and `fastmesh check` on real configs, as real processes.

* linkerd's own DaemonSet configs (tests/data/configs/linkerd-example.yaml and
  linkerd-tls-example.yaml, copied unchanged from linkerd-examples): `run` must not crash;
  on this machine (no POD_IP from a downward API, no /io.buoyant certificate files) they
  stop at start naming the YAML path and the reason — the localnode transformer's
  POD_IP, or the missing trust certificate — exit 1, and nothing is left listening; with
  the TLS files left out and POD_IP set, `check` accepts the k8s namer and both k8s
  transformers (tests/test_k8s_*.py run them against a fake API server);
* broken configs (a selection of tests/data/configs/broken/, whose first line states the
  expected error, plus cases of our own below): both commands exit 1 and print the YAML
  path and the reason, never a traceback.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from naming_harness import REPO, cli_result, fastmesh_argv, run_cli_many

DATA = REPO / "tests" / "data" / "configs"
BROKEN = DATA / "broken"
EXAMPLES = ["linkerd-example.yaml", "linkerd-tls-example.yaml"]

# The brief's categories (unknown or duplicated key, conflicting label or port, bad dtab),
# plus two that stop earlier (unreadable YAML, no routers). tests/test_config.py checks
# every file of broken/ in-process; here each costs two process starts.
BROKEN_SELECTION = [
    "unknown-key-top", "unknown-key-client-tls", "duplicate-key", "conflicting-label",
    "conflicting-port", "conflicting-port-admin", "bad-dtab", "bad-port", "invalid-yaml",
    "missing-routers",
]

# Our own: (name, config text, expected substrings of the error). {tmp} is a scratch dir.
OWN_BROKEN = [
    ("dtab-in-second-router", """\
routers:
- protocol: http
  label: a
  servers: [{port: 4140}]
- protocol: http
  label: b
  dtab: |
    /svc  => /#/io.l5d.fs;
    /host => /srv/;
  servers: [{port: 4141}]
""", ["routers[1].dtab: invalid dtab: label char expected but ';' found at", "/host => /srv/[;]"]),
    ("dtab-bad-weight", """\
routers:
- protocol: http
  dtab: /svc => 0.1.2 * /a & /b;
  servers: [{port: 4140}]
""", ["routers[0].dtab: invalid dtab: "]),
    ("dtab-wildcard-inside-label", """\
routers:
- protocol: http
  dtab: /svc/*x => /a;
  servers: [{port: 4140}]
""", ["routers[0].dtab: invalid dtab: "]),
    ("fs-namer-key-typo", """\
namers:
- kind: io.l5d.fs
  rootdir: {tmp}
routers:
- protocol: http
  servers: [{port: 4140}]
""", ["namers[0].rootdir: unknown key 'rootdir'"]),
    ("nested-duplicate-key", """\
routers:
- protocol: http
  servers: [{port: 4140}]
  client:
    tls:
      commonName: a
      commonName: b
""", ["routers[0].client.tls.commonName: duplicate key 'commonName'"]),
    ("port-across-routers", """\
routers:
- protocol: http
  label: a
  servers: [{port: 4140, ip: 0.0.0.0}]
- protocol: http
  label: b
  servers: [{port: 4141}, {ip: 0.0.0.0, port: 4140}]
""", ["routers[1].servers[1]: conflicting port 0.0.0.0:4140 (also used by routers[0].servers[0])"]),
    ("label-three-routers", """\
routers:
- {protocol: http, label: x, servers: [{port: 4140}]}
- {protocol: http, label: y, servers: [{port: 4141}]}
- {protocol: http, label: x, servers: [{port: 4142}]}
""", ["routers[2].label: conflicting label 'x' (also routers[0].label)"]),
    ("json-bad-dtab", '{"routers": [{"protocol": "http", "dtab": "/svc=>", "servers": [{"port": 4140}]}]}',
     ["routers[0].dtab: invalid dtab: "]),
    ("port-out-of-range", """\
admin: {port: 65536}
routers:
- protocol: http
  servers: [{port: 4140}]
""", ["admin.port: port must be 0..65535, got 65536"]),
]


def _expectation(file: Path) -> tuple[bool, str]:
    marker, _, expected = file.read_text().splitlines()[0].partition(": ")
    return marker == "# expect-prefix", expected


@pytest.fixture(scope="module")
def own_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("broken")
    for name, text, _ in OWN_BROKEN:
        suffix = ".json" if text.lstrip().startswith("{") else ".yaml"
        (d / f"{name}{suffix}").write_text(text.replace("{tmp}", str(d)))
    return d


def _own_file(own_dir: Path, name: str) -> Path:
    return next(own_dir.glob(f"{name}.*"))


@pytest.fixture(scope="module")
def derived_examples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The linkerd examples without the TLS files this machine lacks: the k8s namer and
    both k8s transformers remain."""
    d = tmp_path_factory.mktemp("derived")
    out = {}
    for example in EXAMPLES:
        data = yaml.safe_load((DATA / example).read_text())
        for router in data["routers"]:
            for server in router["servers"]:  # the TLS example's cert files do not exist here
                server.pop("tls", None)
            router.pop("client", None)
        p = d / f"k8s-namer-{example}"
        p.write_text(yaml.safe_dump(data))
        out[f"k8s-namer:{example}"] = p
    return out


@pytest.fixture(scope="module", autouse=True)
def _prefetch(own_dir: Path, derived_examples: dict[str, Path]) -> None:
    argvs = []
    for example in EXAMPLES:
        argvs += [("run", str(DATA / example)), ("check", str(DATA / example))]
    for p in derived_examples.values():
        argvs.append(("run", str(p)))
    for name in BROKEN_SELECTION:
        argvs += [("run", str(BROKEN / f"{name}.yaml")), ("check", str(BROKEN / f"{name}.yaml"))]
    for name, _, _ in OWN_BROKEN:
        f = str(_own_file(own_dir, name))
        argvs += [("run", f), ("check", f)]
    run_cli_many(argvs)


# --- linkerd's examples -------------------------------------------------------------------------

ERROR_LINE = re.compile(r"^fastmesh: (?:invalid config: )?(?P<path>[A-Za-z][\w.\[\]]*): (?P<reason>.+)$")


def _error_line(stderr: str) -> re.Match:
    """The error `run` prints: `fastmesh: [invalid config: ]<yaml path>: <reason>`.

    With --workers > 1 (the default on a multi-CPU machine) every worker and the parent
    may print it (a race, reported to the lead); all copies must agree."""
    lines = [ln for ln in stderr.splitlines() if ln.startswith("fastmesh: ")]
    assert lines, stderr
    matches = [ERROR_LINE.match(ln) for ln in lines]
    assert all(matches), stderr
    assert len({(m["path"], m["reason"]) for m in matches}) == 1, stderr
    return matches[0]


def _yaml_path_exists(data, path: str) -> bool:
    node = data
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if part.startswith("["):
            idx = int(part[1:-1])
            if not isinstance(node, list) or idx >= len(node):
                return False
            node = node[idx]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False
    return True


# What stops each unchanged example here (no POD_IP, no /io.buoyant certificate files)
FIRST_PROBLEM = {
    "linkerd-example.yaml": ("routers[1].interpreter.transformers[0]",
                             "POD_IP env variable must be set to the pod's IP"),
    "linkerd-tls-example.yaml": ("routers[0].client.tls", "trust certificate (trustCerts) "
                                 "/io.buoyant/linkerd/certs/cacertificate.pem: file not found"),
}


@pytest.mark.parametrize("example", EXAMPLES)
def test_linkerd_example_unchanged_fails_clearly(example: str) -> None:
    res = cli_result("run", str(DATA / example))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""
    m = _error_line(res.stderr)
    assert _yaml_path_exists(yaml.safe_load((DATA / example).read_text()), m["path"]), m["path"]
    assert (m["path"], m["reason"]) == FIRST_PROBLEM[example]


@pytest.mark.parametrize("example", EXAMPLES)
def test_linkerd_example_k8s_parts_are_accepted(example: str, derived_examples: dict[str, Path]) -> None:
    config = str(derived_examples[f"k8s-namer:{example}"])
    res = cli_result("run", config)  # no POD_IP: the localnode transformer says so
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    m = _error_line(res.stderr)
    assert (m["path"], m["reason"]) == FIRST_PROBLEM["linkerd-example.yaml"]
    ok = subprocess.run(fastmesh_argv("check", config), capture_output=True, text=True, timeout=60,
                        cwd=REPO, env={**os.environ, "POD_IP": "10.1.2.3"})
    assert ok.returncode == 0, ok.stdout + ok.stderr


@pytest.mark.parametrize("example", EXAMPLES)
def test_check_reports_what_run_would_refuse(example: str) -> None:
    # The examples are valid linkerd 1.x (`python -m fastmesh.config` accepts them), but
    # `fastmesh check` answers "would `fastmesh run` start this?", so it names the first
    # thing that would stop `run`, exactly as `run` does — without binding anything.
    res = cli_result("check", str(DATA / example))
    assert res.returncode == 1, res.stdout + res.stderr
    m = _error_line(res.stderr)
    assert (m["path"], m["reason"]) == FIRST_PROBLEM[example]
    linkerd_only = subprocess.run([sys.executable, "-m", "fastmesh.config", str(DATA / example)],
                                  capture_output=True, text=True, timeout=60)
    assert linkerd_only.returncode == 0, linkerd_only.stderr
    assert linkerd_only.stdout.strip() == "ok: 2 routers (outgoing, incoming), 1 namers"


def test_run_fails_before_binding_anything() -> None:
    # The example binds 0.0.0.0:4140/4141 and admin :9990 if it ever started; it must stop
    # at config time, so a second run sees the same config error, not "address in use".
    res = subprocess.run(fastmesh_argv("run", str(DATA / "linkerd-example.yaml")),
                         capture_output=True, text=True, timeout=30, cwd=REPO)
    assert res.returncode == 1
    assert "cannot listen" not in res.stderr and "POD_IP env variable must be set" in res.stderr
    assert "Address already in use" not in res.stderr


# --- broken configs ----------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["run", "check"])
@pytest.mark.parametrize("name", BROKEN_SELECTION)
def test_broken_config_exits_1_with_path_and_reason(name: str, command: str) -> None:
    file = BROKEN / f"{name}.yaml"
    prefix_only, expected = _expectation(file)
    res = cli_result(command, str(file))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert res.stdout == "", "nothing on stdout: no 'ok', no serving banner"
    if command == "run":
        assert res.stderr.startswith("fastmesh: invalid config: "), res.stderr
        message = res.stderr[len("fastmesh: invalid config: "):]
    else:
        message = res.stderr.split(": invalid config: ", 1)[-1] if ": invalid config: " in res.stderr \
            else res.stderr
    if prefix_only:
        assert message.startswith(expected), message
        assert len(message.strip()) > len(expected.strip()), "the parser's own reason follows"
    else:
        assert message.strip() == expected


@pytest.mark.parametrize("command", ["run", "check"])
@pytest.mark.parametrize("name,expected", [(n, e) for n, _, e in OWN_BROKEN],
                         ids=[n for n, _, _ in OWN_BROKEN])
def test_own_broken_configs(name: str, expected: list[str], command: str, own_dir: Path) -> None:
    res = cli_result(command, str(_own_file(own_dir, name)))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    for text in expected:
        assert text in res.stderr, res.stderr


def test_run_reads_a_broken_config_from_stdin() -> None:
    text = "routers:\n- protocol: http\n  servers: [{port: 4140}]\n  dtab: /svc => \n"
    res = subprocess.run(fastmesh_argv("run", "-"), input=text, capture_output=True, text=True,
                         timeout=30, cwd=REPO)
    assert res.returncode == 1
    assert "routers[0].dtab: invalid dtab" in res.stderr and "Traceback" not in res.stderr


def test_run_with_a_missing_fs_directory_names_the_namer(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"namers:\n- kind: io.l5d.fs\n  rootDir: {tmp_path / 'absent'}\n"
                   "routers:\n- protocol: http\n  servers: [{port: 0}]\n")
    res = subprocess.run(fastmesh_argv("run", str(cfg)), capture_output=True, text=True,
                         timeout=30, cwd=REPO)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert f"namers[0]: io.l5d.fs: rootDir {tmp_path / 'absent'} is not a directory" in res.stderr


def test_interpreter_python_is_this_checkout() -> None:
    # The CLI under test is this repo's, not some other installed fastmesh.
    res = subprocess.run([sys.executable, "-c", "import fastmesh, sys; print(fastmesh.__file__)"],
                         capture_output=True, text=True, timeout=30)
    assert Path(res.stdout.strip()).resolve().is_relative_to(REPO)
