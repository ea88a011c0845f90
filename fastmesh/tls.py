"""SSLContexts from a linkerd 1.x TLS config: the incoming router's server TLS and the
outgoing router's client TLS (spec/linkerd1.md §2.6, §2.7, §10).

Role in the data path: built once at start (and on certificate reload); the Cython pump
then runs uvloop's TLS transport over these contexts. Nothing here runs per request;
``ClientTls.post_handshake_check`` runs once per new connection and only does work in
legacy anchor mode (below).

Config mapping (linkerd key → argument):

* server ``tls``: ``certPath`` → ``cert_path`` (PEM; text before the PEM block, as in the
  linkerd example's ``openssl x509 -text`` output, is fine), ``keyPath`` → ``key_path``
  (PKCS#8 ``BEGIN PRIVATE KEY``, CRLF line ends included; traditional ``BEGIN RSA/EC
  PRIVATE KEY`` is accepted too), ``intermediateCertsPath``, ``caCertPath``,
  ``requireClientAuth``, ``ciphers``, ``protocols``.
* client ``tls``: ``commonName`` (SNI *and* the verified name), ``trustCerts`` (files
  concatenated into one bundle), ``trustCertsBundle``, ``disableValidation``,
  ``clientAuth: {certPath, keyPath, intermediateCertsPath}``, ``protocols``.

Legacy anchor mode. The linkerd example's CA expired in 2016. Java ignores the validity
dates of a trust anchor; OpenSSL does not, so a plain ``ssl`` client would refuse every
handshake with the blog's own Secret. When a configured trust certificate is out of its
validity period, ``client_tls`` logs one warning naming the file and date and switches
that client to legacy anchor mode: OpenSSL runs the handshake without verifying
(``CERT_NONE``; the handshake itself still proves the peer holds the leaf's key) and the
peer is verified right after the handshake, in Python with ``cryptography``: signature
chain up to one of the trust anchors (RSA or EC), every non-anchor certificate's dates,
and the name (SAN DNS, else the subject CN). Only the anchors' dates are ignored. The
check is hooked into the SSL object's ``do_handshake`` so uvloop/asyncio report a refused
peer as a failed handshake (``ssl.SSLCertVerificationError``) without the caller doing
anything; ``post_handshake_check`` runs the same check on demand.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import ipaddress
import logging
import os
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "TlsConfigError", "ClientAuthConfig", "ClientTls", "server_context", "client_tls",
    "load_pem_certs", "load_private_key", "protocol_range", "openssl_cipher_name",
    "offer_session", "PROTOCOL_VERSIONS", "IANA_CIPHERS", "ALPN_PROTOCOLS",
]

log = logging.getLogger("fastmesh.tls")

# linkerd (Java) protocol names → OpenSSL versions, oldest first.
PROTOCOL_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
_UNSUPPORTED_PROTOCOLS = ("SSLv2", "SSLv2Hello", "SSLv3")

# linkerd takes Java (IANA) cipher suite names; OpenSSL has its own. Name → (OpenSSL name,
# IANA code point). The code point lets a test check each row against OpenSSL's own id.
IANA_CIPHERS: dict[str, tuple[str, int]] = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": ("ECDHE-ECDSA-AES128-GCM-SHA256", 0xC02B),
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": ("ECDHE-ECDSA-AES256-GCM-SHA384", 0xC02C),
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": ("ECDHE-RSA-AES128-GCM-SHA256", 0xC02F),
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": ("ECDHE-RSA-AES256-GCM-SHA384", 0xC030),
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": ("ECDHE-RSA-CHACHA20-POLY1305", 0xCCA8),
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": ("ECDHE-ECDSA-CHACHA20-POLY1305", 0xCCA9),
    "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256": ("DHE-RSA-CHACHA20-POLY1305", 0xCCAA),
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": ("ECDHE-ECDSA-AES128-SHA256", 0xC023),
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384": ("ECDHE-ECDSA-AES256-SHA384", 0xC024),
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": ("ECDHE-RSA-AES128-SHA256", 0xC027),
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384": ("ECDHE-RSA-AES256-SHA384", 0xC028),
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": ("ECDHE-ECDSA-AES128-SHA", 0xC009),
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": ("ECDHE-ECDSA-AES256-SHA", 0xC00A),
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": ("ECDHE-RSA-AES128-SHA", 0xC013),
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": ("ECDHE-RSA-AES256-SHA", 0xC014),
    "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256": ("DHE-RSA-AES128-GCM-SHA256", 0x009E),
    "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384": ("DHE-RSA-AES256-GCM-SHA384", 0x009F),
    "TLS_RSA_WITH_AES_128_GCM_SHA256": ("AES128-GCM-SHA256", 0x009C),
    "TLS_RSA_WITH_AES_256_GCM_SHA384": ("AES256-GCM-SHA384", 0x009D),
    "TLS_RSA_WITH_AES_128_CBC_SHA256": ("AES128-SHA256", 0x003C),
    "TLS_RSA_WITH_AES_256_CBC_SHA256": ("AES256-SHA256", 0x003D),
    "TLS_RSA_WITH_AES_128_CBC_SHA": ("AES128-SHA", 0x002F),
    "TLS_RSA_WITH_AES_256_CBC_SHA": ("AES256-SHA", 0x0035),
}
# TLS 1.3 suites have the same name in Java and OpenSSL. Python's ssl cannot choose among
# them (no SSL_CTX_set_ciphersuites), so a cipher list can only take all or none of them.
_TLS13_SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")

# Both sides speak HTTP/1.1 only; advertising it costs nothing and lets peers skip h2.
ALPN_PROTOCOLS = ["http/1.1"]

# OpenSSL verify codes, reused for the legacy-mode errors so logs read alike in both modes.
_X509_V_ERR_CERT_SIGNATURE_FAILURE = 7
_X509_V_ERR_CERT_NOT_YET_VALID = 9
_X509_V_ERR_CERT_HAS_EXPIRED = 10
_X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
_X509_V_ERR_INVALID_CA = 24
_X509_V_ERR_INVALID_PURPOSE = 26
_X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION = 34
_X509_V_ERR_HOSTNAME_MISMATCH = 62

_SHA256 = hashes.SHA256()
_MAX_CHAIN_DEPTH = 10        # bounds the legacy-mode path search
_VERIFIED_CACHE_SIZE = 256   # legacy mode: leaves already verified (dates are re-checked)

# Trust files already warned about (path, fingerprint): one warning per process, not one
# per router or per reload.
_warned_anchors: set[tuple[str, bytes]] = set()


class TlsConfigError(ValueError):
    """A TLS setting cannot be used; the message names the file or key and what is wrong."""


# --------------------------------------------------------------------------- loading

def _read(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise TlsConfigError(f"{what} {path}: file not found") from None
    except IsADirectoryError:
        raise TlsConfigError(f"{what} {path}: is a directory, expected a PEM file") from None
    except OSError as exc:
        raise TlsConfigError(f"{what} {path}: cannot read ({exc.strerror or exc})") from None


def load_pem_certs(path: str | os.PathLike[str], what: str = "certificate file") -> list[x509.Certificate]:
    """All certificates in a PEM file, in file order.

    Text outside the ``-----BEGIN CERTIFICATE-----`` blocks is skipped (the linkerd example's
    ``certificate.pem`` starts with ``openssl x509 -text`` output); CRLF line ends are fine.
    Raises ``TlsConfigError`` naming the path when there is no readable certificate.
    """
    data = _read(path, what)
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
    data = _read(path, what)
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


def _spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def _pem(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _utc(dt: datetime.datetime) -> datetime.datetime:
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=datetime.timezone.utc)


def _not_before(cert: x509.Certificate) -> datetime.datetime:
    # cryptography >= 42 has the *_utc properties; older ones return naive UTC datetimes.
    return getattr(cert, "not_valid_before_utc", None) or _utc(cert.not_valid_before)


def _not_after(cert: x509.Certificate) -> datetime.datetime:
    return getattr(cert, "not_valid_after_utc", None) or _utc(cert.not_valid_after)


def _date_problem(cert: x509.Certificate, now: datetime.datetime) -> tuple[int, str] | None:
    """(OpenSSL verify code, text) when ``cert`` is not valid at ``now``, else None."""
    if now > _not_after(cert):
        return _X509_V_ERR_CERT_HAS_EXPIRED, f"expired on {_not_after(cert):%Y-%m-%d %H:%M:%S} UTC"
    if now < _not_before(cert):
        return _X509_V_ERR_CERT_NOT_YET_VALID, f"not valid before {_not_before(cert):%Y-%m-%d %H:%M:%S} UTC"
    return None


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "<empty subject>"


@contextlib.contextmanager
def _private_file(data: bytes) -> Iterator[str]:
    """A path OpenSSL can open holding ``data``, gone when the block ends.

    ``ssl.SSLContext.load_cert_chain`` only reads files. We hand it a copy normalised by
    ``cryptography`` (so what we validated is what OpenSSL loads), kept in memory (memfd)
    where the platform allows, else in a 0700 temporary directory.
    """
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("fastmesh-tls", getattr(os, "MFD_CLOEXEC", 0))
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="fastmesh-tls-") as tmp:
        path = os.path.join(tmp, "material.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        yield path


def _load_identity(ctx: ssl.SSLContext, cert_path: str | os.PathLike[str],
                   key_path: str | os.PathLike[str],
                   intermediate_certs_path: str | os.PathLike[str] | None, role: str) -> None:
    """Load a certificate (+ chain) and its key into ``ctx`` after checking they belong together."""
    certs = load_pem_certs(cert_path, f"{role} certificate (certPath)")
    if intermediate_certs_path is not None:
        certs += load_pem_certs(intermediate_certs_path, f"{role} intermediate certificates "
                                "(intermediateCertsPath)")
    key = load_private_key(key_path, f"{role} private key (keyPath)")
    leaf = certs[0]
    if _spki(leaf.public_key()) != _spki(key.public_key()):
        raise TlsConfigError(f"{role} private key {key_path} does not belong to the certificate "
                             f"in {cert_path} ({_subject(leaf)})")
    problem = _date_problem(leaf, datetime.datetime.now(datetime.timezone.utc))
    if problem is not None:
        log.warning("%s certificate %s (%s) %s: peers will refuse it", role, cert_path,
                    _subject(leaf), problem[1])
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    with _private_file(_pem(certs)) as chain_file, _private_file(key_pem) as key_file:
        try:
            ctx.load_cert_chain(chain_file, key_file)
        except ssl.SSLError as exc:
            raise TlsConfigError(f"{role} certificate {cert_path} / key {key_path}: OpenSSL "
                                 f"refused them ({exc.reason or exc})") from None


def _load_trust(paths: Sequence[str | os.PathLike[str]], what: str) -> list[tuple[str, x509.Certificate]]:
    out: list[tuple[str, x509.Certificate]] = []
    for path in paths:
        out += [(str(path), c) for c in load_pem_certs(path, what)]
    return out


# --------------------------------------------------------------------------- protocols/ciphers

def protocol_range(protocols: Sequence[str] | None,
                   where: str = "protocols") -> tuple[ssl.TLSVersion, ssl.TLSVersion] | None:
    """``[TLSv1.2, TLSv1.3]`` → (minimum, maximum) version; None when unset.

    OpenSSL can only express a contiguous range, so ``[TLSv1, TLSv1.2]`` is refused.
    """
    if protocols is None:
        return None
    if isinstance(protocols, str) or not protocols:
        raise TlsConfigError(f"{where}: expected a non-empty list such as [TLSv1.2], got {protocols!r}")
    order = list(PROTOCOL_VERSIONS)
    picked: set[int] = set()
    for name in protocols:
        if name in _UNSUPPORTED_PROTOCOLS:
            raise TlsConfigError(f"{where}: {name} is not supported (insecure and not built "
                                 "into OpenSSL 3); use TLSv1.2 or TLSv1.3")
        if name not in PROTOCOL_VERSIONS:
            raise TlsConfigError(f"{where}: unknown protocol {name!r} "
                                 f"(known: {', '.join(order)})")
        picked.add(order.index(name))
    low, high = min(picked), max(picked)
    if len(picked) != high - low + 1:
        raise TlsConfigError(f"{where}: {list(protocols)} is not a contiguous range of versions; "
                             "OpenSSL can only set a minimum and a maximum version (not supported)")
    return PROTOCOL_VERSIONS[order[low]], PROTOCOL_VERSIONS[order[high]]


def openssl_cipher_name(name: str) -> str:
    """The OpenSSL name of a TLS <= 1.2 cipher suite given by its Java/IANA or OpenSSL name."""
    if name in IANA_CIPHERS:
        return IANA_CIPHERS[name][0]
    if name.startswith(("TLS_", "SSL_")):
        raise TlsConfigError(f"ciphers: {name!r} is not a cipher suite fastmesh knows "
                             "(use an OpenSSL name such as ECDHE-RSA-AES128-GCM-SHA256, or one of: "
                             + ", ".join(IANA_CIPHERS) + ")")
    return name


def _apply_versions_and_ciphers(ctx: ssl.SSLContext, protocols: Sequence[str] | None,
                                ciphers: Sequence[str] | None) -> None:
    rng = protocol_range(protocols)
    low, high = rng if rng else (None, None)
    if ciphers is not None:
        if isinstance(ciphers, str) or not ciphers:
            raise TlsConfigError(f"ciphers: expected a non-empty list of cipher suites, got {ciphers!r}")
        tls13 = [c for c in ciphers if c in _TLS13_SUITES]
        tls12 = [openssl_cipher_name(c) for c in ciphers if c not in _TLS13_SUITES]
        if tls13 and set(tls13) != set(_TLS13_SUITES):
            raise TlsConfigError(
                f"ciphers: choosing among TLS 1.3 suites ({', '.join(tls13)}) is not supported "
                f"(Python's ssl enables all of {', '.join(_TLS13_SUITES)}); list all three or none")
        if tls12:
            try:
                ctx.set_ciphers(":".join(tls12))
            except ssl.SSLError:
                raise TlsConfigError(f"ciphers: OpenSSL accepts none of {tls12}") from None
        elif high is not None and high < ssl.TLSVersion.TLSv1_3:
            raise TlsConfigError("ciphers: only TLS 1.3 suites are listed but protocols exclude TLSv1.3")
        # As in Java: without a TLS 1.3 suite in the list, TLS 1.3 cannot be negotiated;
        # with only TLS 1.3 suites, nothing older can.
        if not tls13:
            if low is not None and low > ssl.TLSVersion.TLSv1_2:
                raise TlsConfigError("ciphers: no TLS 1.3 suite is listed but protocols allow only TLSv1.3")
            high = min(high, ssl.TLSVersion.TLSv1_2) if high is not None else ssl.TLSVersion.TLSv1_2
        if not tls12:
            low = ssl.TLSVersion.TLSv1_3
    # Set the maximum first: OpenSSL refuses a minimum above the current maximum.
    if high is not None:
        ctx.maximum_version = high
    if low is not None:
        ctx.minimum_version = low


# --------------------------------------------------------------------------- server

def server_context(cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str], *,
                   intermediate_certs_path: str | os.PathLike[str] | None = None,
                   ca_cert_path: str | os.PathLike[str] | None = None,
                   require_client_auth: bool = False,
                   ciphers: Sequence[str] | None = None,
                   protocols: Sequence[str] | None = None) -> ssl.SSLContext:
    """The SSLContext of a server with ``tls`` (the incoming router, 4141).

    Client certificates are requested only with ``require_client_auth`` (finagle's
    ``ClientAuth.Needed``); otherwise none is asked for (``Off``), even with ``ca_cert_path``.
    Session tickets are on (resumption saves the peer a full handshake); ALPN offers
    ``http/1.1``. Raises ``TlsConfigError`` naming the bad file and what is wrong.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _load_identity(ctx, cert_path, key_path, intermediate_certs_path, "server")
    ctx.options &= ~ssl.OP_NO_TICKET
    ctx.set_alpn_protocols(ALPN_PROTOCOLS)
    # v1 CAs (like the linkerd example's) are no CAs under X509_STRICT.
    ctx.verify_flags &= ~ssl.VERIFY_X509_STRICT
    if ca_cert_path is not None:
        anchors = _load_trust([ca_cert_path], "server client-CA file (caCertPath)")
        now = datetime.datetime.now(datetime.timezone.utc)
        for path, cert in anchors:
            problem = _date_problem(cert, now)
            if problem is not None and require_client_auth:
                # Legacy anchor mode exists for clients only (it needs a post-handshake hook
                # the server side of uvloop's transport does not give us).
                log.warning("client-CA certificate %s (%s) %s: OpenSSL will refuse client "
                            "certificates chained to it (ignoring an anchor's dates is not "
                            "supported on the server side); replace it (`fastmesh certs`)",
                            path, _subject(cert), problem[1])
        ctx.load_verify_locations(cadata=_pem([c for _, c in anchors]).decode("ascii"))
    if require_client_auth:
        if ca_cert_path is None:
            ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    _apply_versions_and_ciphers(ctx, protocols, ciphers)
    return ctx


