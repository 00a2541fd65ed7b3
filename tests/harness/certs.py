"""Test certificates made with the ``openssl`` command: a CA, per-host certificates, and broken ones.

Every good certificate names ``DNS:localhost`` and ``IP:127.0.0.1`` and may serve and authenticate clients
(``serverAuth, clientAuth``), so one certificate works for Orthanc, dcmtk and us on either side. The broken
ones each fail in one way: signed by another CA, naming another host, expired.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CertPair", "TestPki", "make_pki"]

_GOOD_SAN = "DNS:localhost,IP:127.0.0.1"


@dataclass(frozen=True)
class CertPair:
    """A certificate and its unencrypted private key (PEM files)."""

    cert: str
    key: str


@dataclass(frozen=True)
class TestPki:
    """The certificates of one test session (paths to PEM files)."""

    directory: Path
    ca: str
    server: CertPair
    client: CertPair
    other_ca: str
    rogue: CertPair  # right names, signed by ``other_ca``
    wrong_host: CertPair  # signed by ``ca``, names only elsewhere.invalid
    expired: CertPair  # signed by ``ca``, expired yesterday


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {done.stderr.strip()}")


def _make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
        "-days", "30", "-subj", f"/CN={name} test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    return cert, key


def _make_leaf(
    directory: Path, name: str, ca: tuple[Path, Path], *, san: str = _GOOD_SAN, days: int = 30
) -> CertPair:
    key, csr, cert, ext = (directory / f"{name}{s}" for s in (".key", ".csr", ".pem", ".ext"))
    ext.write_text(
        f"subjectAltName={san}\nextendedKeyUsage=serverAuth,clientAuth\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nbasicConstraints=CA:FALSE\n"
    )
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
        "-days", str(days), "-extfile", str(ext), "-out", str(cert),
        cwd=directory,
    )  # fmt: skip
    key.chmod(0o600)
    return CertPair(str(cert), str(key))


def make_pki(directory: Path) -> TestPki:
    """Make the session's CA and certificates under ``directory``.

    :param directory: an empty directory.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca = _make_ca(directory, "ca")
    other = _make_ca(directory, "other-ca")
    return TestPki(
        directory=directory,
        ca=str(ca[0]),
        server=_make_leaf(directory, "server", ca),
        client=_make_leaf(directory, "client", ca),
        other_ca=str(other[0]),
        rogue=_make_leaf(directory, "rogue", other),
        wrong_host=_make_leaf(directory, "wrong-host", ca, san="DNS:elsewhere.invalid"),
        expired=_make_leaf(directory, "expired", ca, days=-1),
    )
