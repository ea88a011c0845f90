"""fastmesh.tls_certinfo: PEM blocks and X.509 facts read without ``cryptography``.

Two kinds of evidence: certificates built by hand here from the DER rules (X.690 §8.1,
§10.1; RFC 5280 §4.1), with expectations taken from those rules (UTCTime's two-digit
years, GeneralizedTime, long-form lengths, an absent version), and real certificates
(``fastmesh certs``, the linkerd example, the openssl CLI, cryptography's builder) whose
facts must equal what ``cryptography`` reads from the same bytes.
"""

from __future__ import annotations

import datetime
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from fastmesh import certs
from fastmesh.tls_certinfo import (CertFormatError, PemBlock, parse_certificate, pem_blocks,
                                   validity_problem)

EXAMPLE = Path(__file__).parent / "data" / "certs" / "linkerd-example"
UTC = datetime.timezone.utc
CN, O, C = "2.5.4.3", "2.5.4.10", "2.5.4.6"
EC_KEY, RSA_KEY = "1.2.840.10045.2.1", "1.2.840.113549.1.1.1"


# --------------------------------------------------------------------------- a tiny DER writer

def length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + length(len(content)) + content


def seq(*parts: bytes) -> bytes:
    return tlv(0x30, b"".join(parts))


def integer(n: int) -> bytes:
    return tlv(0x02, n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big", signed=True))


def oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return tlv(0x06, bytes(out))


def utc_time(text: str) -> bytes:
    return tlv(0x17, text.encode())


def generalized_time(text: str) -> bytes:
    return tlv(0x18, text.encode())


def name(*rdns: list[tuple[str, int, str]]) -> bytes:
    """rdns: each a list of (attribute OID, string tag, value)."""
    codecs = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x1E: "utf-16-be"}
    return seq(*(tlv(0x31, b"".join(seq(oid(o), tlv(tag, value.encode(codecs[tag]))) for o, tag, value in rdn))
                 for rdn in rdns))


def cn(value: str) -> bytes:
    return name([(CN, 0x0C, value)])


def certificate(*, version: int | None = 2, not_before: bytes = utc_time("240101000000Z"),
                not_after: bytes = utc_time("340101000000Z"), subject: bytes | None = None,
                issuer: bytes | None = None, key_oid: str = EC_KEY, tail: bytes = b"") -> bytes:
    """A certificate's DER (the signature is not a real one: only the layout matters here).
    ``version`` is the encoded value (2 = v3); None leaves the field out (v1)."""
    tbs = seq(
        tlv(0xA0, integer(version)) if version is not None else b"",
        integer(4242),
        seq(oid("1.2.840.10045.4.3.2")),
        issuer if issuer is not None else cn("Hand CA"),
        seq(not_before, not_after),
        subject if subject is not None else cn("linkerd"),
        seq(seq(oid(key_oid), oid("1.2.840.10045.3.1.7")), tlv(0x03, b"\x00\x04" + b"\x11" * 64)),
        tail,
    )
    return seq(tbs, seq(oid("1.2.840.10045.4.3.2")), tlv(0x03, b"\x00" + b"\x22" * 70))


def cryptography_facts(der: bytes) -> tuple:
    cert = x509.load_der_x509_certificate(der)
    return (cert.version.value + 1, cert.not_valid_before_utc, cert.not_valid_after_utc,
            cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(),
            cert.public_key_algorithm_oid.dotted_string)


def our_facts(der: bytes) -> tuple:
    info = parse_certificate(der)
    return (info.version, info.not_before, info.not_after, info.subject, info.issuer, info.key_algorithm)


# --------------------------------------------------------------------------- times