# --------------------------------------------------------------------------- client

@dataclass(frozen=True)
class ClientAuthConfig:
    """client ``tls.clientAuth``: the certificate this client presents."""

    cert_path: str
    key_path: str
    intermediate_certs_path: str | None = None

    @classmethod
    def from_mapping(cls, value: Mapping[str, Any]) -> "ClientAuthConfig":
        """From linkerd's keys (certPath, keyPath, intermediateCertsPath)."""
        unknown = set(value) - {"certPath", "keyPath", "intermediateCertsPath"}
        if unknown:
            raise TlsConfigError(f"clientAuth: unknown key(s) {sorted(unknown)}")
        try:
            return cls(value["certPath"], value["keyPath"], value.get("intermediateCertsPath"))
        except KeyError as exc:
            raise TlsConfigError(f"clientAuth: {exc.args[0]} is required") from None


# The session the next client connection in this context (task) should offer; see
# ``offer_session``.
_offered_session: contextvars.ContextVar[ssl.SSLSession | None] = \
    contextvars.ContextVar("fastmesh_tls_offered_session", default=None)


def offer_session(session: ssl.SSLSession | None) -> None:
    """Make the next TLS connection opened *from the current task* offer ``session`` for
    resumption (see ``ClientTls``). Pass None to stop offering one."""
    _offered_session.set(session)


