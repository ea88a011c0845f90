"""fastmesh.tls: SSLContexts from linkerd TLS settings, checked with real handshakes on loopback.

Every case runs a real TLS server and client (OpenSSL through ``ssl``, on uvloop). The
linkerd example's certificates (tests/data/certs/linkerd-example, public sample data) are
used unchanged: their CA expired in 2016, both certificates are X.509 v1 without SAN, and
the key has CRLF line ends. Fresh processes prove that valid certificates are loaded
without importing ``cryptography``; uvloop transfers prove the SSL objects' C read/write/
pending carry real traffic (and that no Python-level wrapper runs).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import json
import logging
import os
import shutil
import ssl
import subprocess
import sys
import types
from pathlib import Path

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec
from cryptography.x509.oid import NameOID

from fastmesh import certs, tls

EXAMPLE = Path(__file__).parent / "data" / "certs" / "linkerd-example"
EX_CA = EXAMPLE / "cacertificate.pem"
EX_CERT = EXAMPLE / "certificate.pem"
EX_KEY = EXAMPLE / "key.pk8"
UTC = datetime.timezone.utc


# --------------------------------------------------------------------------- helpers

def run_async(coro):
    return uvloop.run(coro)


async def _exchange(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext,
                    server_hostname: str | None, *, client_tls: tls.ClientTls | None = None,
                    session: ssl.SSLSession | None = None) -> dict:
    """One TLS connection on loopback: handshake, ping/pong, and what was negotiated."""
    async def handle(reader, writer):
        try:
            if await reader.readexactly(4) == b"ping":
                writer.write(b"pong")
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        if session is not None:
            tls.offer_session(session)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=client_ctx,
                                    server_hostname=server_hostname), 10)
        try:
            sslobj = writer.get_extra_info("ssl_object")
            if client_tls is not None:
                client_tls.post_handshake_check(sslobj)
            writer.write(b"ping")
            pong = await asyncio.wait_for(reader.readexactly(4), 10)
            return {"pong": pong, "version": sslobj.version(), "cipher": sslobj.cipher()[0],
                    "alpn": sslobj.selected_alpn_protocol(), "reused": sslobj.session_reused,
                    "session": sslobj.session, "peer": sslobj.getpeercert(binary_form=True)}
        finally:
            writer.close()
    finally:
        server.close()


def exchange(server_ctx, client: tls.ClientTls, **kw) -> dict:
    # No explicit post_handshake_check here: legacy anchor mode must refuse a peer inside
    # the handshake itself, which is what these tests prove.
    return run_async(_exchange(server_ctx, client.context, client.server_hostname, **kw))


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(path_prefix: Path, cn: str, *, issuer: tuple[x509.Certificate, object] | None = None,
              ca: bool = False, san: list[str] | None = None, days_from: int = -1,
              days_to: int = 30) -> tuple[Path, Path, x509.Certificate, object]:
    """A certificate built here (for chain shapes certs.py does not make, e.g. intermediates)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(cn))
               .issuer_name(issuer[0].subject if issuer else _name(cn))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now + datetime.timedelta(days=days_from))
               .not_valid_after(now + datetime.timedelta(days=days_to)))
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in san]),
                                        critical=False)
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    cert_path, key_path = Path(f"{path_prefix}.pem"), Path(f"{path_prefix}.key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path, cert, key


@pytest.fixture
def mesh(tmp_path) -> certs.MeshCertPaths:
    return certs.generate_mesh_certs(tmp_path / "mesh")


@pytest.fixture
def other_mesh(tmp_path) -> certs.MeshCertPaths:
    return certs.generate_mesh_certs(tmp_path / "other-mesh")


# --------------------------------------------------------------------------- the test data itself

def test_example_data_is_the_linkerd_secret_unchanged():
    shared = Path(__file__).resolve().parents[2] / "shared" / "linkerd-examples" / "certificates.yml"
    if not shared.exists():
        pytest.skip("the shared linkerd-examples copy is not present")
    import yaml
    secret = yaml.safe_load(shared.read_text())
    for name in ("cacertificate.pem", "certificate.pem", "key.pk8"):
        assert (EXAMPLE / name).read_bytes() == base64.b64decode(secret["data"][name]), name


# --------------------------------------------------------------------------- loading files

def test_certificate_with_leading_text_loads():
    data = EX_CERT.read_bytes()
    assert data.startswith(b"Certificate:\n    Data:"), "the example starts with openssl -text output"
    (cert,) = tls.load_pem_certs(EX_CERT)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "linkerd"
    assert cert.version == x509.Version.v1


def test_generated_cert_with_leading_text_and_crlf_serves_real_handshake(mesh, tmp_path):
    text_cert = tmp_path / "with-text.pem"
    text_cert.write_bytes(b"Certificate:\n    Subject: CN=linkerd\n    some openssl -text dump\n"
                          + mesh.cert.read_bytes().replace(b"\n", b"\r\n"))
    crlf_key = tmp_path / "crlf.pk8"
    crlf_key.write_bytes(mesh.key.read_bytes().replace(b"\n", b"\r\n"))
    server = tls.server_context(text_cert, crlf_key)
    result = exchange(server, tls.client_tls("linkerd", trust_certs=[str(mesh.ca_cert)]))
    assert result["pong"] == b"pong"
    assert x509.load_der_x509_certificate(result["peer"]) == tls.load_pem_certs(mesh.cert)[0]


def test_example_pkcs8_key_with_crlf_loads():
    assert b"-----BEGIN PRIVATE KEY-----\r\n" in EX_KEY.read_bytes()
    key = tls.load_private_key(EX_KEY)
    cert = tls.load_pem_certs(EX_CERT)[0]
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    ctx = tls.server_context(EX_CERT, EX_KEY)
    assert isinstance(ctx, ssl.SSLContext)


@pytest.mark.parametrize("key_type,marker", [("rsa", b"-----BEGIN RSA PRIVATE KEY-----"),
                                             ("ec", b"-----BEGIN EC PRIVATE KEY-----")])
def test_traditional_pem_keys_serve_real_handshake(tmp_path, key_type, marker):
    paths = certs.generate_mesh_certs(tmp_path / key_type, key_type=key_type)
    key = serialization.load_pem_private_key(paths.key.read_bytes(), None)
    legacy = tmp_path / "traditional.key"
    legacy.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.TraditionalOpenSSL,
                                         serialization.NoEncryption()))
    assert legacy.read_bytes().startswith(marker)
    result = exchange(tls.server_context(paths.cert, legacy),
                      tls.client_tls("linkerd", trust_certs=[str(paths.ca_cert)]))
    assert result["pong"] == b"pong"


