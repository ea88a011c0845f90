"""Certificate facts without ``cryptography``: PEM blocks cut out of a text file and, from
each certificate's DER, the few fields fastmesh.tls needs (validity dates, subject, key
algorithm).

Role in the data path: none per request. At start (and on reload) fastmesh.tls builds its
SSLContexts with the ``ssl`` module alone: OpenSSL parses the material and checks that the
key belongs to the certificate. What OpenSSL's Python binding does not tell about a file is
read here: the dates (an out-of-date trust certificate switches a client to legacy anchor
mode, an out-of-date own certificate is logged) and a subject for messages. Importing
``cryptography`` for that costs about 9 MB of RSS in every proxy process.

Rules followed (written from the specifications, not from another parser):

* PEM: RFC 7468 "lax" parsing: text before, between and after blocks is ignored, lines may
  end in CRLF, whitespace inside the base64 is ignored; RFC 1421 header lines
  (``Proc-Type: 4,ENCRYPTED``) are kept so an encrypted key can be recognised.
* DER: X.690 §8.1 (identifier, length, contents) with the DER restrictions of §10.1:
  definite lengths in the fewest octets. Only low tag numbers (< 31) are read; a
  certificate never uses others.
* X.509: RFC 5280 §4.1: Certificate = SEQUENCE {tbsCertificate, signatureAlgorithm,
  signatureValue}; tbsCertificate = SEQUENCE {[0] EXPLICIT version DEFAULT v1,
  serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo,
  [1] issuerUniqueID, [2] subjectUniqueID, [3] extensions}. Times (§4.1.2.5): UTCTime
  ``YYMMDDHHMMSSZ`` with YY >= 50 meaning 19YY and YY < 50 meaning 20YY; GeneralizedTime
  ``YYYYMMDDHHMMSSZ`` (no fractional seconds).
* Names are rendered as RFC 4514 strings (last RDN first, ``+`` inside a multi-valued RDN,
  the §2.4 escapes), with the short names cryptography also uses, so messages read the
  same whichever path produced them.

Anything outside these rules raises ``CertFormatError``. It is not a verdict on the file:
fastmesh.tls then falls back to the ``cryptography`` path, which either reads the file or
says precisely what is wrong with it.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import re
from dataclasses import dataclass

__all__ = ["CertFormatError", "PemBlock", "CertInfo", "pem_blocks", "parse_certificate",
           "validity_problem", "X509_V_ERR_CERT_NOT_YET_VALID", "X509_V_ERR_CERT_HAS_EXPIRED"]

# OpenSSL verify codes for the two date problems (shared with legacy anchor mode so logs
# and exceptions read alike whichever path found the problem).
X509_V_ERR_CERT_NOT_YET_VALID = 9
X509_V_ERR_CERT_HAS_EXPIRED = 10


class CertFormatError(ValueError):
    """The bytes are outside what this reader handles (see the module docstring)."""


# --------------------------------------------------------------------------- PEM (RFC 7468)

# "-----BEGIN label-----" ... "-----END label-----" with the same label. Label characters
# are printable ASCII except '-', single '-' or ' ' allowed between them (RFC 7468 §3).
_PEM_BLOCK = re.compile(
    rb"-----BEGIN ((?:[\x21-\x2c\x2e-\x7e](?:[- ]?[\x21-\x2c\x2e-\x7e])*)?)-----"
    rb"(.*?)"
    rb"-----END \1-----", re.DOTALL)
_WHITESPACE = re.compile(rb"[ \t\r\n\v\f]+")


@dataclass(frozen=True)
class PemBlock:
    """One PEM block: its label, decoded contents and RFC 1421 headers (usually none)."""

    label: str
    der: bytes
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def encrypted(self) -> bool:
        """PKCS#8 ``ENCRYPTED PRIVATE KEY``, or a traditional key with ``Proc-Type: 4,ENCRYPTED``."""
        return self.label == "ENCRYPTED PRIVATE KEY" or any(
            name.lower() == "proc-type" and "ENCRYPTED" in value.upper() for name, value in self.headers)

    def pem(self) -> bytes:
        """The block re-encoded cleanly (64-column base64, LF line ends, no headers)."""
        body = base64.b64encode(self.der)
        lines = [body[i:i + 64] for i in range(0, len(body), 64)]
        label = self.label.encode("ascii")
        return b"".join([b"-----BEGIN ", label, b"-----\n", *(line + b"\n" for line in lines),
                         b"-----END ", label, b"-----\n"])


