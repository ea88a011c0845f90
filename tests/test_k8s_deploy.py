"""deploy/: the linkerd-tls.yml manifests with the image swapped for fastmesh.

The manifests are loaded with PyYAML like kubectl would read them. The ConfigMap's
`config.yaml` must be linkerd's own (unchanged) and pass `fastmesh check` once its
certificate paths point at the files of the manifest's own Secret (the example's expired
CA: accepted in legacy anchor mode) and POD_IP is set, as the DaemonSet's downward API
sets it. The DaemonSet keeps linkerd's args, env, ports, mounts and the kubectl proxy
sidecar; the image's entrypoint is `fastmesh run`.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
LINKERD_EXAMPLES = Path("/work/shared/linkerd-examples")
CERTS_DIR = "/io.buoyant/linkerd/certs/"


def manifests() -> list[dict]:
    docs = []
    for path in sorted(DEPLOY.glob("*.yml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def one(kind: str, name: str) -> dict:
    (doc,) = [d for d in manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def test_configmap_config_passes_fastmesh_check(tmp_path):
    config = one("ConfigMap", "l5d-config")["data"]["config.yaml"]
    assert yaml.safe_load(config) == yaml.safe_load(
        (REPO / "tests/data/configs/linkerd-tls-example.yaml").read_text())
    certs = tmp_path / "certs"
    certs.mkdir()
    for name, data in one("Secret", "certificates")["data"].items():
        (certs / name).write_bytes(base64.b64decode(data))
    assert CERTS_DIR in config
    cfg = tmp_path / "config.yaml"
    cfg.write_text(config.replace(CERTS_DIR, f"{certs}/"))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "POD_IP": "10.180.4.2"}
    res = subprocess.run([sys.executable, "-m", "fastmesh", "check", str(cfg)], capture_output=True,
                         text=True, timeout=60, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    # without POD_IP (no downward API) it names the localnode transformer
    env.pop("POD_IP")
    res = subprocess.run([sys.executable, "-m", "fastmesh", "check", str(cfg)], capture_output=True,
                         text=True, timeout=60, env=env, cwd=tmp_path)
    assert res.returncode == 1
    assert "routers[1].interpreter.transformers[0]: POD_IP env variable must be set" in res.stderr


def test_daemonset_swaps_only_the_image():
    ds = one("DaemonSet", "l5d")
    spec = ds["spec"]["template"]["spec"]
    assert ds["spec"]["selector"]["matchLabels"] == ds["spec"]["template"]["metadata"]["labels"]
    l5d, kubectl = spec["containers"]
    assert l5d["image"].startswith("fastmesh:")
    assert l5d["args"] == ["/io.buoyant/linkerd/config/config.yaml"]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in l5d["env"]}
    assert env["POD_IP"] == "status.podIP"
    assert {p["name"]: p["containerPort"] for p in l5d["ports"]} == {"outgoing": 4140, "incoming": 4141,
                                                                     "admin": 9990}
    assert [p.get("hostPort") for p in l5d["ports"]] == [4140, None, None]
    mounts = {m["name"]: m["mountPath"] for m in l5d["volumeMounts"]}
    assert mounts == {"l5d-config": "/io.buoyant/linkerd/config", "certificates": "/io.buoyant/linkerd/certs"}
    assert kubectl["args"] == ["proxy", "-p", "8001"]
    service = one("Service", "l5d")
    assert [p["name"] for p in service["spec"]["ports"]] == ["outgoing", "incoming", "admin"]
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    entrypoints = [line for line in dockerfile.splitlines() if line.startswith("ENTRYPOINT")]
    assert entrypoints and json.loads(entrypoints[-1].split(None, 1)[1]) == ["fastmesh", "run"]
    assert "FROM python:" in dockerfile and "-slim" in dockerfile
    rules = one("ClusterRole", "fastmesh-endpoints-reader")["rules"]
    assert {"endpoints", "services"} <= set(rules[0]["resources"]) and "watch" in rules[0]["verbs"]


def test_config_and_secret_are_the_examples():
    if not LINKERD_EXAMPLES.is_dir():
        pytest.skip(f"{LINKERD_EXAMPLES} is not present")
    theirs = {(d["kind"], d["metadata"]["name"]): d
              for f in ("linkerd-tls.yml", "certificates.yml")
              for d in yaml.safe_load_all((LINKERD_EXAMPLES / f).read_text()) if d}
    assert one("ConfigMap", "l5d-config") == theirs[("ConfigMap", "l5d-config")]
    assert one("Secret", "certificates") == theirs[("Secret", "certificates")]
    assert one("Service", "l5d") == theirs[("Service", "l5d")]
    ours = one("DaemonSet", "l5d")["spec"]["template"]["spec"]
    original = theirs[("DaemonSet", "l5d")]["spec"]["template"]["spec"]
    assert ours["volumes"] == original["volumes"]
    assert ours["containers"][1] == original["containers"][1]  # the kubectl proxy sidecar
    for key in ("args", "ports", "volumeMounts"):
        assert ours["containers"][0][key] == original["containers"][0][key], key