def _bad_file_cases(tmp: Path, mesh: certs.MeshCertPaths, other: certs.MeshCertPaths):
    garbage = tmp / "garbage.pem"
    garbage.write_bytes(b"this is not a certificate\n")
    encrypted = tmp / "encrypted.pk8"
    key = serialization.load_pem_private_key(mesh.key.read_bytes(), None)
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"secret")))
    broken = tmp / "broken.pem"
    broken.write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    traditional_encrypted = tmp / "encrypted.key"
    traditional_encrypted.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(b"secret")))
    broken_key = tmp / "broken.pk8"
    broken_key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n")
    # A DSA certificate and its own key: OpenSSL would load them, fastmesh refuses the type.
    dsa_key = dsa.generate_private_key(key_size=2048)
    now = datetime.datetime.now(UTC)
    dsa_cert = (x509.CertificateBuilder().subject_name(_name("linkerd")).issuer_name(_name("linkerd"))
                .public_key(dsa_key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=1)).sign(dsa_key, hashes.SHA256()))
    dsa_cert_path, dsa_key_path = tmp / "dsa.pem", tmp / "dsa.pk8"
    dsa_cert_path.write_bytes(dsa_cert.public_bytes(serialization.Encoding.PEM))
    dsa_key_path.write_bytes(dsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    # (cert_path, key_path, the path the message must name, words it must contain)
    return [
        (tmp / "missing.pem", mesh.key, tmp / "missing.pem", "not found"),
        (mesh.cert, tmp / "missing.pk8", tmp / "missing.pk8", "not found"),
        (tmp, mesh.key, tmp, "is a directory"),
        (garbage, mesh.key, garbage, "no PEM certificate"),
        (mesh.key, mesh.cert, mesh.key, "swapped"),
        (mesh.cert, garbage, garbage, "no PEM private key"),
        (mesh.cert, encrypted, encrypted, "encrypted private keys are not supported"),
        (mesh.cert, other.key, other.key, "does not belong to the certificate"),
        (broken, mesh.key, broken, "cannot be parsed"),
        (mesh.cert, traditional_encrypted, traditional_encrypted, "encrypted private keys are not supported"),
        (mesh.cert, broken_key, broken_key, "the private key cannot be parsed"),
        (dsa_cert_path, dsa_key_path, dsa_key_path, "is not supported (use RSA or EC)"),
    ]


def test_bad_files_give_clear_errors(tmp_path, mesh, other_mesh):
    for cert_path, key_path, named, words in _bad_file_cases(tmp_path, mesh, other_mesh):
        with pytest.raises(tls.TlsConfigError) as err:
            tls.server_context(cert_path, key_path)
        assert str(named) in str(err.value), (cert_path, key_path, str(err.value))
        assert words in str(err.value), (cert_path, key_path, str(err.value))


def test_bad_trust_file_is_named(tmp_path):
    with pytest.raises(tls.TlsConfigError, match="trustCerts.*nope.pem.*not found"):
        tls.client_tls("linkerd", trust_certs=[str(tmp_path / "nope.pem")])
    with pytest.raises(tls.TlsConfigError, match="caCertPath"):
        tls.server_context(EX_CERT, EX_KEY, ca_cert_path=tmp_path / "nope.pem")


def test_load_pem_certs_returns_all_in_order(mesh, other_mesh, tmp_path):
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(b"# a comment line\n" + mesh.ca_cert.read_bytes() + b"\nbetween\n"
                       + other_mesh.ca_cert.read_bytes())
    got = tls.load_pem_certs(bundle)
    assert got == tls.load_pem_certs(mesh.ca_cert) + tls.load_pem_certs(other_mesh.ca_cert)


# --------------------------------------------------------------------------- normal verification

def test_normal_mode_context_shape(mesh):
    client = tls.client_tls("linkerd", trust_certs=[str(mesh.ca_cert)])
    ctx = client.context
    assert not client.legacy_anchor_mode
    assert client.server_hostname == "linkerd"
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.hostname_checks_common_name
    assert not ctx.verify_flags & ssl.VERIFY_X509_STRICT


def test_fresh_mesh_certs_verify_and_wrong_ones_are_refused(mesh, other_mesh):
    server = tls.server_context(mesh.cert, mesh.key)
    ok = exchange(server, tls.client_tls("linkerd", trust_certs=[str(mesh.ca_cert)]))
    assert ok["pong"] == b"pong" and ok["alpn"] == "http/1.1"
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        exchange(server, tls.client_tls("other", trust_certs=[str(mesh.ca_cert)]))
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        exchange(server, tls.client_tls("linkerd", trust_certs=[str(other_mesh.ca_cert)]))


def test_trust_certs_are_concatenated(mesh, other_mesh):
    client = tls.client_tls("linkerd", trust_certs=[str(other_mesh.ca_cert), str(mesh.ca_cert)])
    for paths in (mesh, other_mesh):
        assert exchange(tls.server_context(paths.cert, paths.key), client)["pong"] == b"pong"


def test_trust_certs_bundle(mesh, other_mesh, tmp_path):
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(other_mesh.ca_cert.read_bytes() + mesh.ca_cert.read_bytes())
    client = tls.client_tls("linkerd", trust_certs_bundle=str(bundle))
    assert exchange(tls.server_context(mesh.cert, mesh.key), client)["pong"] == b"pong"


def test_x509_v1_chain_verifies_by_cn_without_strict_mode(tmp_path):
    """A non-expired v1 CA + v1 leaf without SAN (the example's shape) made by the openssl
    CLI: accepted for its CN, which needs VERIFY_X509_STRICT off (Python >= 3.13 sets it)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")

    def sh(*args):
        subprocess.run(["openssl", *args], cwd=tmp_path, check=True, capture_output=True)

    sh("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-subj", "/CN=v1 CA", "-out", "ca.csr")
    sh("x509", "-req", "-in", "ca.csr", "-signkey", "ca.key", "-days", "30", "-out", "ca.pem")
    sh("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "leaf.key", "-subj", "/CN=linkerd", "-out", "leaf.csr")
    sh("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
       "-days", "30", "-out", "leaf.pem")
    assert tls.load_pem_certs(tmp_path / "ca.pem")[0].version == x509.Version.v1
    assert tls.load_pem_certs(tmp_path / "leaf.pem")[0].version == x509.Version.v1

    server = tls.server_context(tmp_path / "leaf.pem", tmp_path / "leaf.key")
    client = tls.client_tls("linkerd", trust_certs=[str(tmp_path / "ca.pem")])
    assert not client.legacy_anchor_mode
    assert exchange(server, client)["pong"] == b"pong"
    with pytest.raises(ssl.SSLCertVerificationError):
        exchange(server, tls.client_tls("other", trust_certs=[str(tmp_path / "ca.pem")]))
    # The same chain under X509_STRICT is refused: that is what the flag handling prevents.
    strict = tls.client_tls("linkerd", trust_certs=[str(tmp_path / "ca.pem")])
    strict.context.verify_flags |= ssl.VERIFY_X509_STRICT
    with pytest.raises(ssl.SSLCertVerificationError, match="invalid CA certificate"):
        exchange(server, strict)


def test_client_config_errors(mesh):
    with pytest.raises(tls.TlsConfigError, match="commonName` is not set"):
        tls.client_tls(None, trust_certs=[str(mesh.ca_cert)])
    with pytest.raises(tls.TlsConfigError, match="not both"):
        tls.client_tls("linkerd", trust_certs=[str(mesh.ca_cert)], trust_certs_bundle=str(mesh.ca_cert))
    with pytest.raises(tls.TlsConfigError, match="disableValidation cannot be combined with clientAuth"):
        tls.client_tls(None, disable_validation=True,
                       client_auth={"certPath": str(mesh.cert), "keyPath": str(mesh.key)})
    with pytest.raises(tls.TlsConfigError, match="keyPath is required"):
        tls.client_tls("linkerd", client_auth={"certPath": str(mesh.cert)})


def test_disable_validation_accepts_any_certificate(mesh):
    client = tls.client_tls(None, disable_validation=True)
    assert client.server_hostname is None
    # The expired, unrelated example chain: nothing is verified.
    assert exchange(tls.server_context(EX_CERT, EX_KEY), client)["pong"] == b"pong"


def test_system_store_when_no_trust_is_configured(mesh):
    client = tls.client_tls("linkerd")
    assert client.context.verify_mode == ssl.CERT_REQUIRED
    # Our private mesh CA is not in the system store.
    with pytest.raises(ssl.SSLCertVerificationError):
        exchange(tls.server_context(mesh.cert, mesh.key), client)


def test_client_auth_required_by_server(mesh, other_mesh):
    server = tls.server_context(mesh.cert, mesh.key, ca_cert_path=mesh.ca_cert, require_client_auth=True)
    with_cert = tls.client_tls("linkerd", trust_certs=[str(mesh.ca_cert)],
                               client_auth=tls.ClientAuthConfig(str(mesh.cert), str(mesh.key)))
    assert exchange(server, with_cert)["pong"] == b"pong"

    for client in (tls.client_tls("linkerd", trust_certs=[str(mesh.ca_cert)]),
                   tls.client_tls("linkerd", trust_certs=[str(mesh.ca_cert)],
                                  client_auth={"certPath": str(other_mesh.cert),
                                               "keyPath": str(other_mesh.key)})):
        # Under TLS 1.3 the server's refusal arrives after the client's handshake ends:
        # the exchange fails either way, it never gets a pong.
        with pytest.raises((ssl.SSLError, OSError, asyncio.IncompleteReadError)):
            exchange(server, client)


def test_server_does_not_ask_for_client_certs_unless_required(mesh, other_mesh):
    server = tls.server_context(mesh.cert, mesh.key, ca_cert_path=mesh.ca_cert)
    client = tls.client_tls("linkerd", trust_certs=[str(mesh.ca_cert)],
                            client_auth={"certPath": str(other_mesh.cert), "keyPath": str(other_mesh.key)})
    assert exchange(server, client)["pong"] == b"pong"


# --------------------------------------------------------------------------- legacy anchor mode

def test_plain_openssl_refuses_the_example_ca():
    """The problem legacy anchor mode exists for: OpenSSL checks the anchor's dates."""
    plain = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    plain.load_verify_locations(cafile=str(EX_CA))
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate has expired"):
        run_async(_exchange(tls.server_context(EX_CERT, EX_KEY), plain, "linkerd"))


def test_legacy_mode_accepts_the_example_for_linkerd(tmp_path, caplog):
    ca_copy = tmp_path / "cacertificate.pem"  # a fresh path: the warning is once per file
    ca_copy.write_bytes(EX_CA.read_bytes())
    with caplog.at_level(logging.WARNING, logger="fastmesh.tls"):
        client = tls.client_tls("linkerd", trust_certs=[str(ca_copy)])
        tls.client_tls("linkerd", trust_certs=[str(ca_copy)])
    warnings = [r.getMessage() for r in caplog.records if r.name == "fastmesh.tls"]
    assert len(warnings) == 1, warnings
    assert str(ca_copy) in warnings[0] and "expired on 2016-11-19" in warnings[0]
    assert "legacy anchor mode" in warnings[0]
    assert client.legacy_anchor_mode

    result = exchange(tls.server_context(EX_CERT, EX_KEY), client)
    assert result["pong"] == b"pong"
    assert x509.load_der_x509_certificate(result["peer"]) == tls.load_pem_certs(EX_CERT)[0]


def test_legacy_mode_refuses_another_name():
    client = tls.client_tls("world", trust_certs=[str(EX_CA)])
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch.*'world'") as err:
        exchange(tls.server_context(EX_CERT, EX_KEY), client)
    assert err.value.verify_code == 62


def test_legacy_mode_refuses_a_leaf_of_another_ca(mesh):
    client = tls.client_tls("linkerd", trust_certs=[str(EX_CA)])
    # CN/SAN linkerd, valid dates, but signed by our fresh CA, not by "My CA".
    with pytest.raises(ssl.SSLCertVerificationError, match="not signed by any trust certificate"):
        exchange(tls.server_context(mesh.cert, mesh.key), client)
    # post_handshake_check gives the same verdict when called by hand.
    async def manual():
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0,
                                            ssl=tls.server_context(mesh.cert, mesh.key))
        plain = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        plain.check_hostname, plain.verify_mode = False, ssl.CERT_NONE
        try:
            _, writer = await asyncio.open_connection(
                "127.0.0.1", server.sockets[0].getsockname()[1], ssl=plain, server_hostname="linkerd")
            try:
                client.post_handshake_check(writer.get_extra_info("ssl_object"))
            finally:
                writer.close()
        finally:
            server.close()
    with pytest.raises(ssl.SSLCertVerificationError, match="not signed by any trust certificate"):
        run_async(manual())