class _MeshSSLObject(ssl.SSLObject):
    """An SSLObject whose handshake ends with the context's peer check (legacy anchor mode).

    uvloop's and asyncio's TLS transports drive ``do_handshake()`` on the object returned
    by ``SSLContext.wrap_bio``; raising ``SSLCertVerificationError`` here fails the
    handshake exactly as an OpenSSL verification failure would.
    """

    def do_handshake(self) -> None:
        super().do_handshake()
        check = getattr(self.context, "_fastmesh_peer_check", None)
        if check is not None:
            check(self)


class _MeshSSLSocket(ssl.SSLSocket):
    """The same hook for blocking sockets (``context.wrap_socket``), e.g. in tools and tests."""

    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        check = getattr(self.context, "_fastmesh_peer_check", None)
        if check is not None:
            check(self)


class _MeshClientContext(ssl.SSLContext):
    """A client SSLContext that can resume a session offered with ``offer_session``.

    asyncio's ``create_connection`` has no ``session`` argument; the transport calls
    ``wrap_bio`` in the connecting task's context, which is where the offer is read.
    """

    sslobject_class = _MeshSSLObject
    sslsocket_class = _MeshSSLSocket
    _fastmesh_peer_check = None

    def wrap_bio(self, incoming, outgoing, server_side=False, server_hostname=None, session=None):
        if session is None and not server_side:
            session = _offered_session.get()
        if session is not None:
            try:
                return super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
            except ValueError:
                # A session of another context: resumption is an optimisation, go without.
                pass
        return super().wrap_bio(incoming, outgoing, server_side, server_hostname)


