"""Mesh certificates: a CA and the leaf every fastmesh presents on its incoming router.

Role in the data path: none at request time. This module makes the files that
``fastmesh.tls`` loads at start: the incoming router's ``certPath``/``keyPath`` and the
outgoing router's ``trustCerts``. The file names follow the linkerd DaemonSet example
(``cacertificate.pem``, ``certificate.pem``, ``key.pk8``), so an existing linkerd config
and its ``certificates`` Secret keep working when the certificates are regenerated.

Why regenerate at all: the example Secret's CA expired in 2016 and its certificates are
X.509 v1 without SAN (spec/linkerd1.md §10). What this writes is what OpenSSL expects:
a v3 CA with basicConstraints and keyUsage, and a leaf with SAN, EKU serverAuth+clientAuth.

CLI: ``fastmesh certs --out DIR [--common-name linkerd] [--days N] [--key-type ec|rsa]
[--k8s-secret FILE] [--force]`` (also ``python -m fastmesh.certs``).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_CERT_FILE", "CA_KEY_FILE", "CERT_FILE", "KEY_FILE", "SECRET_NAME",
    "CertsError", "MeshCertPaths", "generate_mesh_certs", "generate_ca", "issue_cert",
    "k8s_secret_yaml", "add_arguments", "run", "main",
]

# The file names of the linkerd example Secret (E:k8s-daemonset/k8s/certificates.yml).
CA_CERT_FILE = "cacertificate.pem"
CERT_FILE = "certificate.pem"
KEY_FILE = "key.pk8"
# Ours: the CA key stays next to the CA so more certificates can be issued later. It is
# never put into the Secret (the nodes do not need it).
CA_KEY_FILE = "cakey.pk8"
SECRET_NAME = "certificates"

KEY_TYPES = ("ec", "rsa")
# Nodes' clocks differ; a certificate that starts "now" would be refused for a few
# seconds by a peer whose clock is behind.
_BACKDATE = datetime.timedelta(minutes=5)


class CertsError(Exception):
    """A certificate could not be generated or written (the message says which file and why)."""


@dataclass(frozen=True)
class MeshCertPaths:
    """Where ``generate_mesh_certs`` wrote the mesh's files."""

    out_dir: Path
    ca_cert: Path  # cacertificate.pem: the trust anchor (client tls trustCerts)
    ca_key: Path   # cakey.pk8: keep private; only needed to issue more certificates
    cert: Path     # certificate.pem: the leaf (server tls certPath)
    key: Path      # key.pk8: the leaf's PKCS#8 key (server tls keyPath), mode 0600

    @classmethod
    def in_dir(cls, out_dir: str | os.PathLike[str]) -> "MeshCertPaths":
        d = Path(out_dir)
        return cls(d, d / CA_CERT_FILE, d / CA_KEY_FILE, d / CERT_FILE, d / KEY_FILE)


# --------------------------------------------------------------------------- keys/certs

def _new_key(key_type: str) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    if key_type == "ec":
        # P-256: the cheapest handshake signature every TLS stack supports.
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise CertsError(f"key type {key_type!r} is not supported (choose one of: {', '.join(KEY_TYPES)})")


def _validity(days: int, not_before: datetime.datetime | None,
              not_after: datetime.datetime | None) -> tuple[datetime.datetime, datetime.datetime]:
    if not_before is None or not_after is None:
        if days <= 0:
            raise CertsError(f"--days must be a positive number of days, got {days}")
    now = datetime.datetime.now(datetime.timezone.utc)
    start = not_before if not_before is not None else now - _BACKDATE
    try:
        end = not_after if not_after is not None else now + datetime.timedelta(days=days)
    except OverflowError:
        raise CertsError(f"--days {days} reaches past the year 9999") from None
    if end <= start:
        raise CertsError(f"certificate validity is empty: not before {start}, not after {end}")
    return start, end


def _san_entry(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _build_ca(common_name: str, key, start, end) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        # path_length=0: this CA signs mesh leaves only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )


def _build_leaf(common_name: str, san_names: Sequence[str], key, ca_cert: x509.Certificate,
                ca_key, start, end, server_auth: bool, client_auth: bool) -> x509.Certificate:
    ekus = []
    if server_auth:
        ekus.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client_auth:
        ekus.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False,
            # RSA key exchange (TLS 1.2 non-ECDHE suites) needs keyEncipherment.
            key_encipherment=isinstance(key, rsa.RSAPrivateKey),
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
    )
    if ekus:
        builder = builder.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
    if san_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_san_entry(n) for n in san_names]), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