def test_legacy_mode_also_guards_blocking_sockets(mesh):
    """``context.wrap_socket`` (no event loop) runs the same check inside its handshake."""
    import socket

    client = tls.client_tls("linkerd", trust_certs=[str(EX_CA)])

    def blocking_connect(port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with client.context.wrap_socket(raw, server_hostname=client.server_hostname) as conn:
                conn.sendall(b"ping")
                return conn.recv(4)

    async def scenario(server_ctx):
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
            return await asyncio.to_thread(blocking_connect, server.sockets[0].getsockname()[1])
        finally:
            server.close()

    assert run_async(scenario(tls.server_context(EX_CERT, EX_KEY))) == b"pong"
    with pytest.raises(ssl.SSLCertVerificationError, match="not signed by any trust certificate"):
        run_async(scenario(tls.server_context(mesh.cert, mesh.key)))


def test_legacy_mode_checks_the_leaf_dates_and_names(tmp_path):
    past = datetime.datetime(2016, 1, 1, tzinfo=UTC)
    ca_cert, ca_key = certs.generate_ca(tmp_path / "old-ca.pem", tmp_path / "old-ca.pk8", days=1,
                                        not_before=past, not_after=past + datetime.timedelta(days=30))
    client = tls.client_tls("linkerd", trust_certs=[str(ca_cert)])
    assert client.legacy_anchor_mode

    def leaf(name, **kw):
        return certs.issue_cert(ca_cert, ca_key, name, tmp_path / f"{name}-{len(kw)}.pem",
                                tmp_path / f"{name}-{len(kw)}.pk8", force=True, **kw)

    good = leaf("linkerd")
    assert exchange(tls.server_context(*good), client)["pong"] == b"pong"

    now = datetime.datetime.now(UTC)
    expired = leaf("linkerd", not_before=past, not_after=past + datetime.timedelta(days=60))
    with pytest.raises(ssl.SSLCertVerificationError, match="expired on 2016-03-01") as err:
        exchange(tls.server_context(*expired), client)
    assert err.value.verify_code == 10
    future = leaf("linkerd", not_before=now + datetime.timedelta(days=3),
                  not_after=now + datetime.timedelta(days=30))
    with pytest.raises(ssl.SSLCertVerificationError, match="not valid before") as err:
        exchange(tls.server_context(*future), client)
    assert err.value.verify_code == 9

    # No SAN: the CN decides (the example's case) ...
    cn_only = leaf("linkerd", san_names=[])
    assert exchange(tls.server_context(*cn_only), client)["pong"] == b"pong"
    # ... but a DNS SAN, when present, is the only name that counts.
    san_other = leaf("linkerd", san_names=["other.example"])
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        exchange(tls.server_context(*san_other), client)
    wildcard = leaf("*.mesh.example")
    star_client = tls.client_tls("node1.mesh.example", trust_certs=[str(ca_cert)])
    assert exchange(tls.server_context(*wildcard), star_client)["pong"] == b"pong"
    deep_client = tls.client_tls("a.node1.mesh.example", trust_certs=[str(ca_cert)])
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        exchange(tls.server_context(*wildcard), deep_client)
    # A client-only certificate is no server certificate.
    client_only = leaf("linkerd", server_auth=False)
    with pytest.raises(ssl.SSLCertVerificationError, match="serverAuth"):
        exchange(tls.server_context(*client_only), client)


def test_legacy_mode_for_a_not_yet_valid_anchor(tmp_path, caplog):
    start = datetime.datetime.now(UTC) + datetime.timedelta(days=10)
    ca_cert, ca_key = certs.generate_ca(tmp_path / "ca.pem", tmp_path / "ca.pk8",
                                        not_before=start, not_after=start + datetime.timedelta(days=10))
    leaf = certs.issue_cert(ca_cert, ca_key, "linkerd", tmp_path / "l.pem", tmp_path / "l.pk8")
    with caplog.at_level(logging.WARNING, logger="fastmesh.tls"):
        client = tls.client_tls("linkerd", trust_certs=[str(ca_cert)])
    assert client.legacy_anchor_mode
    assert any("not valid before" in r.getMessage() and str(ca_cert) in r.getMessage()
               for r in caplog.records)
    assert exchange(tls.server_context(*leaf), client)["pong"] == b"pong"


def test_legacy_mode_follows_intermediates_sent_by_the_server(tmp_path):
    root = make_cert(tmp_path / "root", "Old Root", ca=True, days_from=-400, days_to=-30)
    inter = make_cert(tmp_path / "inter", "Intermediate", ca=True, issuer=(root[2], root[3]))
    leaf = make_cert(tmp_path / "leaf", "linkerd", san=["linkerd"], issuer=(inter[2], inter[3]))
    def new_client():  # a fresh one each time: a client remembers leaves it verified
        return tls.client_tls("linkerd", trust_certs=[str(root[0])])

    client = new_client()
    assert client.legacy_anchor_mode
    chained = tls.server_context(leaf[0], leaf[1], intermediate_certs_path=inter[0])
    assert exchange(chained, client)["pong"] == b"pong"
    without = tls.server_context(leaf[0], leaf[1])
    with pytest.raises(ssl.SSLCertVerificationError, match="not signed by any trust certificate"):
        exchange(without, new_client())
    # Once verified with its chain, the same leaf is known (resumed sessions carry no chain).
    assert exchange(without, client)["pong"] == b"pong"
    client = new_client()
    # An intermediate that is no CA cannot sign.
    not_ca = make_cert(tmp_path / "notca", "Not a CA", issuer=(root[2], root[3]))
    leaf2 = make_cert(tmp_path / "leaf2", "linkerd", san=["linkerd"], issuer=(not_ca[2], not_ca[3]))
    with pytest.raises(ssl.SSLCertVerificationError, match="is not a CA"):
        exchange(tls.server_context(leaf2[0], leaf2[1], intermediate_certs_path=not_ca[0]), client)
    # An expired intermediate (unlike the anchor) is refused.
    old_inter = make_cert(tmp_path / "oldinter", "Old Intermediate", ca=True,
                          issuer=(root[2], root[3]), days_from=-300, days_to=-1)
    leaf3 = make_cert(tmp_path / "leaf3", "linkerd", san=["linkerd"], issuer=(old_inter[2], old_inter[3]))
    with pytest.raises(ssl.SSLCertVerificationError, match="intermediate certificate.*expired"):
        exchange(tls.server_context(leaf3[0], leaf3[1], intermediate_certs_path=old_inter[0]), client)


def test_legacy_mode_with_mixed_anchors_still_accepts_valid_ones(mesh):
    client = tls.client_tls("linkerd", trust_certs=[str(EX_CA), str(mesh.ca_cert)])
    assert client.legacy_anchor_mode
    assert exchange(tls.server_context(mesh.cert, mesh.key), client)["pong"] == b"pong"
    assert exchange(tls.server_context(EX_CERT, EX_KEY), client)["pong"] == b"pong"


# --------------------------------------------------------------------------- protocols and ciphers

@pytest.mark.parametrize("protocols,expected", [
    (["TLSv1.2"], (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)),
    (["TLSv1.3"], (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3)),
    (["TLSv1.3", "TLSv1.2"], (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)),
    (["TLSv1.1", "TLSv1.2", "TLSv1.3"], (ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_3)),
    (None, None),
])
def test_protocol_range(protocols, expected):
    assert tls.protocol_range(protocols) == expected


@pytest.mark.parametrize("protocols,words", [
    (["SSLv3"], "not supported"),
    (["TLSv1", "TLSv1.2"], "not a contiguous range"),
    (["TLSv9"], "unknown protocol"),
    ([], "non-empty list"),
    ("TLSv1.2", "non-empty list"),
])
def test_protocol_errors(protocols, words):
    with pytest.raises(tls.TlsConfigError, match=words):
        tls.protocol_range(protocols)


@pytest.mark.parametrize("server_protocols,client_protocols,negotiated", [
    (["TLSv1.2"], ["TLSv1.2"], "TLSv1.2"),
    (["TLSv1.2", "TLSv1.3"], ["TLSv1.2"], "TLSv1.2"),
    (["TLSv1.3"], None, "TLSv1.3"),
    (None, ["TLSv1.3"], "TLSv1.3"),
    (["TLSv1.3"], ["TLSv1.2"], None),
    (["TLSv1.2"], ["TLSv1.3"], None),
])
def test_protocols_in_real_handshakes(mesh, server_protocols, client_protocols, negotiated):
    server = tls.server_context(mesh.cert, mesh.key, protocols=server_protocols)
    client = tls.client_tls("linkerd", trust_certs=[str(mesh.ca_cert)], protocols=client_protocols)
    if negotiated is None:
        # The refusing side sends an alert (SSLError) or, with uvloop, may just reset.
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            exchange(server, client)
    else:
        assert exchange(server, client)["version"] == negotiated


def test_iana_cipher_table_matches_openssl_ids():
    for iana, (openssl_name, code) in tls.IANA_CIPHERS.items():
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.set_ciphers(f"{openssl_name}:@SECLEVEL=0")
        ids = {c["id"] & 0xFFFF: c["name"] for c in ctx.get_ciphers() if c["protocol"] != "TLSv1.3"}
        assert ids == {code: openssl_name}, iana


def test_server_ciphers_restrict_tls12_and_cap_the_version(mesh):
    server = tls.server_context(mesh.cert, mesh.key, ciphers=["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"])
    assert server.maximum_version == ssl.TLSVersion.TLSv1_2  # no TLS 1.3 suite listed, as in Java
    result = exchange(server, tls.client_tls("linkerd", trust_certs=[str(mesh.ca_cert)]))
    assert (result["version"], result["cipher"]) == ("TLSv1.2", "ECDHE-ECDSA-AES256-GCM-SHA384")
    # OpenSSL names work as well; all three TLS 1.3 suites keep TLS 1.3.
    both = tls.server_context(mesh.cert, mesh.key,
                              ciphers=["ECDHE-ECDSA-AES128-GCM-SHA256", "TLS_AES_128_GCM_SHA256",
                                       "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"])
    assert exchange(both, tls.client_tls("linkerd", trust_certs=[str(mesh.ca_cert)]))["version"] == "TLSv1.3"


@pytest.mark.parametrize("ciphers,words", [
    (["TLS_AES_128_GCM_SHA256"], "TLS 1.3 suites .* not supported"),
    (["TLS_NOT_A_SUITE_WITH_NOTHING"], "not a cipher suite fastmesh knows"),
    (["NOT-AN-OPENSSL-CIPHER"], "OpenSSL accepts none"),
    ([], "non-empty list"),
])
def test_cipher_errors(mesh, ciphers, words):
    with pytest.raises(tls.TlsConfigError, match=words):
        tls.server_context(mesh.cert, mesh.key, ciphers=ciphers)


# --------------------------------------------------------------------------- sessions and ALPN

@pytest.mark.parametrize("legacy", [False, True])
def test_session_resumption_with_offer_session(tmp_path, legacy):
    if legacy:
        server = tls.server_context(EX_CERT, EX_KEY)
        client = tls.client_tls("linkerd", trust_certs=[str(EX_CA)])
    else:
        paths = certs.generate_mesh_certs(tmp_path / "m")
        server = tls.server_context(paths.cert, paths.key)
        client = tls.client_tls("linkerd", trust_certs=[str(paths.ca_cert)])
    assert not server.options & ssl.OP_NO_TICKET

    async def scenario():
        first = await _exchange(server, client.context, client.server_hostname, client_tls=client)
        # Each connection is opened from its own task, as the pool does.
        resumed = await asyncio.create_task(_exchange(server, client.context, client.server_hostname,
                                                      client_tls=client, session=first["session"]))
        fresh = await asyncio.create_task(_exchange(server, client.context, client.server_hostname))
        return first, resumed, fresh

    first, resumed, fresh = run_async(scenario())
    assert first["alpn"] == resumed["alpn"] == "http/1.1"
    assert not first["reused"]
    assert resumed["reused"]
    assert not fresh["reused"]


def test_session_of_another_context_is_ignored(mesh):
    server = tls.server_context(mesh.cert, mesh.key)
    one = tls.client_tls("linkerd", trust_certs=[str(mesh.ca_cert)])
    two = tls.client_tls("linkerd", trust_certs=[str(mesh.ca_cert)])

    async def scenario():
        first = await _exchange(server, one.context, "linkerd", client_tls=one)
        return await asyncio.create_task(_exchange(server, two.context, "linkerd", client_tls=two,
                                                   session=first["session"]))

    result = run_async(scenario())
    assert result["pong"] == b"pong" and not result["reused"]


def test_server_context_warns_about_an_expired_certificate(tmp_path, caplog):
    past = datetime.datetime(2020, 1, 1, tzinfo=UTC)
    ca = certs.generate_ca(tmp_path / "ca.pem", tmp_path / "ca.pk8")
    leaf = certs.issue_cert(*ca, "linkerd", tmp_path / "l.pem", tmp_path / "l.pk8",
                            not_before=past, not_after=past + datetime.timedelta(days=1))
    with caplog.at_level(logging.WARNING, logger="fastmesh.tls"):
        tls.server_context(*leaf)
    assert any(str(leaf[0]) in r.getMessage() and "expired on 2020-01-02" in r.getMessage()
               for r in caplog.records)
    assert os.stat(leaf[1]).st_mode & 0o777 == 0o600


def test_client_auth_as_a_tuple_serves_real_handshake(mesh):
    """fastmesh.linker passes clientAuth as (certPath, keyPath, intermediateCertsPath)."""
    server = tls.server_context(mesh.cert, mesh.key, ca_cert_path=mesh.ca_cert, require_client_auth=True)
    client = tls.client_tls("linkerd", trust_certs=[str(mesh.ca_cert)],
                            client_auth=(str(mesh.cert), str(mesh.key), None))
    assert exchange(server, client)["pong"] == b"pong"
    with pytest.raises(tls.TlsConfigError, match="clientAuth"):
        tls.client_tls("linkerd", trust_certs=[str(mesh.ca_cert)], client_auth=(str(mesh.cert),))


def test_bad_intermediate_and_trust_files_are_diagnosed(mesh, tmp_path):
    broken = tmp_path / "broken.pem"
    broken.write_bytes(b"text\n-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n")
    with pytest.raises(tls.TlsConfigError, match=f"intermediateCertsPath.*{broken}.*cannot be parsed"):
        tls.server_context(mesh.cert, mesh.key, intermediate_certs_path=broken)
    with pytest.raises(tls.TlsConfigError, match=f"trustCerts.*{broken}.*cannot be parsed"):
        tls.client_tls("linkerd", trust_certs=[str(mesh.ca_cert), str(broken)])
    with pytest.raises(tls.TlsConfigError, match=f"caCertPath.*{mesh.key}.*swapped"):
        tls.server_context(mesh.cert, mesh.key, ca_cert_path=mesh.key)


# --------------------------------------------------------------------------- without cryptography

# Builds both contexts in a fresh interpreter, runs one handshake on uvloop and reports
# which modules got imported. argv[1]: JSON {server: kwargs, client: kwargs}.
_FRESH_PROCESS = r"""
import asyncio, json, sys
import uvloop
from fastmesh import tls

cfg = json.loads(sys.argv[1])
server = tls.server_context(**cfg["server"])
client = tls.client_tls(**cfg["client"])

async def main():
    async def handle(reader, writer):
        writer.write(await reader.readexactly(4))
        await writer.drain()
        writer.close()
    srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server)
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", srv.sockets[0].getsockname()[1], ssl=client.context,
            server_hostname=client.server_hostname)
        writer.write(b"ping")
        got = await asyncio.wait_for(reader.readexactly(4), 10)
        writer.close()
        return got
    finally:
        srv.close()

echo = uvloop.run(main())
print(json.dumps({"echo": echo.decode(), "legacy": client.legacy_anchor_mode,
                  "cryptography": sorted(m for m in sys.modules if m.split(".")[0] == "cryptography")}))
"""


def _fresh_process(cfg: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", _FRESH_PROCESS, json.dumps(cfg)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_fresh_certificates_load_without_importing_cryptography(mesh, tmp_path):
    # The awkward-but-valid shapes too: text before the PEM block, CRLF key, client auth.
    text_cert = tmp_path / "with-text.pem"
    text_cert.write_bytes(b"Certificate:\n    Data: openssl -text output\n" + mesh.cert.read_bytes())
    crlf_key = tmp_path / "crlf.pk8"
    crlf_key.write_bytes(mesh.key.read_bytes().replace(b"\n", b"\r\n"))
    result = _fresh_process({
        "server": {"cert_path": str(text_cert), "key_path": str(crlf_key),
                   "ca_cert_path": str(mesh.ca_cert), "require_client_auth": True},
        "client": {"common_name": "linkerd", "trust_certs": [str(mesh.ca_cert)],
                   "client_auth": {"certPath": str(mesh.cert), "keyPath": str(mesh.key)}},
    })
    assert result == {"echo": "ping", "legacy": False, "cryptography": []}


def test_legacy_mode_in_a_fresh_process_still_works():
    result = _fresh_process({
        "server": {"cert_path": str(EX_CERT), "key_path": str(EX_KEY)},
        "client": {"common_name": "linkerd", "trust_certs": [str(EX_CA)]},
    })
    assert result["echo"] == "ping" and result["legacy"] is True
    assert "cryptography.x509" in result["cryptography"]  # legacy mode needs it, and only it


# --------------------------------------------------------------------------- SSL objects

def _contexts(mesh) -> dict[str, tuple[ssl.SSLContext, bool, str | None]]:
    return {
        "server": (tls.server_context(mesh.cert, mesh.key), True, None),
        "client": (tls.client_tls("linkerd", trust_certs=[str(mesh.ca_cert)]).context, False, "linkerd"),
        "legacy client": (tls.client_tls("linkerd", trust_certs=[str(EX_CA)]).context, False, "linkerd"),
    }


def test_ssl_objects_carry_the_c_io_methods(mesh):
    for label, (ctx, server_side, hostname) in _contexts(mesh).items():
        obj = ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=server_side, server_hostname=hostname)
        for name in ("read", "write", "pending"):
            method = getattr(obj, name)
            assert type(method) is types.BuiltinMethodType, (label, name)
            assert method.__self__ is obj._sslobj and method.__name__ == name, (label, name)
    legacy_ctx = _contexts(mesh)["legacy client"][0]
    assert type(legacy_ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="linkerd")).__name__ \
        == "_MeshSSLObject"  # the do_handshake hook is still there