@pytest.mark.parametrize("text,expected", [
    # RFC 5280 §4.1.2.5.1: YY >= 50 is 19YY, YY < 50 is 20YY.
    ("500101000000Z", datetime.datetime(1950, 1, 1, tzinfo=UTC)),
    ("491231235959Z", datetime.datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ("991231235959Z", datetime.datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ("000229120000Z", datetime.datetime(2000, 2, 29, 12, tzinfo=UTC)),
    ("161119205250Z", datetime.datetime(2016, 11, 19, 20, 52, 50, tzinfo=UTC)),
])
def test_utc_time_two_digit_years(text, expected):
    der = certificate(not_after=utc_time(text))
    assert parse_certificate(der).not_after == expected
    assert cryptography_facts(der)[2] == expected  # the same bytes, read by cryptography


@pytest.mark.parametrize("text,expected", [
    ("20500101000000Z", datetime.datetime(2050, 1, 1, tzinfo=UTC)),
    # RFC 5280 §4.1.2.5: 99991231235959Z stands for "no well-defined expiration date".
    ("99991231235959Z", datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ("19491231235959Z", datetime.datetime(1949, 12, 31, 23, 59, 59, tzinfo=UTC)),
])
def test_generalized_time(text, expected):
    der = certificate(not_before=generalized_time(text), not_after=generalized_time("99991231235959Z"))
    assert parse_certificate(der).not_before == expected


@pytest.mark.parametrize("encoded", [
    utc_time("4912312359Z"),            # seconds left out
    utc_time("491231235959+0100"),      # a UTC offset instead of Z
    utc_time("491231235959"),           # local time
    utc_time("491331000000Z"),          # month 13
    utc_time("490230000000Z"),          # 30 February
    generalized_time("20500101000000.5Z"),  # fractional seconds (RFC 5280 forbids them)
    generalized_time("205001010000Z"),
    tlv(0x13, b"491231235959Z"),        # a PrintableString is no time
])
def test_malformed_times_are_refused(encoded):
    with pytest.raises(CertFormatError):
        parse_certificate(certificate(not_after=encoded))


def test_validity_problem_boundaries_are_inclusive():
    start = datetime.datetime(2030, 1, 1, tzinfo=UTC)
    end = datetime.datetime(2031, 1, 1, tzinfo=UTC)
    second = datetime.timedelta(seconds=1)
    assert validity_problem(start, end, start) is None
    assert validity_problem(start, end, end) is None
    assert validity_problem(start, end, end + second) == (10, "expired on 2031-01-01 00:00:00 UTC")
    assert validity_problem(start, end, start - second) == (9, "not valid before 2030-01-01 00:00:00 UTC")


# --------------------------------------------------------------------------- layout

@pytest.mark.parametrize("version,expected", [(None, 1), (1, 2), (2, 3)])
def test_version_field(version, expected):
    der = certificate(version=version)
    assert parse_certificate(der).version == expected
    if expected != 2:  # cryptography does not read v2 certificates at all
        assert cryptography_facts(der)[0] == expected


@pytest.mark.parametrize("version,words", [
    (0, "v1 encoded explicitly"),   # X.690 §11.5: DER omits a DEFAULT value
    (3, "unknown X.509 version 4"),
])
def test_bad_version_is_refused(version, words):
    with pytest.raises(CertFormatError, match=words):
        parse_certificate(certificate(version=version))


@pytest.mark.parametrize("size,length_octets", [(200, b"\x81\xc8"), (300, b"\x82\x01\x2c"),
                                                (70000, b"\x83\x01\x11\x70")])
def test_long_form_lengths(size, length_octets):
    value = "n" * size
    # description (2.5.4.13): an attribute without an upper bound on its length.
    der = certificate(subject=name([("2.5.4.13", 0x0C, value)]))
    assert b"\x0c" + length_octets + b"n" in der  # the UTF8String's own length is long-form
    info = parse_certificate(der)
    assert info.subject == f"2.5.4.13={value}"
    assert our_facts(der) == cryptography_facts(der)


def test_optional_tail_fields_in_order():
    extensions = tlv(0xA3, seq(seq(oid("2.5.29.19"), tlv(0x04, seq()))))
    uid = tlv(0x81, b"\x00\x01")
    assert parse_certificate(certificate(tail=uid + extensions)).version == 3
    with pytest.raises(CertFormatError, match="unexpected element"):
        parse_certificate(certificate(tail=extensions + uid))
    with pytest.raises(CertFormatError, match="unexpected element"):
        parse_certificate(certificate(tail=integer(1)))


def _indefinite(der: bytes) -> bytes:
    # The outer SEQUENCE with the indefinite length form (BER, not DER) and end-of-contents.
    rest = der[1:]
    count = rest[0] & 0x7F if rest[0] & 0x80 else 0
    return b"\x30\x80" + rest[1 + count:] + b"\x00\x00"


@pytest.mark.parametrize("mangle,words", [
    (lambda d: d[:-1], "past its container"),
    (lambda d: d + b"\x00", "trailing data"),
    (_indefinite, "indefinite length"),
    (lambda d: d[:1] + b"\x83\x00" + d[2:], "not in its shortest form"),
    (lambda d: b"\x1f\x81" + d[1:], "high tag number"),
    (lambda d: b"\x31" + d[1:], "expected tag 0x30"),
    (lambda d: b"", "truncated"),
])
def test_malformed_der_is_refused(mangle, words):
    with pytest.raises(CertFormatError, match=words):
        parse_certificate(mangle(certificate()))


def test_non_minimal_inner_length_is_refused():
    # Lengthening one inner length also lengthens every container: rebuild them instead.
    bad_serial = b"\x02\x81\x02\x10\x92"
    tbs = seq(tlv(0xA0, integer(2)), bad_serial, seq(oid("1.2.840.10045.4.3.2")), cn("CA"),
              seq(utc_time("240101000000Z"), utc_time("340101000000Z")), cn("linkerd"),
              seq(seq(oid(EC_KEY)), tlv(0x03, b"\x00\x04")))
    der = seq(tbs, seq(oid("1.2.840.10045.4.3.2")), tlv(0x03, b"\x00"))
    with pytest.raises(CertFormatError, match="shortest form"):
        parse_certificate(der)
    with pytest.raises(ValueError):  # cryptography (strict DER) refuses it as well
        x509.load_der_x509_certificate(der)


# --------------------------------------------------------------------------- names (RFC 4514)

@pytest.mark.parametrize("rdns,expected", [
    # Last RDN first; "+" joins the values of one multi-valued RDN.
    ([[(C, 0x13, "US")], [(O, 0x0C, "Buoyant")], [(CN, 0x0C, "linkerd")]], "CN=linkerd,O=Buoyant,C=US"),
    ([[(CN, 0x0C, "a"), (O, 0x0C, "b")]], "CN=a+O=b"),
    # §2.4 escapes.
    ([[(CN, 0x0C, 'a,b+c"d\\e<f>g;h')]], 'CN=a\\,b\\+c\\"d\\\\e\\<f\\>g\\;h'),
    ([[(CN, 0x0C, "#lead")]], "CN=\\#lead"),
    ([[(CN, 0x0C, " both ")]], "CN=\\ both\\ "),
    # Other string types; an attribute without a short name keeps its dotted OID.
    ([[(CN, 0x1E, "ünï")]], "CN=ünï"),
    ([[("1.2.840.113549.1.9.1", 0x16, "ops@example.com")]], "1.2.840.113549.1.9.1=ops@example.com"),
    ([], ""),
])
def test_subject_strings(rdns, expected):
    der = certificate(subject=name(*rdns))
    assert parse_certificate(der).subject == expected
    assert cryptography_facts(der)[3] == expected


# --------------------------------------------------------------------------- real certificates

def _real_certificates(tmp_path: Path) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for key_type in ("ec", "rsa"):
        paths = certs.generate_mesh_certs(tmp_path / key_type, key_type=key_type)
        for f in (paths.ca_cert, paths.cert):
            out += [(f"{key_type}:{f.name}", b.der) for b in pem_blocks(f.read_bytes())]
    for f in ("cacertificate.pem", "certificate.pem"):
        out += [(f"example:{f}", b.der) for b in pem_blocks((EXAMPLE / f).read_bytes())]
    # cryptography's builder writes GeneralizedTime from 2050 on.
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    who = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "far future"),
                     x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "a, b")])
    far = (x509.CertificateBuilder().subject_name(who).issuer_name(who).public_key(key.public_key())
           .serial_number(x509.random_serial_number())
           .not_valid_before(datetime.datetime(2049, 6, 1, tzinfo=UTC))
           .not_valid_after(datetime.datetime(2071, 6, 1, tzinfo=UTC))
           .sign(key, hashes.SHA256()))
    out.append(("builder:2071", far.public_bytes(serialization.Encoding.DER)))
    if shutil.which("openssl"):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", "k.pem", "-subj", "/C=DE/O=Mesh Org/CN=cli", "-days", "40000",
                        "-out", "c.pem"], cwd=tmp_path, check=True, capture_output=True)
        out += [("openssl:req", b.der) for b in pem_blocks((tmp_path / "c.pem").read_bytes())]
    return out


