"""TLS files read with ``cryptography``: the precise error when the fast path could not load
a file, and the public loaders ``load_pem_certs`` / ``load_private_key``.

Role in the data path: none per request, and normally none at all. fastmesh.tls loads
certificates and keys with the ``ssl`` module and fastmesh.tls_certinfo only (importing
``cryptography`` costs about 9 MB of RSS per proxy process). Only when that fast path
fails (OpenSSL refuses a file, or a block is outside what tls_certinfo reads) is this module
imported: it re-reads the files with ``cryptography`` and either raises ``TlsConfigError``
saying exactly what is wrong (swapped certPath/keyPath, a key of another certificate, an
unparseable block, an encrypted key, an unsupported key type) or, when ``cryptography``
can read what tls_certinfo could not, returns the material normalised for OpenSSL.
"""

from __future__ import annotations

import datetime
import os
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from fastmesh.tls import IdentityMaterial, TlsConfigError, read_pem_file
from fastmesh.tls_certinfo import CertInfo

__all__ = ["load_pem_certs", "load_private_key", "cert_info", "read_identity", "read_trust"]


def load_pem_certs(path: str | os.PathLike[str], what: str = "certificate file") -> list[x509.Certificate]:
    """All certificates in a PEM file, in file order.

    Text outside the ``-----BEGIN CERTIFICATE-----`` blocks is skipped (the linkerd example's
    ``certificate.pem`` starts with ``openssl x509 -text`` output); CRLF line ends are fine.
    Raises ``TlsConfigError`` naming the path when there is no readable certificate.
    """
    data = read_pem_file(path, what)
    if b"-----BEGIN CERTIFICATE-----" not in data:
        hint = ""
        if b"PRIVATE KEY-----" in data:
            hint = " (it holds a private key: certPath and keyPath swapped?)"
        elif data[:1] == b"\x30":
            hint = " (it looks like DER; convert it with `openssl x509 -inform der -out FILE.pem`)"
        raise TlsConfigError(f"{what} {path}: no PEM certificate "
                             f"('-----BEGIN CERTIFICATE-----' block) found{hint}")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise TlsConfigError(f"{what} {path}: a PEM certificate block cannot be parsed ({exc})") from None


def load_private_key(path: str | os.PathLike[str], what: str = "private key file"):
    """The unencrypted private key in a PEM file: PKCS#8 (``BEGIN PRIVATE KEY``, what linkerd
    requires) or traditional (``BEGIN RSA PRIVATE KEY`` / ``BEGIN EC PRIVATE KEY``)."""
    data = read_pem_file(path, what)
    if b"ENCRYPTED PRIVATE KEY-----" in data or b"Proc-Type: 4,ENCRYPTED" in data:
        raise TlsConfigError(f"{what} {path}: encrypted private keys are not supported "
                             "(linkerd takes an unencrypted PKCS#8 key; decrypt it with "
                             "`openssl pkcs8 -topk8 -nocrypt`)")
    if b"PRIVATE KEY-----" not in data:
        hint = ""
        if b"-----BEGIN CERTIFICATE-----" in data:
            hint = " (it holds a certificate: certPath and keyPath swapped?)"
        raise TlsConfigError(f"{what} {path}: no PEM private key "
                             f"('-----BEGIN PRIVATE KEY-----' block) found{hint}")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise TlsConfigError(f"{what} {path}: the private key cannot be parsed ({exc})") from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey,
                            ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        raise TlsConfigError(f"{what} {path}: key type {type(key).__name__} is not supported "
                             "(use RSA or EC)")
    return key


def _utc(dt: datetime.datetime) -> datetime.datetime:
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=datetime.timezone.utc)


def not_before(cert: x509.Certificate) -> datetime.datetime:
    # cryptography >= 42 has the *_utc properties; older ones return naive UTC datetimes.
    return getattr(cert, "not_valid_before_utc", None) or _utc(cert.not_valid_before)


def not_after(cert: x509.Certificate) -> datetime.datetime:
    return getattr(cert, "not_valid_after_utc", None) or _utc(cert.not_valid_after)


def subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "<empty subject>"


def cert_info(cert: x509.Certificate) -> CertInfo:
    """The same facts tls_certinfo reads, taken from a ``cryptography`` certificate."""
    oid = getattr(cert, "public_key_algorithm_oid", None)  # cryptography >= 43
    return CertInfo(der=cert.public_bytes(serialization.Encoding.DER), version=cert.version.value + 1,
                    not_before=not_before(cert), not_after=not_after(cert),
                    subject=cert.subject.rfc4514_string(), issuer=cert.issuer.rfc4514_string(),
                    key_algorithm=oid.dotted_string if oid is not None else "")


def _spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def _pem(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def read_identity(cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str],
                  intermediate_certs_path: str | os.PathLike[str] | None, role: str) -> IdentityMaterial:
    """A certificate (+ chain) and its key, checked to belong together, normalised for OpenSSL.

    Raises ``TlsConfigError`` naming the file and the problem.
    """
    certs = load_pem_certs(cert_path, f"{role} certificate (certPath)")
    if intermediate_certs_path is not None:
        certs += load_pem_certs(intermediate_certs_path, f"{role} intermediate certificates "
                                "(intermediateCertsPath)")
    key = load_private_key(key_path, f"{role} private key (keyPath)")
    leaf = certs[0]
    if _spki(leaf.public_key()) != _spki(key.public_key()):
        raise TlsConfigError(f"{role} private key {key_path} does not belong to the certificate "
                             f"in {cert_path} ({subject(leaf)})")
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return IdentityMaterial(chain_pem=_pem(certs), key_pem=key_pem, leaf=cert_info(leaf))


def read_trust(paths: Sequence[str | os.PathLike[str]], what: str) -> list[tuple[str, CertInfo]]:
    """(path, certificate) for every certificate in the trust files, in order."""
    return [(str(path), cert_info(cert)) for path in paths for cert in load_pem_certs(path, what)]