def test_ssl_objects_cost_little_more_memory_than_stock_ones(mesh):
    """A proxy keeps one SSL object per connection (plus the three methods uvloop caches).
    Holding the C methods in slots costs three pointers and the C method objects' few extra
    bytes (48 B here), not an instance dict that grows (about 250 B)."""
    import tracemalloc

    stock_server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    stock_server.load_cert_chain(mesh.cert, mesh.key)
    stock_client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    pairs = [(stock_server, tls.server_context(mesh.cert, mesh.key), True),
             (stock_client, tls.client_tls("linkerd", trust_certs=[str(mesh.ca_cert)]).context, False)]

    def heap_per_object(ctx, server_side) -> float:
        bios = [(ssl.MemoryBIO(), ssl.MemoryBIO()) for _ in range(300)]
        tracemalloc.start()
        try:
            kept = []
            for incoming, outgoing in bios:
                obj = ctx.wrap_bio(incoming, outgoing, server_side=server_side,
                                   server_hostname=None if server_side else "linkerd")
                kept.append((obj, obj.read, obj.write, obj.pending))
            return tracemalloc.get_traced_memory()[0] / len(kept)
        finally:
            tracemalloc.stop()

    for stock, ours, server_side in pairs:
        # Interleaved, smallest of three: the first objects of a kind also pay one-off costs.
        runs = [(heap_per_object(stock, server_side), heap_per_object(ours, server_side)) for _ in range(3)]
        stock_cost, our_cost = min(r[0] for r in runs), min(r[1] for r in runs)
        assert our_cost <= stock_cost + 64, (server_side, runs)


