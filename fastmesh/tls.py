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

Loading without ``cryptography``. A proxy process must stay small (importing
``cryptography.x509`` alone costs about 9 MB of RSS), so the normal path uses the ``ssl``
module only: PEM blocks are cut out of the files textually (fastmesh.tls_certinfo) and
handed to OpenSSL as clean PEM (certificate chain and key through an in-memory file, trust
certificates as ``cadata``); OpenSSL parses them and refuses a key that does not belong to
the certificate; the validity dates and the subject for messages come from a small DER
reader (fastmesh.tls_certinfo). ``cryptography`` is imported only (a) when that path
fails: fastmesh.tls_diagnose re-reads the files to say exactly what is wrong (or to read
what the small reader does not), (b) in legacy anchor mode (fastmesh.tls_legacy), and
(c) by the public loaders ``load_pem_certs`` / ``load_private_key``.

Legacy anchor mode. The linkerd example's CA expired in 2016. Java ignores the validity
dates of a trust anchor; OpenSSL does not, so a plain ``ssl`` client would refuse every
handshake with the blog's own Secret. When a configured trust certificate is out of its
validity period, ``client_tls`` logs one warning naming the file and date and switches
that client to legacy anchor mode: OpenSSL runs the handshake without verifying
(``CERT_NONE``; the handshake itself still proves the peer holds the leaf's key) and the
peer is verified right after the handshake, in Python with ``cryptography``
(fastmesh.tls_legacy): signature chain up to one of the trust anchors (RSA or EC), every
non-anchor certificate's dates, and the name (SAN DNS, else the subject CN). Only the
anchors' dates are ignored. The check is hooked into the SSL object's ``do_handshake`` so
uvloop/asyncio report a refused peer as a failed handshake (``ssl.SSLCertVerificationError``)
without the caller doing anything; ``post_handshake_check`` runs the same check on demand.

SSL objects without a Python frame per record. uvloop's TLS transport caches the
``read``/``write``/``pending`` bound methods of the object ``wrap_bio`` returns and calls
them for every TLS record. On a stock ``ssl.SSLObject`` those are Python wrappers around
the C methods of its ``_sslobj``; both contexts built here return SSL objects whose
instance attributes ``read``, ``write``, ``pending`` are those C methods themselves, so
the transport calls OpenSSL without a Python frame. They take positional arguments only:
``read(n)``, ``read(n, buffer)``, ``write(data)``, ``pending()`` (what uvloop and asyncio
call; the keyword and no-argument forms of the wrapper are not available).
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import logging
import os
import ssl
import types
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from fastmesh.tls_certinfo import (CertFormatError, CertInfo, PemBlock, parse_certificate, pem_blocks,
                                   validity_problem)

if TYPE_CHECKING:
    from cryptography import x509

    from fastmesh.tls_legacy import LegacyAnchorCheck

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

# Public-key algorithms of the certificates the fast path loads (subjectPublicKeyInfo
# algorithm OIDs: rsaEncryption, id-ecPublicKey, Ed25519, Ed448). Anything else goes through
# tls_diagnose, which refuses unsupported key types by name.
_FAST_KEY_ALGORITHMS = frozenset({"1.2.840.113549.1.1.1", "1.2.840.10045.2.1", "1.3.101.112", "1.3.101.113"})
# Unencrypted private key blocks OpenSSL reads: PKCS#8 and the traditional RSA/EC forms.
_FAST_KEY_LABELS = frozenset({"PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"})

# Trust files already warned about (path, certificate DER): one warning per process, not
# one per router or per reload.
_warned_anchors: set[tuple[str, bytes]] = set()


class TlsConfigError(ValueError):
    """A TLS setting cannot be used; the message names the file or key and what is wrong."""


# --------------------------------------------------------------------------- loading

def read_pem_file(path: str | os.PathLike[str], what: str) -> bytes:
    """The bytes of a configured TLS file; ``TlsConfigError`` naming it when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise TlsConfigError(f"{what} {path}: file not found") from None
    except IsADirectoryError:
        raise TlsConfigError(f"{what} {path}: is a directory, expected a PEM file") from None
    except OSError as exc:
        raise TlsConfigError(f"{what} {path}: cannot read ({exc.strerror or exc})") from None


def load_pem_certs(path: str | os.PathLike[str], what: str = "certificate file") -> list[x509.Certificate]:
    """All certificates in a PEM file, in file order, as ``cryptography`` certificates.

    Text outside the ``-----BEGIN CERTIFICATE-----`` blocks is skipped; CRLF line ends are
    fine. Raises ``TlsConfigError`` naming the path when there is no readable certificate.
    Imports ``cryptography`` (fastmesh.tls_diagnose); the contexts built here do not need it.
    """
    from fastmesh.tls_diagnose import load_pem_certs as load
    return load(path, what)


def load_private_key(path: str | os.PathLike[str], what: str = "private key file"):
    """The unencrypted private key in a PEM file (PKCS#8, or traditional RSA/EC), as a
    ``cryptography`` key. Imports ``cryptography`` (fastmesh.tls_diagnose)."""
    from fastmesh.tls_diagnose import load_private_key as load
    return load(path, what)


@dataclass(frozen=True)
class IdentityMaterial:
    """A certificate chain (leaf first) and its key, as clean PEM for OpenSSL."""

    chain_pem: bytes
    key_pem: bytes
    leaf: CertInfo


def _cert_blocks(data: bytes) -> list[CertInfo]:
    """Every certificate in a PEM text; ``CertFormatError`` when there is none or one is
    outside what tls_certinfo reads (the caller then asks tls_diagnose)."""
    infos = [parse_certificate(b.der) for b in pem_blocks(data) if b.label == "CERTIFICATE"]
    if not infos:
        raise CertFormatError("no CERTIFICATE block")
    return infos


def _cert_pem(info: CertInfo) -> bytes:
    return PemBlock("CERTIFICATE", info.der).pem()


def _identity_fast(cert_data: bytes, intermediate_data: bytes | None, key_data: bytes) -> IdentityMaterial:
    """The identity read without ``cryptography``; ``CertFormatError`` when it cannot be."""
    certs = _cert_blocks(cert_data)
    if intermediate_data is not None:
        certs += _cert_blocks(intermediate_data)
    if certs[0].key_algorithm not in _FAST_KEY_ALGORITHMS:
        raise CertFormatError(f"certificate key algorithm {certs[0].key_algorithm}")
    keys = [b for b in pem_blocks(key_data) if b.label.endswith("PRIVATE KEY")]
    if not keys or keys[0].label not in _FAST_KEY_LABELS or keys[0].encrypted:
        raise CertFormatError("no unencrypted private key block")
    return IdentityMaterial(chain_pem=b"".join(_cert_pem(c) for c in certs),
                            key_pem=keys[0].pem(), leaf=certs[0])


class _KeyWantsPassword(Exception):
    """OpenSSL asked for a password: the key is encrypted (never prompt on a terminal)."""


def _refuse_password() -> bytes:
    raise _KeyWantsPassword()


@contextlib.contextmanager
def _private_file(data: bytes) -> Iterator[str]:
    """A path OpenSSL can open holding ``data``, gone when the block ends.

    ``ssl.SSLContext.load_cert_chain`` only reads files. We hand it a clean copy (so what
    we read is what OpenSSL loads), kept in memory (memfd) where the platform allows, else
    in a 0700 temporary directory.
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
    import tempfile  # only where there is no memfd
    with tempfile.TemporaryDirectory(prefix="fastmesh-tls-") as tmp:
        path = os.path.join(tmp, "material.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        yield path


def _use_identity(ctx: ssl.SSLContext, material: IdentityMaterial) -> None:
    """Load ``material`` into ``ctx``; OpenSSL refuses a key of another certificate."""
    with _private_file(material.chain_pem) as chain_file, _private_file(material.key_pem) as key_file:
        ctx.load_cert_chain(chain_file, key_file, password=_refuse_password)


def _load_identity(ctx: ssl.SSLContext, cert_path: str | os.PathLike[str],
                   key_path: str | os.PathLike[str],
                   intermediate_certs_path: str | os.PathLike[str] | None, role: str) -> None:
    """Load a certificate (+ chain) and its key into ``ctx`` after checking they belong together."""
    cert_data = read_pem_file(cert_path, f"{role} certificate (certPath)")
    intermediate_data = None
    if intermediate_certs_path is not None:
        intermediate_data = read_pem_file(intermediate_certs_path, f"{role} intermediate certificates "
                                          "(intermediateCertsPath)")
    key_data = read_pem_file(key_path, f"{role} private key (keyPath)")
    try:
        material = _identity_fast(cert_data, intermediate_data, key_data)
        _use_identity(ctx, material)
    except (CertFormatError, ssl.SSLError, _KeyWantsPassword):
        # Something is off (or outside what tls_certinfo reads): cryptography says what, or
        # reads it.
        from fastmesh import tls_diagnose
        material = tls_diagnose.read_identity(cert_path, key_path, intermediate_certs_path, role)
        try:
            _use_identity(ctx, material)
        except (ssl.SSLError, _KeyWantsPassword) as exc:
            raise TlsConfigError(f"{role} certificate {cert_path} / key {key_path}: OpenSSL "
                                 f"refused them ({getattr(exc, 'reason', None) or exc})") from None
    problem = validity_problem(material.leaf.not_before, material.leaf.not_after,
                               datetime.datetime.now(datetime.timezone.utc))
    if problem is not None:
        log.warning("%s certificate %s (%s) %s: peers will refuse it", role, cert_path,
                    material.leaf.subject_text, problem[1])


def _load_trust(ctx: ssl.SSLContext, paths: Sequence[str | os.PathLike[str]],
                what: str) -> list[tuple[str, CertInfo]]:
    """Make the certificates in ``paths`` the trust anchors of ``ctx``; (path, certificate) of each."""
    files = [(str(path), read_pem_file(path, what)) for path in paths]
    try:
        anchors = [(path, info) for path, data in files for info in _cert_blocks(data)]
    except CertFormatError:
        from fastmesh import tls_diagnose
        anchors = tls_diagnose.read_trust(paths, what)
    try:
        # cadata takes concatenated DER certificates as well as PEM text.
        ctx.load_verify_locations(cadata=b"".join(info.der for _, info in anchors))
    except ssl.SSLError as exc:
        from fastmesh import tls_diagnose
        tls_diagnose.read_trust(paths, what)  # raises the precise error when it finds one
        raise TlsConfigError(f"{what} {', '.join(p for p, _ in files)}: OpenSSL refused the "
                             f"certificates ({exc.reason or exc})") from None
    return anchors


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



# --------------------------------------------------------------------------- SSL objects

class _DirectSSLObject(ssl.SSLObject):
    """An SSLObject whose ``read``/``write``/``pending`` are the C methods of its
    ``_SSLSocket`` (see ``_direct_io``). Slots rather than instance-dict entries: a proxy
    holds one of these per connection."""

    __slots__ = ("read", "write", "pending")


def _direct_io(sslobj: ssl.SSLObject) -> ssl.SSLObject:
    """Set ``read``/``write``/``pending`` of a new SSL object to the C methods (module
    docstring: uvloop caches them and calls them per TLS record)."""
    inner = getattr(sslobj, "_sslobj", None)  # the stdlib's C object
    if inner is not None:
        sslobj.read, sslobj.write, sslobj.pending = inner.read, inner.write, inner.pending
    else:  # a Python without it: the stock wrappers, bound (the slots must hold something)
        sslobj.read = types.MethodType(ssl.SSLObject.read, sslobj)
        sslobj.write = types.MethodType(ssl.SSLObject.write, sslobj)
        sslobj.pending = types.MethodType(ssl.SSLObject.pending, sslobj)
    return sslobj


class _MeshServerContext(ssl.SSLContext):
    """The server SSLContext: its SSL objects call OpenSSL without Python frames (``_direct_io``)."""

    sslobject_class = _DirectSSLObject

    def wrap_bio(self, incoming, outgoing, server_side=False, server_hostname=None, session=None):
        return _direct_io(super().wrap_bio(incoming, outgoing, server_side, server_hostname, session))


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
    ctx = _MeshServerContext(ssl.PROTOCOL_TLS_SERVER)
    _load_identity(ctx, cert_path, key_path, intermediate_certs_path, "server")
    ctx.options &= ~ssl.OP_NO_TICKET
    ctx.set_alpn_protocols(ALPN_PROTOCOLS)
    # v1 CAs (like the linkerd example's) are no CAs under X509_STRICT.
    ctx.verify_flags &= ~ssl.VERIFY_X509_STRICT
    if ca_cert_path is not None:
        anchors = _load_trust(ctx, [ca_cert_path], "server client-CA file (caCertPath)")
        now = datetime.datetime.now(datetime.timezone.utc)
        for path, cert in anchors:
            problem = validity_problem(cert.not_before, cert.not_after, now)
            if problem is not None and require_client_auth:
                # Legacy anchor mode exists for clients only (it needs a post-handshake hook
                # the server side of uvloop's transport does not give us).
                log.warning("client-CA certificate %s (%s) %s: OpenSSL will refuse client "
                            "certificates chained to it (ignoring an anchor's dates is not "
                            "supported on the server side); replace it (`fastmesh certs`)",
                            path, cert.subject_text, problem[1])
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


class _MeshSSLObject(_DirectSSLObject):
    """An SSLObject whose handshake ends with the context's peer check (legacy anchor mode).

    uvloop's and asyncio's TLS transports drive ``do_handshake()`` on the object returned
    by ``SSLContext.wrap_bio``; raising ``SSLCertVerificationError`` here fails the
    handshake exactly as an OpenSSL verification failure would.
    """

    __slots__ = ()

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
    """A client SSLContext whose SSL objects call OpenSSL without Python frames
    (``_direct_io``) and that can resume a session offered with ``offer_session``.

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
                return _direct_io(super().wrap_bio(incoming, outgoing, server_side, server_hostname, session))
            except ValueError:
                # A session of another context: resumption is an optimisation, go without.
                pass
        return _direct_io(super().wrap_bio(incoming, outgoing, server_side, server_hostname))


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
    # Set in legacy anchor mode only (fastmesh.tls_legacy, which imports cryptography).
    legacy: LegacyAnchorCheck | None = None

    @property
    def legacy_anchor_mode(self) -> bool:
        return self.legacy is not None

    @property
    def legacy_anchors(self) -> tuple[tuple[str, x509.Certificate], ...]:
        """(path, certificate) of every trust certificate, in legacy anchor mode; else ()."""
        return self.legacy.anchors if self.legacy is not None else ()

    def post_handshake_check(self, ssl_object: ssl.SSLObject | ssl.SSLSocket) -> None:
        """Raise ``ssl.SSLCertVerificationError`` if the peer must be refused (legacy anchor
        mode only; in normal mode OpenSSL already verified it during the handshake)."""
        if self.legacy is not None:
            self.legacy.check(ssl_object)


def _client_auth_config(value: Any) -> ClientAuthConfig:
    if isinstance(value, ClientAuthConfig):
        return value
    if isinstance(value, Mapping):
        return ClientAuthConfig.from_mapping(value)
    if isinstance(value, (tuple, list)) and len(value) in (2, 3):
        # (certPath, keyPath[, intermediateCertsPath]), as fastmesh.linker passes it.
        return ClientAuthConfig(*value)
    raise TlsConfigError(f"clientAuth: expected certPath/keyPath settings, got {value!r}")


def client_tls(common_name: str | None, *, trust_certs: Sequence[str] | None = None,
               trust_certs_bundle: str | None = None, disable_validation: bool = False,
               client_auth: ClientAuthConfig | Mapping[str, Any] | Sequence[str | None] | None = None,
               protocols: Sequence[str] | None = None) -> ClientTls:
    """The TLS side of a client with ``tls`` (the outgoing router's peers, 4140 → 4141).

    Verifies the peer against ``common_name`` (SAN DNS, falling back to the subject CN when
    the certificate has no DNS SAN, as the JVM and OpenSSL both do), trusting the
    concatenation of ``trust_certs``, or ``trust_certs_bundle``, or else the system store.
    An out-of-date trust certificate switches on legacy anchor mode (module docstring).
    ``client_auth``: a ``ClientAuthConfig``, linkerd's mapping, or (certPath, keyPath[,
    intermediateCertsPath]).
    """
    if trust_certs is not None and trust_certs_bundle is not None:
        raise TlsConfigError("tls: set either trustCerts or trustCertsBundle, not both")
    if isinstance(trust_certs, str):
        raise TlsConfigError(f"tls.trustCerts: expected a list of files, got the string {trust_certs!r}")
    if disable_validation and client_auth is not None:
        raise TlsConfigError("tls: disableValidation cannot be combined with clientAuth")
    if not disable_validation and not common_name:
        raise TlsConfigError("tls is configured with validation but `commonName` is not set")
    if client_auth is not None:
        client_auth = _client_auth_config(client_auth)

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
        anchors = _load_trust(ctx, trust_certs, "trust certificate (trustCerts)")
    else:
        anchors = _load_trust(ctx, [trust_certs_bundle], "trust bundle (trustCertsBundle)")

    now = datetime.datetime.now(datetime.timezone.utc)
    stale = [(path, cert, problem) for path, cert in anchors
             if (problem := validity_problem(cert.not_before, cert.not_after, now)) is not None]
    if not stale:
        return ClientTls(ctx, common_name)

    for path, cert, (_, text) in stale:
        key = (path, cert.der)
        if key in _warned_anchors:
            continue
        _warned_anchors.add(key)
        log.warning("trust certificate %s (%s) %s. OpenSSL refuses an out-of-date trust anchor "
                    "while linkerd (Java) ignores its dates, so peers of commonName %r are "
                    "verified in legacy anchor mode: the chain, the peer's own dates and its "
                    "name are checked, only this anchor's dates are ignored. Replace the "
                    "certificates (`fastmesh certs`) to leave this mode.",
                    path, cert.subject_text, text, common_name)
    from fastmesh.tls_legacy import LegacyAnchorCheck  # imports cryptography
    try:
        legacy = LegacyAnchorCheck(common_name, [(path, cert.der) for path, cert in anchors])
    except ValueError as exc:  # a certificate OpenSSL took but cryptography cannot read
        raise TlsConfigError(f"trust certificates {', '.join(sorted({p for p, _ in anchors}))}: "
                             f"legacy anchor mode cannot read them ({exc})") from None
    # The handshake runs unverified; _MeshSSLObject.do_handshake then calls the check.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx._fastmesh_peer_check = legacy.check
    return ClientTls(ctx, common_name, legacy=legacy)