# --------------------------------------------------------------------------- file output

def _refuse_existing(paths: Iterable[Path], force: bool) -> None:
    """Check every target before writing any, so a refusal leaves nothing half-written."""
    if force:
        return
    existing = [str(p) for p in paths if p.exists() or p.is_symlink()]
    if existing:
        raise CertsError("refusing to overwrite existing file(s): " + ", ".join(existing)
                         + " (use --force to replace them)")


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Write atomically with the final mode from the start (a key is never world-readable,
    not even for the moment between create and chmod)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)  # the umask may have narrowed (or, for 0644, kept) the mode
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise CertsError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _load_ca(ca_cert_path: str | os.PathLike[str], ca_key_path: str | os.PathLike[str]):
    try:
        ca_pem = Path(ca_cert_path).read_bytes()
    except OSError as exc:
        raise CertsError(f"cannot read CA certificate {ca_cert_path}: {exc.strerror or exc}") from exc
    try:
        key_pem = Path(ca_key_path).read_bytes()
    except OSError as exc:
        raise CertsError(f"cannot read CA key {ca_key_path}: {exc.strerror or exc}") from exc
    try:
        ca_cert = x509.load_pem_x509_certificates(ca_pem)[0]
    except ValueError as exc:
        raise CertsError(f"{ca_cert_path}: no PEM certificate could be read ({exc})") from exc
    try:
        ca_key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CertsError(f"{ca_key_path}: not an unencrypted PEM private key ({exc})") from exc
    if ca_key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo) != \
            ca_cert.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo):
        raise CertsError(f"{ca_key_path} is not the key of the CA certificate {ca_cert_path}")
    return ca_cert, ca_key


# --------------------------------------------------------------------------- public API

def generate_ca(out_cert: str | os.PathLike[str], out_key: str | os.PathLike[str], *,
                common_name: str = "fastmesh mesh CA", days: int = 365, key_type: str = "ec",
                not_before: datetime.datetime | None = None,
                not_after: datetime.datetime | None = None,
                force: bool = False) -> tuple[Path, Path]:
    """Write a self-signed CA certificate (PEM) and its PKCS#8 key (0600).

    ``not_before``/``not_after`` override ``days`` (tests use them for expired anchors).
    Returns ``(cert_path, key_path)``.
    """
    cert_path, key_path = Path(out_cert), Path(out_key)
    _refuse_existing([cert_path, key_path], force)
    start, end = _validity(days, not_before, not_after)
    key = _new_key(key_type)
    cert = _build_ca(common_name, key, start, end)
    _write_file(key_path, _key_pem(key), 0o600)
    _write_file(cert_path, _cert_pem(cert), 0o644)
    return cert_path, key_path


def issue_cert(ca_cert_path: str | os.PathLike[str], ca_key_path: str | os.PathLike[str],
               common_name: str, out_cert: str | os.PathLike[str],
               out_key: str | os.PathLike[str], days: int = 365, *,
               key_type: str = "ec", san_names: Sequence[str] | None = None,
               server_auth: bool = True, client_auth: bool = True,
               not_before: datetime.datetime | None = None,
               not_after: datetime.datetime | None = None,
               force: bool = False) -> tuple[Path, Path]:
    """Issue a leaf certificate signed by an existing CA; write it (PEM) and its key (PKCS#8, 0600).

    ``san_names`` defaults to ``[common_name]`` (an IP literal becomes an IP SAN); pass
    ``[]`` for a certificate without SAN (the CN fallback case). ``not_before``/``not_after``
    override ``days``. Returns ``(cert_path, key_path)``.
    """
    cert_path, key_path = Path(out_cert), Path(out_key)
    _refuse_existing([cert_path, key_path], force)
    start, end = _validity(days, not_before, not_after)
    ca_cert, ca_key = _load_ca(ca_cert_path, ca_key_path)
    key = _new_key(key_type)
    names = [common_name] if san_names is None else list(san_names)
    cert = _build_leaf(common_name, names, key, ca_cert, ca_key, start, end,
                       server_auth, client_auth)
    _write_file(key_path, _key_pem(key), 0o600)
    _write_file(cert_path, _cert_pem(cert), 0o644)
    return cert_path, key_path