def test_real_certificates_read_as_cryptography_reads_them(tmp_path):
    real = _real_certificates(tmp_path)
    assert len(real) >= 7
    for label, der in real:
        assert our_facts(der) == cryptography_facts(der), label
    versions = {label: parse_certificate(der).version for label, der in real}
    assert versions["example:certificate.pem"] == versions["example:cacertificate.pem"] == 1
    assert versions["ec:certificate.pem"] == 3
    far = parse_certificate(dict(real)["builder:2071"])
    assert far.not_after.year == 2071 and b"\x18\x0f20710601" in far.der  # GeneralizedTime


def test_example_leaf_facts():
    (block,) = pem_blocks((EXAMPLE / "certificate.pem").read_bytes())
    info = parse_certificate(block.der)
    assert info.subject == "C=US,CN=linkerd" and info.issuer == "CN=My CA,C=US"
    assert info.key_algorithm == RSA_KEY
    assert info.not_after == datetime.datetime(2116, 9, 26, 20, 54, 21, tzinfo=UTC)


# --------------------------------------------------------------------------- PEM (RFC 7468)

def test_pem_blocks_tolerate_text_crlf_and_whitespace():
    der = certificate()
    body = PemBlock("CERTIFICATE", der).pem().decode()
    messy = ("Certificate:\r\n    Data: some openssl -text output\r\n"
             + body.replace("\n", "\r\n").replace("-----\r\n", "-----\r\n  \t", 1)
             + "trailing words\n" + PemBlock("EC PRIVATE KEY", b"\x30\x00").pem().decode())
    blocks = pem_blocks(messy.encode())
    assert [(b.label, b.der) for b in blocks] == [("CERTIFICATE", der), ("EC PRIVATE KEY", b"\x30\x00")]
    assert pem_blocks(blocks[0].pem()) == [blocks[0]]


def test_pem_block_with_mismatched_end_is_not_a_block():
    text = b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END PRIVATE KEY-----\n"
    assert pem_blocks(text) == []


def test_pem_block_with_bad_base64_is_an_error():
    with pytest.raises(CertFormatError, match="not base64"):
        pem_blocks(b"-----BEGIN CERTIFICATE-----\nnot*base64!\n-----END CERTIFICATE-----\n")


def test_encrypted_keys_are_recognised(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    pkcs8 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.BestAvailableEncryption(b"pw"))
    traditional = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.BestAvailableEncryption(b"pw"))
    plain = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    assert b"Proc-Type: 4,ENCRYPTED" in traditional
    (a,), (b,), (c,) = pem_blocks(pkcs8), pem_blocks(traditional), pem_blocks(plain)
    assert a.encrypted and a.label == "ENCRYPTED PRIVATE KEY"
    assert b.encrypted and b.label == "EC PRIVATE KEY" and dict(b.headers)["Proc-Type"] == "4,ENCRYPTED"
    assert not c.encrypted
    # The decoded body of the traditional block excludes its headers.
    assert serialization.load_der_private_key(c.der, None).private_numbers() == key.private_numbers()
