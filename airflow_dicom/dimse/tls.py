"""DICOM TLS (PS3.15 Annex B): ``ssl.SSLContext`` objects from settings, and TLS failures in plain words.

One place builds every context: the requestor's from a :class:`~airflow_dicom.dimse.node.DicomNode`
(CA bundle, optional client certificate and key, hostname verification, minimum version) and the
receiver's from :class:`ServerTls`. A private key may be a path or the PEM text itself (kept in the
connection's password field); PEM text is written to a private temporary file (mode 0600) only while
OpenSSL loads it, and is never logged.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass, field
from typing import Any

#: accepted spellings of the minimum TLS version
TLS_VERSIONS = {
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
    "tlsv1.2": ssl.TLSVersion.TLSv1_2,
    "tlsv1.3": ssl.TLSVersion.TLSv1_3,
}
DEFAULT_MIN_VERSION = "1.2"

#: OpenSSL X509 verification codes (``SSLCertVerificationError.verify_code``)
_EXPIRED = {10}
_NOT_YET_VALID = {9}
_UNKNOWN_CA = {2, 18, 19, 20, 21}
_HOSTNAME = {62, 64}


class TlsConfigError(ValueError):
    """A TLS setting cannot be used (missing file, unreadable key, unknown version)."""


def parse_min_version(value: str | None) -> ssl.TLSVersion:
    """The :class:`ssl.TLSVersion` for ``value`` (``"1.2"`` or ``"1.3"``; empty means 1.2).

    :param value: the configured minimum version.
    :raises TlsConfigError: an unknown version.
    """
    key = str(value or DEFAULT_MIN_VERSION).strip().lower()
    if key not in TLS_VERSIONS:
        raise TlsConfigError(f"minimum TLS version {value!r} is not one of 1.2, 1.3")
    return TLS_VERSIONS[key]


def _check_file(path: str | None, what: str) -> None:
    if path and not os.path.isfile(path):
        raise TlsConfigError(f"{what} {path!r} does not exist or is not a file")


def _load_chain(context: ssl.SSLContext, cert_file: str, key: str | None) -> None:
    """Load our certificate and private key; ``key`` is a path, PEM text, or None (key in ``cert_file``)."""
    _check_file(cert_file, "TLS certificate")
    try:
        if key and "-----BEGIN" in key:
            fd, path = tempfile.mkstemp(prefix="dicom-key-", suffix=".pem")
            try:
                with os.fdopen(fd, "w") as handle:
                    handle.write(key)
                context.load_cert_chain(cert_file, path)
            finally:
                os.unlink(path)
        else:
            _check_file(key, "TLS private key")
            context.load_cert_chain(cert_file, key or None)
    except ssl.SSLError as exc:
        # never echo the key: name the certificate file and OpenSSL's reason only
        raise TlsConfigError(
            f"the TLS certificate {cert_file!r} and its private key cannot be loaded ({exc.reason or exc}); "
            "check that the key matches the certificate and is PEM without a passphrase"
        ) from None


def client_context(
    *,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key: str | None = None,
    verify_hostname: bool = True,
    min_version: str | None = None,
) -> ssl.SSLContext:
    """The context we use as a TLS client (a requestor); the peer's certificate is always verified.

    :param ca_file: CA bundle to verify the peer with (None: the system trust store).
    :param cert_file: our certificate (PEM) for mutual TLS.
    :param key: our private key: a path or the PEM text (None: the key is in ``cert_file``).
    :param verify_hostname: check that the peer's certificate names the host we connect to.
    :param min_version: minimum TLS version, ``"1.2"`` (default) or ``"1.3"``.
    :raises TlsConfigError: a file is missing or unusable.
    """
    _check_file(ca_file, "TLS CA bundle")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.minimum_version = parse_min_version(min_version)
    context.check_hostname = bool(verify_hostname)
    if cert_file:
        _load_chain(context, cert_file, key)
    elif key:
        raise TlsConfigError("a TLS private key was given without its certificate (tls_cert_file)")
    return context


def node_client_context(node: Any) -> ssl.SSLContext:
    """:func:`client_context` from a :class:`~airflow_dicom.dimse.node.DicomNode`'s TLS settings.

    :param node: the node.
    :raises TlsConfigError: a file is missing or unusable.
    """
    return client_context(
        ca_file=node.tls_ca_file,
        cert_file=node.tls_cert_file,
        key=node.tls_key,
        verify_hostname=node.tls_verify_hostname,
        min_version=node.tls_min_version,
    )


@dataclass(frozen=True)
class ServerTls:
    """The receiver's TLS settings.

    :param cert_file: our certificate (PEM).
    :param key: our private key: a path or the PEM text (kept out of ``repr``).
    :param ca_file: CA bundle to verify client certificates with.
    :param require_client_cert: refuse clients without a certificate signed by ``ca_file`` (mutual TLS).
    :param min_version: minimum TLS version.
    """

    cert_file: str
    key: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    require_client_cert: bool = False
    min_version: str | None = None

    def context(self) -> ssl.SSLContext:
        """Build the server-side :class:`ssl.SSLContext`.

        :raises TlsConfigError: a file is missing or unusable, or mutual TLS without a CA bundle.
        """
        if self.require_client_cert and not self.ca_file:
            raise TlsConfigError("requiring client certificates needs a CA bundle to verify them (--tls-ca)")
        _check_file(self.ca_file, "TLS CA bundle")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = parse_min_version(self.min_version)
        _load_chain(context, self.cert_file, self.key)
        if self.ca_file:
            context.load_verify_locations(cafile=self.ca_file)
            context.verify_mode = ssl.CERT_REQUIRED if self.require_client_cert else ssl.CERT_OPTIONAL
        return context


def embedded_receiver_tls(node: Any) -> ServerTls | None:
    """TLS for the receiver we embed for a C-MOVE from ``node``: the node's own TLS identity, or None.

    When the node is reached over TLS with our client certificate, the PACS delivers to us over TLS too (if
    it knows our destination as a TLS one) and our receiver presents the same certificate; client
    certificates are verified against the node's CA bundle when the PACS offers one.

    :param node: a :class:`~airflow_dicom.dimse.node.DicomNode`.
    """
    if not getattr(node, "tls", False) or not getattr(node, "tls_cert_file", None):
        return None
    return ServerTls(
        cert_file=node.tls_cert_file,
        key=node.tls_key,
        ca_file=node.tls_ca_file,
        min_version=node.tls_min_version,
    )


def explain_client_failure(exc: BaseException, *, host: str, ca_file: str | None, has_cert: bool) -> str:
    """What went wrong in our TLS handshake with a node, and what to do, in one sentence.

    :param exc: the error raised by the handshake or the first read.
    :param host: the node's host (for hostname mismatches).
    :param ca_file: the CA bundle in use (None: system store).
    :param has_cert: whether we offered a client certificate.
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        if code in _EXPIRED:
            return (
                "the node's TLS certificate has expired; ask its administrators to renew it "
                f"({exc.verify_message})"
            )
        if code in _NOT_YET_VALID:
            return "the node's TLS certificate is not valid yet; check the clocks and the certificate dates"
        if code in _HOSTNAME:
            return (
                f"the node's TLS certificate does not name host {host!r} (hostname mismatch); connect by a "
                "name in its subjectAltName, or turn off hostname verification (tls_verify_hostname / "
                "--tls-no-verify-hostname) if you trust the CA"
            )
        if code in _UNKNOWN_CA:
            store = f"CA bundle {ca_file!r}" if ca_file else "the system trust store"
            return (
                f"the node's TLS certificate is signed by a CA not in {store} (unknown CA); set the CA "
                "bundle (tls_ca_file / --tls-ca) to the CA that signed the node's certificate"
            )
        return f"the node's TLS certificate was refused ({exc.verify_message}); check the CA bundle"
    reason = str(getattr(exc, "reason", "") or exc).upper()
    if "CERTIFICATE_REQUIRED" in reason or (not has_cert and "HANDSHAKE_FAILURE" in reason):
        return (
            "the node requires a client certificate (mutual TLS); set the client certificate and its private "
            "key (tls_cert_file and the password field, or --tls-cert/--tls-key)"
        )
    if "UNKNOWN_CA" in reason or "BAD_CERTIFICATE" in reason or "CERTIFICATE_UNKNOWN" in reason:
        return (
            "the node refused our client certificate (it does not trust the CA that signed it); have the "
            "node trust our CA, or use a certificate from a CA it trusts"
        )
    if "CERTIFICATE_EXPIRED" in reason:
        return "the node refused our client certificate because it has expired; renew it"
    if "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER" in reason or "PACKET_LENGTH" in reason:
        return "the node answered without TLS: the port speaks plain DICOM; turn TLS off or use its TLS port"
    if "UNSUPPORTED_PROTOCOL" in reason or "PROTOCOL_VERSION" in reason:
        return "the node and we share no TLS version; check the minimum TLS version on both sides"
    if isinstance(exc, ssl.SSLEOFError | ConnectionResetError | BrokenPipeError) or "EOF" in reason:
        return (
            "the node closed the connection during the TLS handshake: the port may speak plain DICOM (turn "
            "TLS off or use its TLS port), or it refused our certificate or TLS version (see its log)"
        )
    return f"the TLS handshake failed ({getattr(exc, 'reason', None) or exc}); check the TLS settings"


def explain_server_failure(exc: BaseException) -> str:
    """Why a client's TLS handshake with our receiver failed (for the log; nothing of the client's data).

    :param exc: the error raised by the server-side handshake.
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"client certificate refused: {exc.verify_message}"
    if isinstance(exc, TimeoutError):
        return "no TLS handshake within the idle timeout"
    reason = str(getattr(exc, "reason", "") or exc).upper()
    if "WRONG_VERSION_NUMBER" in reason or "HTTP_REQUEST" in reason or "RECORD_LAYER" in reason:
        return "plain (not TLS) connection on the TLS port"
    if "PEER_DID_NOT_RETURN_A_CERTIFICATE" in reason or "CERTIFICATE_REQUIRED" in reason:
        return "client sent no certificate (mutual TLS is required)"
    if "UNKNOWN_CA" in reason or "CERTIFICATE_UNKNOWN" in reason or "BAD_CERTIFICATE" in reason:
        return "client does not trust our certificate"
    if isinstance(exc, ssl.SSLEOFError | ConnectionResetError) or "EOF" in reason:
        return "client closed the connection during the TLS handshake (it may not trust our certificate)"
    return f"TLS handshake failed ({getattr(exc, 'reason', None) or exc})"