def pem_blocks(data: bytes) -> list[PemBlock]:
    """Every PEM block in ``data``, in order. Text outside blocks is ignored.

    Raises ``CertFormatError`` when a block's body is not base64 (a damaged block must not
    be skipped silently: the file would then seem to hold fewer certificates than it does).
    """
    blocks: list[PemBlock] = []
    for match in _PEM_BLOCK.finditer(data):
        label = match.group(1).decode("ascii")
        body = match.group(2)
        headers: list[tuple[str, str]] = []
        lines = body.replace(b"\r\n", b"\n").split(b"\n")
        # RFC 1421 headers: "Name: value" lines right after BEGIN, ended by an empty line.
        first = next((i for i, line in enumerate(lines) if line.strip()), None)
        if first is not None and b":" in lines[first]:
            i = first
            while i < len(lines) and lines[i].strip():
                name, _, value = lines[i].decode("latin-1").partition(":")
                headers.append((name.strip(), value.strip()))
                i += 1
            body = b"\n".join(lines[i:])
        try:
            der = base64.b64decode(_WHITESPACE.sub(b"", body), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CertFormatError(f"PEM block {label!r}: the body is not base64 ({exc})") from None
        blocks.append(PemBlock(label, der, tuple(headers)))
    return blocks


# --------------------------------------------------------------------------- DER (X.690)

_INTEGER, _BIT_STRING, _OID = 0x02, 0x03, 0x06
_UTC_TIME, _GENERALIZED_TIME = 0x17, 0x18
_SEQUENCE, _SET = 0x30, 0x31                  # constructed forms
_VERSION = 0xA0                               # [0] EXPLICIT, constructed
_ISSUER_UID, _SUBJECT_UID = 0x81, 0x82        # [1], [2] IMPLICIT BIT STRING, primitive
_EXTENSIONS = 0xA3                            # [3] EXPLICIT, constructed
_MAX_LENGTH_OCTETS = 4                        # 4 GiB; a certificate is a few KB


def _tlv(der: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag octet, first content index, end of contents) of the element starting at ``pos``,
    which must lie wholly before ``end``."""
    if pos + 2 > end:
        raise CertFormatError(f"truncated element at offset {pos}")
    tag = der[pos]
    if tag & 0x1F == 0x1F:
        raise CertFormatError(f"high tag number form at offset {pos} (not used by X.509; not supported)")
    first = der[pos + 1]
    pos += 2
    if first < 0x80:                          # short form: the length itself
        length = first
    elif first == 0x80:
        raise CertFormatError(f"indefinite length at offset {pos - 2} (not allowed in DER)")
    else:                                     # long form: 0x80 | number of length octets
        count = first & 0x7F
        if count > _MAX_LENGTH_OCTETS:
            raise CertFormatError(f"length of {count} octets at offset {pos - 2}")
        if pos + count > end:
            raise CertFormatError(f"truncated length at offset {pos - 2}")
        length = int.from_bytes(der[pos:pos + count], "big")
        # DER (X.690 §10.1): the fewest octets, so no leading zero octet and no long form
        # for lengths below 128.
        if der[pos] == 0 or length < 0x80:
            raise CertFormatError(f"length at offset {pos - 2} is not in its shortest form (not DER)")
        pos += count
    if pos + length > end:
        raise CertFormatError(f"element at offset {pos} runs past its container")
    return tag, pos, pos + length


def _expect(der: bytes, pos: int, end: int, tag: int, what: str) -> tuple[int, int]:
    got, start, stop = _tlv(der, pos, end)
    if got != tag:
        raise CertFormatError(f"{what}: expected tag 0x{tag:02x}, found 0x{got:02x} at offset {pos}")
    return start, stop


def _oid(content: bytes) -> str:
    """Dotted form of an OBJECT IDENTIFIER's contents (X.690 §8.19)."""
    if not content or content[-1] & 0x80:
        raise CertFormatError("malformed OBJECT IDENTIFIER")
    arcs: list[int] = []
    value, fresh = 0, True
    for octet in content:
        if fresh and octet == 0x80:
            raise CertFormatError("OBJECT IDENTIFIER arc with a leading 0x80 octet (not DER)")
        value = (value << 7) | (octet & 0x7F)
        fresh = not octet & 0x80
        if fresh:
            arcs.append(value)
            value = 0
    # The first subidentifier packs the first two arcs: 40 * X + Y, X in {0, 1, 2}.
    head = arcs[0]
    first, second = (head // 40, head % 40) if head < 80 else (2, head - 80)
    return ".".join(str(a) for a in (first, second, *arcs[1:]))


def _time(tag: int, content: bytes, what: str) -> datetime.datetime:
    """UTCTime or GeneralizedTime as RFC 5280 §4.1.2.5 restricts them, as an aware UTC datetime."""
    text = content.decode("ascii", "replace")
    if tag == _UTC_TIME:
        if len(text) != 13 or not text[:12].isdigit() or text[12] != "Z":
            raise CertFormatError(f"{what}: UTCTime {text!r} is not YYMMDDHHMMSSZ (RFC 5280 §4.1.2.5.1)")
        yy = int(text[:2])
        year = 1900 + yy if yy >= 50 else 2000 + yy
        rest = text[2:12]
    elif tag == _GENERALIZED_TIME:
        if len(text) != 15 or not text[:14].isdigit() or text[14] != "Z":
            raise CertFormatError(f"{what}: GeneralizedTime {text!r} is not YYYYMMDDHHMMSSZ "
                                  "(RFC 5280 §4.1.2.5.2)")
        year = int(text[:4])
        rest = text[4:14]
    else:
        raise CertFormatError(f"{what}: expected UTCTime or GeneralizedTime, found tag 0x{tag:02x}")
    month, day, hour, minute, second = (int(rest[i:i + 2]) for i in range(0, 10, 2))
    try:
        return datetime.datetime(year, month, day, hour, minute, second, tzinfo=datetime.timezone.utc)
    except ValueError as exc:
        raise CertFormatError(f"{what}: {text!r} is no date ({exc})") from None


# RFC 4514 §3 short names (the ones cryptography's rfc4514_string also uses).
_SHORT_NAMES = {
    "2.5.4.3": "CN", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.10": "O", "2.5.4.11": "OU",
    "2.5.4.6": "C", "2.5.4.9": "STREET", "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
}
# Character string types that can carry a name's value, and how to decode them.
_STRING_CODECS = {
    0x0C: "utf-8",       # UTF8String
    0x12: "ascii",       # NumericString
    0x13: "ascii",       # PrintableString
    0x14: "latin-1",     # TeletexString (T.61; read as Latin-1, as most software does)
    0x16: "ascii",       # IA5String
    0x1A: "ascii",       # VisibleString
    0x1C: "utf-32-be",   # UniversalString
    0x1E: "utf-16-be",   # BMPString
}


def _escape_dn_value(value: str) -> str:
    """RFC 4514 §2.4 escaping of an attribute value."""
    if not value:
        return ""
    out = value.replace("\\", "\\\\")
    for ch in '"+,;<>':
        out = out.replace(ch, "\\" + ch)
    out = out.replace("\0", "\\00")
    if out[0] in "# ":
        out = "\\" + out
    if out[-1] == " ":
        out = out[:-1] + "\\ "
    return out


def _name(der: bytes, start: int, stop: int, what: str) -> str:
    """Name = SEQUENCE OF RelativeDistinguishedName (SET OF AttributeTypeAndValue), as RFC 4514."""
    rdns: list[str] = []
    pos = start
    while pos < stop:
        set_start, set_stop = _expect(der, pos, stop, _SET, f"{what} RDN")
        if set_start == set_stop:
            raise CertFormatError(f"{what}: empty RelativeDistinguishedName")
        parts: list[str] = []
        inner = set_start
        while inner < set_stop:
            atv_start, atv_stop = _expect(der, inner, set_stop, _SEQUENCE, f"{what} attribute")
            oid_start, oid_stop = _expect(der, atv_start, atv_stop, _OID, f"{what} attribute type")
            oid = _oid(der[oid_start:oid_stop])
            value_tag, value_start, value_stop = _tlv(der, oid_stop, atv_stop)
            if value_stop != atv_stop:
                raise CertFormatError(f"{what}: trailing data in an attribute")
            codec = _STRING_CODECS.get(value_tag)
            if codec is None:   # not a string: RFC 4514 §2.4 says '#' + hex of the encoding
                value = "#" + der[oid_stop:value_stop].hex()
            else:
                try:
                    value = _escape_dn_value(der[value_start:value_stop].decode(codec))
                except UnicodeDecodeError:
                    raise CertFormatError(f"{what}: attribute {oid} is not valid {codec}") from None
            parts.append(f"{_SHORT_NAMES.get(oid, oid)}={value}")
            inner = atv_stop
        rdns.append("+".join(parts))
        pos = set_stop
    return ",".join(reversed(rdns))


@dataclass(frozen=True)
class CertInfo:
    """What fastmesh.tls needs to know about one certificate."""

    der: bytes
    version: int                     # 1, 2 or 3 (the X.509 version, not the encoded 0..2)
    not_before: datetime.datetime    # aware, UTC
    not_after: datetime.datetime     # aware, UTC
    subject: str                     # RFC 4514, e.g. "CN=linkerd" ("" for an empty name)
    issuer: str
    key_algorithm: str               # dotted OID of subjectPublicKeyInfo.algorithm

    @property
    def subject_text(self) -> str:
        return self.subject or "<empty subject>"


def parse_certificate(der: bytes) -> CertInfo:
    """The ``CertInfo`` of one DER certificate; ``CertFormatError`` when it is not one."""
    der = bytes(der)
    end = len(der)
    cert_start, cert_stop = _expect(der, 0, end, _SEQUENCE, "Certificate")
    if cert_stop != end:
        raise CertFormatError("Certificate: trailing data after the certificate")
    tbs_start, tbs_stop = _expect(der, cert_start, cert_stop, _SEQUENCE, "tbsCertificate")
    sig_alg_start, sig_alg_stop = _expect(der, tbs_stop, cert_stop, _SEQUENCE, "signatureAlgorithm")
    _, sig_stop = _expect(der, sig_alg_stop, cert_stop, _BIT_STRING, "signatureValue")
    if sig_stop != cert_stop:
        raise CertFormatError("Certificate: unexpected element after signatureValue")

    pos = tbs_start
    tag, start, stop = _tlv(der, pos, tbs_stop)
    version = 1                              # DEFAULT v1: absent in v1 certificates
    if tag == _VERSION:
        int_start, int_stop = _expect(der, start, stop, _INTEGER, "version")
        if int_stop != stop or int_start == int_stop:
            raise CertFormatError("version: malformed")
        encoded = int.from_bytes(der[int_start:int_stop], "big", signed=True)
        if encoded == 0:
            # X.690 §11.5: DER leaves out a value equal to its DEFAULT (v1).
            raise CertFormatError("version: v1 encoded explicitly (not DER)")
        if encoded not in (1, 2):
            raise CertFormatError(f"version: unknown X.509 version {encoded + 1}")
        version = encoded + 1
        pos = stop
    serial_start, serial_stop = _expect(der, pos, tbs_stop, _INTEGER, "serialNumber")
    if serial_start == serial_stop:
        raise CertFormatError("serialNumber: empty INTEGER")
    _, pos = _expect(der, serial_stop, tbs_stop, _SEQUENCE, "signature")
    issuer_start, issuer_stop = _expect(der, pos, tbs_stop, _SEQUENCE, "issuer")
    validity_start, validity_stop = _expect(der, issuer_stop, tbs_stop, _SEQUENCE, "validity")
    tag, start, stop = _tlv(der, validity_start, validity_stop)
    not_before = _time(tag, der[start:stop], "notBefore")
    tag, start, stop = _tlv(der, stop, validity_stop)
    not_after = _time(tag, der[start:stop], "notAfter")
    if stop != validity_stop:
        raise CertFormatError("validity: unexpected element after notAfter")
    subject_start, subject_stop = _expect(der, validity_stop, tbs_stop, _SEQUENCE, "subject")
    spki_start, spki_stop = _expect(der, subject_stop, tbs_stop, _SEQUENCE, "subjectPublicKeyInfo")
    alg_start, alg_stop = _expect(der, spki_start, spki_stop, _SEQUENCE, "subjectPublicKeyInfo.algorithm")
    oid_start, oid_stop = _expect(der, alg_start, alg_stop, _OID, "subjectPublicKeyInfo.algorithm")
    key_algorithm = _oid(der[oid_start:oid_stop])
    _, key_stop = _expect(der, alg_stop, spki_stop, _BIT_STRING, "subjectPublicKey")
    if key_stop != spki_stop:
        raise CertFormatError("subjectPublicKeyInfo: unexpected element after the key")
    # The optional tail, each at most once and in this order.
    pos, allowed = spki_stop, [_ISSUER_UID, _SUBJECT_UID, _EXTENSIONS]
    while pos < tbs_stop:
        tag, _, stop = _tlv(der, pos, tbs_stop)
        if tag not in allowed:
            raise CertFormatError(f"tbsCertificate: unexpected element 0x{tag:02x} at offset {pos}")
        allowed = allowed[allowed.index(tag) + 1:]
        pos = stop
    return CertInfo(der=der, version=version, not_before=not_before, not_after=not_after,
                    subject=_name(der, subject_start, subject_stop, "subject"),
                    issuer=_name(der, issuer_start, issuer_stop, "issuer"),
                    key_algorithm=key_algorithm)


def validity_problem(not_before: datetime.datetime, not_after: datetime.datetime,
                     now: datetime.datetime) -> tuple[int, str] | None:
    """(OpenSSL verify code, text) when ``now`` is outside [not_before, not_after], else None."""
    if now > not_after:
        return X509_V_ERR_CERT_HAS_EXPIRED, f"expired on {not_after:%Y-%m-%d %H:%M:%S} UTC"
    if now < not_before:
        return X509_V_ERR_CERT_NOT_YET_VALID, f"not valid before {not_before:%Y-%m-%d %H:%M:%S} UTC"
    return None
