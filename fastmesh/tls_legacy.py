"""Legacy anchor mode: verifying a TLS peer in Python when a trust certificate is out of date.

Role in the data path: once per new upstream TLS connection of a client in this mode, inside
the handshake (fastmesh.tls hooks ``LegacyAnchorCheck.check`` into the SSL object's
``do_handshake``); nothing per request. Imported only when a client's trust certificates
are out of their validity period, so a proxy with valid certificates never loads
``cryptography``.

Why it exists: the linkerd example's CA expired in 2016. Java ignores the validity dates of
a trust anchor; OpenSSL does not, so a plain ``ssl`` client would refuse every handshake
with the blog's own Secret. In this mode OpenSSL runs the handshake without verifying
(``CERT_NONE``; the handshake itself still proves the peer holds the leaf's key) and
``check`` verifies the peer right after it with ``cryptography``: the signature chain up to
one of the trust anchors (RSA or EC), every non-anchor certificate's dates, the leaf's
extended key usage and critical extensions, and the name (SAN DNS or IP, else the subject
CN). Only the anchors' dates are ignored. A refusal is an ``ssl.SSLCertVerificationError``
with OpenSSL's verify code, so uvloop/asyncio report it as a failed handshake.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from typing import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fastmesh.tls_certinfo import validity_problem
from fastmesh.tls_diagnose import not_after, not_before, subject

__all__ = ["LegacyAnchorCheck"]

# OpenSSL verify codes, reused so logs read alike in both modes (the date codes come from
# validity_problem).
_X509_V_ERR_CERT_SIGNATURE_FAILURE = 7
_X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
_X509_V_ERR_INVALID_CA = 24
_X509_V_ERR_INVALID_PURPOSE = 26
_X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION = 34
_X509_V_ERR_HOSTNAME_MISMATCH = 62

_MAX_CHAIN_DEPTH = 10        # bounds the path search
_VERIFIED_CACHE_SIZE = 256   # leaves already verified (their dates are re-checked)


def _verify_error(code: int, text: str) -> ssl.SSLCertVerificationError:
    # (errno, strerror) as the ssl module raises it, so str(err) is the message itself.
    err = ssl.SSLCertVerificationError(
        1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {text} (legacy anchor mode)")
    err.verify_code = code
    err.verify_message = text
    err.reason = "CERTIFICATE_VERIFY_FAILED"
    err.library = "SSL"
    return err


def _date_problem(cert: x509.Certificate, now: datetime.datetime) -> tuple[int, str] | None:
    return validity_problem(not_before(cert), not_after(cert), now)


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
                                f"{what} ({subject(cert)}) has an unhandled critical extension {ext.oid.dotted_string}")
    if leaf:
        try:
            ekus = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            return
        if ExtendedKeyUsageOID.SERVER_AUTH not in ekus and \
                ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in ekus:
            raise _verify_error(_X509_V_ERR_INVALID_PURPOSE,
                                f"{what} ({subject(cert)}) is not for TLS servers (no serverAuth EKU)")


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


class LegacyAnchorCheck:
    """The peer check of one client in legacy anchor mode.

    ``anchors``: (path, certificate) of every configured trust certificate, out-of-date or
    not. ``server_hostname``: the name the peer must carry (None: any name).
    """

    def __init__(self, server_hostname: str | None, anchors_der: Sequence[tuple[str, bytes]]):
        self.server_hostname = server_hostname
        self.anchors: tuple[tuple[str, x509.Certificate], ...] = tuple(
            (path, x509.load_der_x509_certificate(der)) for path, der in anchors_der)
        self._anchor_der = frozenset(der for _, der in anchors_der)
        # leaf DER → (not before, not after) of its verified chain, anchors excluded.
        self._verified: dict[bytes, tuple[datetime.datetime, datetime.datetime]] = {}

    def check(self, ssl_object: ssl.SSLObject | ssl.SSLSocket) -> None:
        """Raise ``ssl.SSLCertVerificationError`` if the peer of ``ssl_object`` must be refused."""
        chain_der = _peer_chain_der(ssl_object)
        if not chain_der:
            raise _verify_error(_X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, "the peer sent no certificate")
        now = datetime.datetime.now(datetime.timezone.utc)
        leaf_der = chain_der[0]
        window = self._verified.get(leaf_der)
        if window is not None:
            # This leaf's chain and name were verified before (a resumed session may not even
            # carry the intermediates again); only the dates can have changed since.
            if window[0] <= now <= window[1]:
                return
            self._verified.pop(leaf_der, None)

        try:
            chain = [x509.load_der_x509_certificate(d) for d in chain_der]
        except ValueError as exc:
            raise _verify_error(_X509_V_ERR_CERT_SIGNATURE_FAILURE, f"peer certificate cannot be parsed ({exc})") from None
        leaf = chain[0]
        problem = _date_problem(leaf, now)
        if problem is not None:
            raise _verify_error(problem[0], f"peer certificate ({subject(leaf)}) {problem[1]}")
        _check_extensions(leaf, "peer certificate", leaf=True)
        if self.server_hostname is not None and not _name_matches(leaf, self.server_hostname):
            raise _verify_error(_X509_V_ERR_HOSTNAME_MISMATCH,
                                f"Hostname mismatch, certificate ({subject(leaf)}) is not valid "
                                f"for {self.server_hostname!r}")

        anchors = [c for _, c in self.anchors]
        current, used = leaf, {leaf_der}
        valid_from, valid_to = not_before(leaf), not_after(leaf)
        for _depth in range(_MAX_CHAIN_DEPTH):
            if current.public_bytes(serialization.Encoding.DER) in self._anchor_der:
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
                                    f"certificate ({subject(current)}, issuer {current.issuer.rfc4514_string()}) "
                                    "is not signed by any trust certificate")
            if not _is_ca(nxt):
                raise _verify_error(_X509_V_ERR_INVALID_CA,
                                    f"intermediate certificate ({subject(nxt)}) is not a CA")
            problem = _date_problem(nxt, now)
            if problem is not None:
                raise _verify_error(problem[0], f"intermediate certificate ({subject(nxt)}) {problem[1]}")
            _check_extensions(nxt, "intermediate certificate", leaf=False)
            valid_from, valid_to = max(valid_from, not_before(nxt)), min(valid_to, not_after(nxt))
            current = nxt
        else:
            raise _verify_error(_X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
                                f"certificate chain longer than {_MAX_CHAIN_DEPTH}")

        if len(self._verified) >= _VERIFIED_CACHE_SIZE:
            self._verified.pop(next(iter(self._verified)))
        self._verified[leaf_der] = (valid_from, valid_to)