def test_c_io_methods_take_the_calls_transports_make(mesh):
    """A handshake and data both ways between two in-memory SSL objects, using exactly the
    forms uvloop and asyncio use: read(n), read(n, buffer), write(data), pending()."""
    client_ctx = tls.client_tls("linkerd", trust_certs=[str(mesh.ca_cert)]).context
    server_ctx = tls.server_context(mesh.cert, mesh.key)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="linkerd")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)

    def shuttle():
        s_in.write(c_out.read())
        c_in.write(s_out.read())

    for _ in range(10):
        done = 0
        for side in (client, server):
            try:
                side.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
        shuttle()
        if done == 2:
            break
    else:
        pytest.fail("handshake did not finish")

    payload = os.urandom(40_000)  # more than two TLS records
    assert client.write(memoryview(payload)) == len(payload)
    shuttle()
    assert client.pending() == 0
    first = server.read(100)
    assert first == payload[:100] and server.pending() > 0
    buf = bytearray(50_000)
    got = len(first)
    buf[:got] = first
    while got < len(payload):
        try:
            got += server.read(len(buf) - got, memoryview(buf)[got:])
        except ssl.SSLWantReadError:
            pytest.fail(f"stalled after {got} bytes")
    assert bytes(buf[:got]) == payload
    with pytest.raises(ssl.SSLWantReadError):
        server.read(10)
    server.write(b"pong")
    shuttle()
    assert client.read(1024) == b"pong"