@dataclass
class ClientTls:
    """A client's TLS settings, ready for ``loop.create_connection(ssl=..., server_hostname=...)``.

    ``context`` is shared by every connection of the client. ``server_hostname`` is the
    configured commonName: pass it as ``server_hostname`` (it is the SNI name and the name
    the peer's certificate is verified against); None with ``disableValidation`` and no name.

    Session resumption: after a connection has carried a response (TLS 1.3 tickets arrive
    after the handshake), keep ``transport.get_extra_info('ssl_object').session``, keyed by
    the peer's address. To resume, call ``fastmesh.tls.offer_session(session)`` in the task
    that then awaits ``create_connection`` for the same peer; ``ssl_object.session_reused``
    tells whether the peer took it. A session of another peer is harmless (the peer just
    does a full handshake); one from another ``ClientTls`` is ignored.

    ``post_handshake_check(ssl_object)`` is a no-op in normal mode (OpenSSL verified the
    peer). In legacy anchor mode the same check already ran inside the handshake; calling
    it again is cheap (verified leaves are cached) and safe.
    """

    context: ssl.SSLContext
    server_hostname: str | None
    # Non-empty: legacy anchor mode with these anchors (path, certificate).
    legacy_anchors: tuple[tuple[str, x509.Certificate], ...] = ()
    # Legacy mode: leaf DER → (not before, not after) of its verified chain, anchors excluded.
    _verified: dict[bytes, tuple[datetime.datetime, datetime.datetime]] = field(
        default_factory=dict, repr=False, init=False)

    @property
    def legacy_anchor_mode(self) -> bool:
        return bool(self.legacy_anchors)

    def post_handshake_check(self, ssl_object: ssl.SSLObject | ssl.SSLSocket) -> None:
        """Raise ``ssl.SSLCertVerificationError`` if the peer must be refused (legacy anchor
        mode only; in normal mode OpenSSL already verified it during the handshake)."""
        if not self.legacy_anchors:
            return
        _check_peer_legacy(self, ssl_object)


