"""fastmesh.certs: generated mesh certificates, proven with real TLS handshakes (plain ``ssl``,
no fastmesh code on the verifying side), the openssl CLI, PyYAML and the CLI as a process."""

from __future__ import annotations

import asyncio
import base64
import datetime
import os
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import uvloop
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fastmesh import certs

REPO = Path(__file__).resolve().parents[1]
UTC = datetime.timezone.utc


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str) -> bytes:
    """A real TLS connection on loopback (uvloop); returns the server's certificate (DER)."""
    async def scenario() -> bytes:
        async def handle(reader, writer):
            try:
                await reader.readexactly(4)
                writer.write(b"pong")
                await writer.drain()
            except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                "127.0.0.1", server.sockets[0].getsockname()[1], ssl=client_ctx,
                server_hostname=server_hostname), 10)
            try:
                writer.write(b"ping")
                assert await asyncio.wait_for(reader.readexactly(4), 10) == b"pong"
                return writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            finally:
                writer.close()
        finally:
            server.close()

    return uvloop.run(scenario())


def server_ctx(paths_cert: Path, paths_key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(paths_cert), str(paths_key))
    return ctx


def strict_client_ctx(ca: Path) -> ssl.SSLContext:
    """What a careful OpenSSL client does (Python 3.13's default context, strict flags on)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return ctx


@pytest.fixture
def mesh(tmp_path) -> certs.MeshCertPaths:
    return certs.generate_mesh_certs(tmp_path / "mesh")


# --------------------------------------------------------------------------- files

def test_files_names_and_modes(mesh, tmp_path):
    assert sorted(p.name for p in (tmp_path / "mesh").iterdir()) == \
        ["cacertificate.pem", "cakey.pk8", "certificate.pem", "key.pk8"]
    for key in (mesh.key, mesh.ca_key):
        assert os.stat(key).st_mode & 0o777 == 0o600, key
        assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n"), "unencrypted PKCS#8 PEM"
    for cert in (mesh.cert, mesh.ca_cert):
        assert os.stat(cert).st_mode & 0o777 == 0o644, cert


def test_ca_and_leaf_extensions(mesh):
    ca, leaf = load(mesh.ca_cert), load(mesh.cert)
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign

    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "linkerd"
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["linkerd"]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    leaf.verify_directly_issued_by(ca)
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    assert leaf.public_key().curve.name == "secp256r1"
    days = (leaf.not_valid_after_utc - datetime.datetime.now(UTC)).days
    assert 363 <= days <= 365


def test_rsa_key_type_and_days(tmp_path):
    paths = certs.generate_mesh_certs(tmp_path, common_name="mesh.internal", days=30, key_type="rsa")
    leaf = load(paths.cert)
    assert isinstance(leaf.public_key(), rsa.RSAPublicKey) and leaf.public_key().key_size == 2048
    assert 29 <= (leaf.not_valid_after_utc - datetime.datetime.now(UTC)).days <= 30
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "mesh.internal"
    handshake(server_ctx(paths.cert, paths.key), strict_client_ctx(paths.ca_cert), "mesh.internal")


def test_refuses_to_overwrite_unless_forced(mesh, tmp_path):
    before = mesh.cert.read_bytes()
    with pytest.raises(certs.CertsError, match="refusing to overwrite.*--force"):
        certs.generate_mesh_certs(tmp_path / "mesh")
    assert mesh.cert.read_bytes() == before
    certs.generate_mesh_certs(tmp_path / "mesh", force=True)
    assert mesh.cert.read_bytes() != before


# --------------------------------------------------------------------------- real handshakes

@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_handshake_verified_as_linkerd(tmp_path, key_type):
    paths = certs.generate_mesh_certs(tmp_path, key_type=key_type)
    peer = handshake(server_ctx(paths.cert, paths.key), strict_client_ctx(paths.ca_cert), "linkerd")
    assert x509.load_der_x509_certificate(peer) == load(paths.cert)


def test_certificate_of_another_ca_is_refused(mesh, tmp_path):
    other = certs.generate_mesh_certs(tmp_path / "other")
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer certificate"):
        handshake(server_ctx(other.cert, other.key), strict_client_ctx(mesh.ca_cert), "linkerd")


def test_wrong_name_is_refused(mesh, tmp_path):
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(server_ctx(mesh.cert, mesh.key), strict_client_ctx(mesh.ca_cert), "world")
    # A certificate of the right CA but for another name.
    cert, key = certs.issue_cert(mesh.ca_cert, mesh.ca_key, "not-linkerd", tmp_path / "n.pem", tmp_path / "n.pk8")
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(server_ctx(cert, key), strict_client_ctx(mesh.ca_cert), "linkerd")
    handshake(server_ctx(cert, key), strict_client_ctx(mesh.ca_cert), "not-linkerd")


def test_issued_certs_work_for_mutual_tls(mesh, tmp_path):
    client_cert, client_key = certs.issue_cert(mesh.ca_cert, mesh.ca_key, "client-node",
                                               tmp_path / "c.pem", tmp_path / "c.pk8", days=7)
    assert os.stat(client_key).st_mode & 0o777 == 0o600
    server = server_ctx(mesh.cert, mesh.key)
    server.load_verify_locations(cafile=str(mesh.ca_cert))
    server.verify_mode = ssl.CERT_REQUIRED
    client = strict_client_ctx(mesh.ca_cert)
    client.load_cert_chain(str(client_cert), str(client_key))
    handshake(server, client, "linkerd")


def test_issue_cert_errors(mesh, tmp_path):
    with pytest.raises(certs.CertsError, match="is not the key of the CA"):
        certs.issue_cert(mesh.ca_cert, mesh.key, "x", tmp_path / "x.pem", tmp_path / "x.pk8")
    with pytest.raises(certs.CertsError, match="cannot read CA certificate"):
        certs.issue_cert(tmp_path / "none.pem", mesh.ca_key, "x", tmp_path / "x.pem", tmp_path / "x.pk8")
    with pytest.raises(certs.CertsError, match="refusing to overwrite"):
        certs.issue_cert(mesh.ca_cert, mesh.ca_key, "x", mesh.cert, tmp_path / "x.pk8")
    with pytest.raises(certs.CertsError, match="key type 'dsa' is not supported"):
        certs.issue_cert(mesh.ca_cert, mesh.ca_key, "x", tmp_path / "y.pem", tmp_path / "y.pk8", key_type="dsa")


def test_openssl_cli_verifies_the_chain_strictly(mesh):
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    for purpose in ("sslserver", "sslclient"):
        out = subprocess.run(["openssl", "verify", "-x509_strict", "-purpose", purpose,
                              "-CAfile", str(mesh.ca_cert), str(mesh.cert)],
                             capture_output=True, text=True)
        assert out.returncode == 0 and out.stdout.strip().endswith(": OK"), out.stdout + out.stderr


# --------------------------------------------------------------------------- Kubernetes Secret

def test_secret_yaml_holds_the_three_files(mesh):
    doc = yaml.safe_load(certs.k8s_secret_yaml(mesh))
    assert doc["apiVersion"] == "v1" and doc["kind"] == "Secret" and doc["type"] == "Opaque"
    assert doc["metadata"] == {"name": "certificates"}
    assert set(doc["data"]) == {"cacertificate.pem", "certificate.pem", "key.pk8"}
    for name, path in (("cacertificate.pem", mesh.ca_cert), ("certificate.pem", mesh.cert),
                       ("key.pk8", mesh.key)):
        assert base64.b64decode(doc["data"][name]) == path.read_bytes()
    ns = yaml.safe_load(certs.k8s_secret_yaml(mesh, namespace="linkerd"))
    assert ns["metadata"] == {"name": "certificates", "namespace": "linkerd"}


# --------------------------------------------------------------------------- CLI (real process)

def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastmesh.certs", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_cli_writes_files_and_secret_and_refuses_overwrite(tmp_path):
    out, secret = tmp_path / "certs", tmp_path / "secret.yml"
    first = cli("--out", str(out), "--k8s-secret", str(secret), "--common-name", "linkerd")
    assert first.returncode == 0, first.stderr
    paths = certs.MeshCertPaths.in_dir(out)
    for p in (paths.ca_cert, paths.ca_key, paths.cert, paths.key, secret):
        assert p.exists(), p
    assert os.stat(secret).st_mode & 0o777 == 0o600
    doc = yaml.safe_load(secret.read_text())
    assert base64.b64decode(doc["data"]["key.pk8"]) == paths.key.read_bytes()
    handshake(server_ctx(paths.cert, paths.key), strict_client_ctx(paths.ca_cert), "linkerd")

    before = {p: p.read_bytes() for p in (paths.cert, paths.key, secret)}
    again = cli("--out", str(out), "--k8s-secret", str(secret))
    assert again.returncode == 1
    assert "refusing to overwrite" in again.stderr and str(paths.cert) in again.stderr
    assert all(p.read_bytes() == data for p, data in before.items())

    forced = cli("--out", str(out), "--k8s-secret", str(secret), "--force", "--key-type", "rsa")
    assert forced.returncode == 0, forced.stderr
    assert all(p.read_bytes() != data for p, data in before.items())
    assert isinstance(load(paths.cert).public_key(), rsa.RSAPublicKey)


def test_cli_refuses_before_writing_anything(tmp_path):
    secret = tmp_path / "secret.yml"
    secret.write_text("keep me\n")
    result = cli("--out", str(tmp_path / "certs"), "--k8s-secret", str(secret))
    assert result.returncode == 1 and str(secret) in result.stderr
    assert not (tmp_path / "certs").exists()
    assert secret.read_text() == "keep me\n"


@pytest.mark.parametrize("args", [["--out", "x", "--key-type", "dsa"], ["--out", "x", "--days", "0"],
                                  ["--out", "x", "--days", "soon"], []])
def test_cli_usage_errors_exit_2(tmp_path, args):
    result = cli(*[str(tmp_path / a) if a == "x" else a for a in args])
    assert result.returncode == 2, result.stderr
    assert "usage:" in result.stderr