class _Sink(asyncio.BufferedProtocol):
    """Sends ``payload`` on connect and reads ``expect`` bytes into one fixed buffer (as
    fastmesh's pump does), hashing them."""

    def __init__(self, payload: bytes, expect: int, buffer_size: int):
        self.payload, self.expect = payload, expect
        self.view = memoryview(bytearray(buffer_size))
        self.digest, self.received = hashlib.sha256(), 0
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.payload)

    def get_buffer(self, sizehint):
        return self.view

    def buffer_updated(self, nbytes):
        self.digest.update(self.view[:nbytes])
        self.received += nbytes
        if self.received >= self.expect and not self.done.done():
            self.done.set_result(self.digest.hexdigest())

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError(f"closed after {self.received} bytes"))


async def _both_ways(server_ctx, client_ctx, hostname, up: bytes, down: bytes,
                     server_buffer: int, client_buffer: int) -> tuple[str, str, str]:
    """``up`` client→server and ``down`` server→client at once over uvloop's TLS transport;
    the SSL object's class name and the SHA-256 each side received."""
    sinks: list[_Sink] = []

    def server_protocol():
        sinks.append(_Sink(down, len(up), server_buffer))
        return sinks[-1]

    loop = asyncio.get_running_loop()
    server = await loop.create_server(server_protocol, "127.0.0.1", 0, ssl=server_ctx)
    try:
        transport, client = await loop.create_connection(
            lambda: _Sink(up, len(down), client_buffer), "127.0.0.1",
            server.sockets[0].getsockname()[1], ssl=client_ctx, server_hostname=hostname)
        try:
            got_down = await asyncio.wait_for(client.done, 60)
            got_up = await asyncio.wait_for(sinks[0].done, 60)
            kind = type(transport.get_extra_info("ssl_object")).__name__
        finally:
            transport.close()
            for sink in sinks:
                sink.transport.close()
    finally:
        server.close()
    return kind, got_up, got_down