def client_tls(common_name: str | None, *, trust_certs: Sequence[str] | None = None,
               trust_certs_bundle: str | None = None, disable_validation: bool = False,
               client_auth: ClientAuthConfig | Mapping[str, Any] | None = None,
               protocols: Sequence[str] | None = None) -> ClientTls:
    """The TLS side of a client with ``tls`` (the outgoing router's peers, 4140 → 4141).

    Verifies the peer against ``common_name`` (SAN DNS, falling back to the subject CN when
    the certificate has no DNS SAN, as the JVM and OpenSSL both do), trusting the
    concatenation of ``trust_certs``, or ``trust_certs_bundle``, or else the system store.
    An out-of-date trust certificate switches on legacy anchor mode (module docstring).
    """
    if trust_certs is not None and trust_certs_bundle is not None:
        raise TlsConfigError("tls: set either trustCerts or trustCertsBundle, not both")
    if isinstance(trust_certs, str):
        raise TlsConfigError(f"tls.trustCerts: expected a list of files, got the string {trust_certs!r}")
    if disable_validation and client_auth is not None:
        raise TlsConfigError("tls: disableValidation cannot be combined with clientAuth")
    if not disable_validation and not common_name:
        raise TlsConfigError("tls is configured with validation but `commonName` is not set")
    if isinstance(client_auth, Mapping):
        client_auth = ClientAuthConfig.from_mapping(client_auth)

    ctx = _MeshClientContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_alpn_protocols(ALPN_PROTOCOLS)
    if client_auth is not None:
        _load_identity(ctx, client_auth.cert_path, client_auth.key_path,
                       client_auth.intermediate_certs_path, "client (clientAuth)")
    _apply_versions_and_ciphers(ctx, protocols, None)

    if disable_validation:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ClientTls(ctx, common_name or None)

    # Built explicitly rather than with create_default_context(): Python >= 3.13 turns on
    # VERIFY_X509_STRICT there, which refuses the v1 CA of the linkerd example. PARTIAL_CHAIN
    # lets any trusted certificate be an anchor, as in Java's trust stores.
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    ctx.hostname_checks_common_name = True
    ctx.verify_flags = (ctx.verify_flags & ~ssl.VERIFY_X509_STRICT) | ssl.VERIFY_X509_PARTIAL_CHAIN

    if trust_certs is None and trust_certs_bundle is None:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        return ClientTls(ctx, common_name)

    if trust_certs is not None:
        if not trust_certs:
            raise TlsConfigError("tls.trustCerts: the list is empty")
        anchors = _load_trust(trust_certs, "trust certificate (trustCerts)")
    else:
        anchors = _load_trust([trust_certs_bundle], "trust bundle (trustCertsBundle)")
    ctx.load_verify_locations(cadata=_pem([c for _, c in anchors]).decode("ascii"))

    now = datetime.datetime.now(datetime.timezone.utc)
    stale = [(path, cert, problem) for path, cert in anchors
             if (problem := _date_problem(cert, now)) is not None]
    if not stale:
        return ClientTls(ctx, common_name)

    for path, cert, (_, text) in stale:
        key = (path, cert.fingerprint(_SHA256))
        if key in _warned_anchors:
            continue
        _warned_anchors.add(key)
        log.warning("trust certificate %s (%s) %s. OpenSSL refuses an out-of-date trust anchor "
                    "while linkerd (Java) ignores its dates, so peers of commonName %r are "
                    "verified in legacy anchor mode: the chain, the peer's own dates and its "
                    "name are checked, only this anchor's dates are ignored. Replace the "
                    "certificates (`fastmesh certs`) to leave this mode.",
                    path, _subject(cert), text, common_name)
    # The handshake runs unverified; _MeshSSLObject.do_handshake then calls the check.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    tls = ClientTls(ctx, common_name, legacy_anchors=tuple(anchors))
    ctx._fastmesh_peer_check = tls.post_handshake_check
    return tls


