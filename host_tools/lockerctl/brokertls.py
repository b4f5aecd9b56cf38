"""The broker's TLS material (`lockerctl broker config --tls`): a site CA, a server certificate
for the names the lockers connect to, and when each is renewed.

`tls_material` keeps what is still good in the directory and makes only what is missing,
expiring within `RENEW_BEFORE_DAYS`, or no longer matching the CA or the names.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

CA_DAYS = 3650
SERVER_DAYS = 825
RENEW_BEFORE_DAYS = 30


class BrokerError(ValueError):
    """Something about the request or the existing files that stops the configuration."""


def _san(names: list[str]):
    from cryptography import x509

    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _now():
    return datetime.datetime.now(datetime.UTC)


def _same_key(a, b) -> bool:
    """Whether two public keys are the same key (their DER SubjectPublicKeyInfo)."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    der, spki = Encoding.DER, PublicFormat.SubjectPublicKeyInfo
    return a.public_bytes(der, spki) == b.public_bytes(der, spki)


def _issuer_key(pem: bytes):
    """The CA's private key from PEM; ValueError unless it is a kind that signs certificates."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

    key = serialization.load_pem_private_key(pem, password=None)
    kinds = (
        ec.EllipticCurvePrivateKey,
        rsa.RSAPrivateKey,
        ed25519.Ed25519PrivateKey,
        ed448.Ed448PrivateKey,
        dsa.DSAPrivateKey,
    )
    if not isinstance(key, kinds):
        raise ValueError("the CA key is of a kind that cannot sign certificates")
    return key


def make_ca(site: str, days: int = CA_DAYS) -> tuple[bytes, bytes]:
    """A new site CA: (key PEM, certificate PEM). ECDSA P-256, which ESP32 mbedTLS handles."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "classlocker"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"classlocker {site} CA"),
        ]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return (
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        cert.public_bytes(serialization.Encoding.PEM),
    )


def make_server_cert(
    ca_key_pem: bytes, ca_cert_pem: bytes, names: list[str], days: int = SERVER_DAYS
) -> tuple[bytes, bytes]:
    """A server certificate for `names` (DNS names or IP addresses) signed by the site CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_key = _issuer_key(ca_key_pem)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "classlocker"),
                    x509.NameAttribute(NameOID.COMMON_NAME, names[0]),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_san(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return (
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        cert.public_bytes(serialization.Encoding.PEM),
    )


def _cert_names(cert) -> set[str]:
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(v) for v in san.get_values_for_type(x509.IPAddress)} | set(
        san.get_values_for_type(x509.DNSName)
    )


def tls_material(
    dir: Path, site: str, names: list[str], new_ca: bool = False, renew: bool = False
) -> tuple[dict[str, bytes], list[str]]:
    """The CA and server files for DIR: the existing ones kept while they are still good.

    Returns ({file name: content}, notes). The CA is kept unless `new_ca` (a new CA means every
    locker needs the new `ca.crt`); the server certificate is reissued when asked (`renew`), when
    the CA changed, when its names differ or when it expires within RENEW_BEFORE_DAYS.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    notes = []
    ca_key_path, ca_crt_path = dir / "ca.key", dir / "ca.crt"
    ca_key_pem = ca_cert_pem = None
    if not new_ca and ca_crt_path.exists():
        # The CA key may have been moved offline: it is needed only to issue server certificates.
        try:
            ca_cert_pem = ca_crt_path.read_bytes()
            ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
            if ca_key_path.exists():
                ca_key_pem = ca_key_path.read_bytes()
                ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
        except (ValueError, OSError) as e:
            raise BrokerError(
                f"{ca_crt_path} or {ca_key_path} cannot be read ({e}); "
                "use --new-ca to make a new site CA"
            ) from None
        if ca_key_pem is not None and (not _same_key(ca_cert.public_key(), ca_key.public_key())):
            raise BrokerError(f"{ca_key_path} is not the key of {ca_crt_path}; use --new-ca")
        if ca_cert.not_valid_after_utc < _now() + datetime.timedelta(days=RENEW_BEFORE_DAYS):
            raise BrokerError(
                f"the site CA {ca_crt_path} expires on "
                f"{ca_cert.not_valid_after_utc:%Y-%m-%d}: rotate it with --new-ca"
            )
    if ca_cert_pem is None:
        ca_key_pem, ca_cert_pem = make_ca(site)
        notes.append("made a new site CA: every locker needs the new ca.crt")
        renew = True
    ca = (ca_key_pem, ca_cert_pem)
    files = {"ca.crt": ca_cert_pem}
    if ca_key_pem is not None:
        files["ca.key"] = ca_key_pem

    srv_key_path, srv_crt_path = dir / "server.key", dir / "server.crt"
    if not renew and srv_key_path.exists() and srv_crt_path.exists():
        try:
            cert = x509.load_pem_x509_certificate(srv_crt_path.read_bytes())
            key_pem = srv_key_path.read_bytes()
            key = serialization.load_pem_private_key(key_pem, password=None)
            ca_cert = x509.load_pem_x509_certificate(ca[1])
            good = (
                cert.issuer == ca_cert.subject
                and _same_key(cert.public_key(), key.public_key())
                and cert.not_valid_after_utc > _now() + datetime.timedelta(days=RENEW_BEFORE_DAYS)
                and _cert_names(cert) == set(names)
            )
        except (ValueError, OSError):
            good = False
        if good:
            files["server.key"], files["server.crt"] = key_pem, srv_crt_path.read_bytes()
            return files, notes
    if ca_key_pem is None:
        raise BrokerError(
            f"the server certificate must be issued again but the CA key {ca_key_path} is not "
            "there: put it back for this run, or use --new-ca"
        )
    files["server.key"], files["server.crt"] = make_server_cert(ca_key_pem, ca[1], names)
    notes.append("issued a server certificate for " + ", ".join(names))
    return files, notes


# --- owners and modes --------------------------------------------------------------------