@pytest.mark.parametrize("case", ["fresh TLSv1.3", "fresh TLSv1.2", "legacy example"])
def test_eight_megabytes_each_way_over_uvloop(mesh, case):
    if case == "legacy example":
        server = tls.server_context(EX_CERT, EX_KEY)
        client = tls.client_tls("linkerd", trust_certs=[str(EX_CA)])
        assert client.legacy_anchor_mode
    else:
        protocols = [case.split()[1]]
        server = tls.server_context(mesh.cert, mesh.key, protocols=protocols)
        client = tls.client_tls("linkerd", trust_certs=[str(mesh.ca_cert)], protocols=protocols)
    up, down = os.urandom(8 << 20), os.urandom(8 << 20)
    # A small client buffer (smaller than one TLS record) makes uvloop stop mid-record and
    # come back; the server's large one takes many records per call.
    kind, got_up, got_down = run_async(_both_ways(server, client.context, client.server_hostname,
                                                  up, down, server_buffer=256 << 10, client_buffer=1000))
    assert got_up == hashlib.sha256(up).hexdigest()
    assert got_down == hashlib.sha256(down).hexdigest()
    assert kind == "_MeshSSLObject"


def _python_io_calls(server_ctx, client_ctx) -> dict[str, int]:
    """How often ssl.SSLObject's Python read/write/pending ran during a uvloop transfer."""
    codes = {ssl.SSLObject.read.__code__: "read", ssl.SSLObject.write.__code__: "write",
             ssl.SSLObject.pending.__code__: "pending"}
    counts = dict.fromkeys(codes.values(), 0)

    def profile(frame, event, arg):
        if event == "call" and frame.f_code in codes:
            counts[codes[frame.f_code]] += 1

    payload = os.urandom(200_000)
    sys.setprofile(profile)
    try:
        run_async(_both_ways(server_ctx, client_ctx, "linkerd", payload, payload, 64 << 10, 64 << 10))
    finally:
        sys.setprofile(None)
    return counts


def test_uvloop_calls_openssl_without_python_wrappers(mesh):
    ours = _python_io_calls(tls.server_context(mesh.cert, mesh.key),
                            tls.client_tls("linkerd", trust_certs=[str(mesh.ca_cert)]).context)
    assert ours == {"read": 0, "write": 0, "pending": 0}
    # The same transfer with stock contexts goes through the wrappers: the probe sees them.
    plain_server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    plain_server.load_cert_chain(mesh.cert, mesh.key)
    plain_client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    plain_client.load_verify_locations(cafile=str(mesh.ca_cert))
    stock = _python_io_calls(plain_server, plain_client)
    assert stock["read"] > 0 and stock["write"] > 0 and stock["pending"] > 0, stock