# --------------------------------------------------------------------------- legacy anchor mode

def _verify_error(code: int, text: str) -> ssl.SSLCertVerificationError:
    # (errno, strerror) as the ssl module raises it, so str(err) is the message itself.
    err = ssl.SSLCertVerificationError(
        1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {text} (legacy anchor mode)")
    err.verify_code = code
    err.verify_message = text
    err.reason = "CERTIFICATE_VERIFY_FAILED"
    err.library = "SSL"
    return err


def _peer_chain_der(ssl_object) -> list[bytes]:
    """The certificates the peer sent, leaf first (DER)."""
    chain: list[bytes] = []
    getter = getattr(ssl_object, "get_unverified_chain", None)  # public from Python 3.13
    if getter is None:
        getter = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    if getter is not None:
        for cert in getter() or ():
            chain.append(cert if isinstance(cert, bytes)
                         else cert.public_bytes(_ssl_encoding_der()))
    if not chain:
        # A resumed session may not carry the chain; the leaf is always there.
        leaf = ssl_object.getpeercert(binary_form=True)
        if leaf:
            chain.append(leaf)
    return chain


def _ssl_encoding_der():
    import _ssl  # the private Certificate objects of Python < 3.13 take _ssl's encoding enum
    return _ssl.ENCODING_DER


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _check_extensions(cert: x509.Certificate, what: str, leaf: bool) -> None:
    for ext in cert.extensions:
        if ext.critical and isinstance(ext.value, x509.UnrecognizedExtension):
            raise _verify_error(_X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION,
                                f"{what} ({_subject(cert)}) has an unhandled critical extension {ext.oid.dotted_string}")
    if leaf:
        try:
            ekus = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            return
        if ExtendedKeyUsageOID.SERVER_AUTH not in ekus and \
                ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in ekus:
            raise _verify_error(_X509_V_ERR_INVALID_PURPOSE,
                                f"{what} ({_subject(cert)}) is not for TLS servers (no serverAuth EKU)")


def _dns_match(pattern: str, name: str) -> bool:
    pattern, name = pattern.rstrip(".").lower(), name.rstrip(".").lower()
    if pattern == name:
        return True
    p_labels, n_labels = pattern.split("."), name.split(".")
    # A wildcard stands for one whole left-most label, and not directly under a TLD
    # (OpenSSL's rule with NO_PARTIAL_WILDCARDS, which Python sets).
    return (p_labels[0] == "*" and len(p_labels) >= 3 and len(p_labels) == len(n_labels)
            and "*" not in pattern[1:] and p_labels[1:] == n_labels[1:] and n_labels[0] != "")


def _name_matches(cert: x509.Certificate, name: str) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        ip = None
    if ip is not None:
        return san is not None and ip in san.get_values_for_type(x509.IPAddress)
    dns_names = san.get_values_for_type(x509.DNSName) if san is not None else []
    if dns_names:
        return any(_dns_match(p, name) for p in dns_names)
    # No DNS SAN: the subject CN (the linkerd example's v1 certificates have no SAN at all).
    return any(_dns_match(str(a.value), name)
               for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME))