def generate_mesh_certs(out_dir: str | os.PathLike[str], common_name: str = "linkerd",
                        days: int = 365, key_type: str = "ec", *,
                        force: bool = False) -> MeshCertPaths:
    """Make a fresh mesh CA and the leaf for ``common_name`` in ``out_dir``.

    Both are valid for ``days`` (backdated five minutes for clock skew). Refuses to
    overwrite any of the four files unless ``force``.
    """
    if not common_name:
        raise CertsError("the common name must not be empty")
    paths = MeshCertPaths.in_dir(out_dir)
    _refuse_existing([paths.ca_cert, paths.ca_key, paths.cert, paths.key], force)
    start, end = _validity(days, None, None)
    ca_key = _new_key(key_type)
    ca_cert = _build_ca(f"fastmesh mesh CA ({common_name})", ca_key, start, end)
    leaf_key = _new_key(key_type)
    leaf = _build_leaf(common_name, [common_name], leaf_key, ca_cert, ca_key, start, end,
                       server_auth=True, client_auth=True)
    _write_file(paths.ca_key, _key_pem(ca_key), 0o600)
    _write_file(paths.ca_cert, _cert_pem(ca_cert), 0o644)
    _write_file(paths.key, _key_pem(leaf_key), 0o600)
    _write_file(paths.cert, _cert_pem(leaf), 0o644)
    return paths


def k8s_secret_yaml(paths: MeshCertPaths, name: str = SECRET_NAME,
                    namespace: str | None = None) -> str:
    """A Kubernetes Secret holding the three files the nodes mount, shaped like the linkerd
    example's ``certificates.yml`` (the CA key is left out on purpose)."""
    lines = ["---", "kind: Secret", "apiVersion: v1", "metadata:", f"  name: {name}"]
    if namespace:
        lines.append(f"  namespace: {namespace}")
    lines += ["type: Opaque", "data:"]
    for key, path in ((CERT_FILE, paths.cert), (KEY_FILE, paths.key), (CA_CERT_FILE, paths.ca_cert)):
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise CertsError(f"cannot read {path}: {exc.strerror or exc}") from exc
        lines.append(f"  {key}: {base64.b64encode(data).decode('ascii')}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- CLI

def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``fastmesh certs``."""
    parser.add_argument("--out", required=True, metavar="DIR",
                        help=f"directory for {CA_CERT_FILE}, {CERT_FILE}, {KEY_FILE} and {CA_KEY_FILE}")
    parser.add_argument("--common-name", default="linkerd", metavar="NAME",
                        help="name the nodes verify each other as (client tls commonName; default: linkerd)")
    parser.add_argument("--days", type=_positive_int, default=365, metavar="N",
                        help="validity of the CA and the certificate in days (default: 365)")
    parser.add_argument("--key-type", choices=KEY_TYPES, default="ec",
                        help="ec = ECDSA P-256 (default, faster handshakes); rsa = RSA 2048")
    parser.add_argument("--k8s-secret", metavar="FILE",
                        help=f"also write a Kubernetes Secret named {SECRET_NAME!r} with the three node files")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")


def run(args: argparse.Namespace) -> int:
    """Run ``fastmesh certs``; 0 on success, 1 when nothing (or not everything) could be written."""
    paths = MeshCertPaths.in_dir(args.out)
    secret = Path(args.k8s_secret) if args.k8s_secret else None
    try:
        # Refuse before generating anything, also for the Secret file.
        _refuse_existing([paths.ca_cert, paths.ca_key, paths.cert, paths.key]
                         + ([secret] if secret else []), args.force)
        paths = generate_mesh_certs(args.out, args.common_name, args.days, args.key_type,
                                    force=args.force)
        if secret is not None:
            # The Secret carries the private key: same mode as key.pk8.
            _write_file(secret, k8s_secret_yaml(paths).encode("ascii"), 0o600)
    except CertsError as exc:
        print(f"fastmesh certs: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {paths.ca_cert} (CA), {paths.ca_key} (CA key, keep private), "
          f"{paths.cert} and {paths.key} for common name {args.common_name!r}")
    if secret is not None:
        print(f"wrote {secret} (Kubernetes Secret {SECRET_NAME!r})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastmesh certs",
                                     description="Make a mesh CA and the nodes' certificate.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