def _check_peer_legacy(tls: ClientTls, ssl_object) -> None:
    chain_der = _peer_chain_der(ssl_object)
    if not chain_der:
        raise _verify_error(_X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, "the peer sent no certificate")
    now = datetime.datetime.now(datetime.timezone.utc)
    leaf_der = chain_der[0]
    window = tls._verified.get(leaf_der)
    if window is not None:
        # This leaf's chain and name were verified before (a resumed session may not even
        # carry the intermediates again); only the dates can have changed since.
        if window[0] <= now <= window[1]:
            return
        tls._verified.pop(leaf_der, None)

    try:
        chain = [x509.load_der_x509_certificate(d) for d in chain_der]
    except ValueError as exc:
        raise _verify_error(_X509_V_ERR_CERT_SIGNATURE_FAILURE, f"peer certificate cannot be parsed ({exc})") from None
    leaf = chain[0]
    problem = _date_problem(leaf, now)
    if problem is not None:
        raise _verify_error(problem[0], f"peer certificate ({_subject(leaf)}) {problem[1]}")
    _check_extensions(leaf, "peer certificate", leaf=True)
    if tls.server_hostname is not None and not _name_matches(leaf, tls.server_hostname):
        raise _verify_error(_X509_V_ERR_HOSTNAME_MISMATCH,
                            f"Hostname mismatch, certificate ({_subject(leaf)}) is not valid "
                            f"for {tls.server_hostname!r}")

    anchors = [c for _, c in tls.legacy_anchors]
    anchor_der = {c.public_bytes(serialization.Encoding.DER) for c in anchors}
    current, used = leaf, {leaf_der}
    valid_from, valid_to = _not_before(leaf), _not_after(leaf)
    for _depth in range(_MAX_CHAIN_DEPTH):
        if current.public_bytes(serialization.Encoding.DER) in anchor_der:
            break  # the peer's certificate is itself trusted (dates checked above)
        if any(_issued_by(current, anchor) for anchor in anchors):
            break  # reached a trust anchor: its dates are deliberately not checked
        nxt = None
        for cand in chain[1:]:
            der = cand.public_bytes(serialization.Encoding.DER)
            if der not in used and _issued_by(current, cand):
                nxt, used = cand, used | {der}
                break
        if nxt is None:
            raise _verify_error(_X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
                                f"certificate ({_subject(current)}, issuer {current.issuer.rfc4514_string()}) "
                                "is not signed by any trust certificate")
        if not _is_ca(nxt):
            raise _verify_error(_X509_V_ERR_INVALID_CA,
                                f"intermediate certificate ({_subject(nxt)}) is not a CA")
        problem = _date_problem(nxt, now)
        if problem is not None:
            raise _verify_error(problem[0], f"intermediate certificate ({_subject(nxt)}) {problem[1]}")
        _check_extensions(nxt, "intermediate certificate", leaf=False)
        valid_from, valid_to = max(valid_from, _not_before(nxt)), min(valid_to, _not_after(nxt))
        current = nxt
    else:
        raise _verify_error(_X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
                            f"certificate chain longer than {_MAX_CHAIN_DEPTH}")

    if len(tls._verified) >= _VERIFIED_CACHE_SIZE:
        tls._verified.pop(next(iter(tls._verified)))
    tls._verified[leaf_der] = (valid_from, valid_to)
