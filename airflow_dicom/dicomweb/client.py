"""The ``dicomweb-client`` session of a node and the translation of HTTP failures into typed errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import requests
from dicomweb_client.api import DICOMwebClient

from airflow_dicom.dicomweb.node import DicomWebNode
from airflow_dicom.dimse.errors import DicomError, PermanentDicomError, RetryableDicomError


class DicomWebError(DicomError):
    """A DICOMweb request failed; the message names the node and what to do.

    :param node: the node.
    :param what: the request (``QIDO-RS studies``...).
    :param reason: what went wrong.
    :param status: the HTTP status, if there was a response.
    """

    def __init__(self, node: DicomWebNode, what: str, reason: str, status: int | None = None) -> None:
        self.node = node
        self.status = status
        super().__init__(f"{what} to {node.describe()} failed: {reason}")


class DicomWebUnreachableError(DicomWebError, RetryableDicomError):
    """The server could not be reached or timed out (worth retrying)."""


class DicomWebAuthError(DicomWebError, PermanentDicomError):
    """401/403: the credentials are missing, wrong or not allowed."""


class DicomWebTlsError(DicomWebError, PermanentDicomError):
    """The server's certificate could not be verified."""


class DicomWebHttpError(DicomWebError):
    """Any other HTTP error status (5xx are retryable, 4xx are not)."""

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        return self.status is not None and self.status >= 500


def make_session(node: DicomWebNode) -> requests.Session:
    """A :class:`requests.Session` with the node's authentication and TLS verification.

    :param node: the node.
    """
    session = requests.Session()
    session.trust_env = False  # proxies from the environment must not capture PACS traffic
    if node.auth == "basic":
        session.auth = (node.username or "", node.secret or "")
    elif node.auth == "bearer":
        session.headers["Authorization"] = f"Bearer {node.secret}"
    session.verify = node.ca_bundle if (node.verify_tls and node.ca_bundle) else node.verify_tls
    return session


def make_client(node: DicomWebNode) -> DICOMwebClient:
    """A ``dicomweb-client`` client for ``node`` (no request is sent).

    :param node: the node.
    """
    client = DICOMwebClient(
        url=node.url,
        session=make_session(node),
        qido_url_prefix=node.qido_prefix,
        wado_url_prefix=node.wado_prefix,
        stow_url_prefix=node.stow_prefix,
        timeout=(node.connect_timeout, node.read_timeout),
    )
    client.set_http_retry_params(retry=False)
    return client


@contextmanager
def web_errors(node: DicomWebNode, what: str) -> Iterator[None]:
    """Turn ``requests`` failures raised inside the block into :class:`DicomWebError` naming the node.

    :param node: the node.
    :param what: the request, for the message.
    """
    try:
        yield
    except DicomError:
        raise
    except requests.exceptions.SSLError as exc:
        raise DicomWebTlsError(
            node,
            what,
            f"TLS certificate verification failed ({_short(exc)}); give the server's CA bundle (ca_bundle) "
            "or check the URL's host name",
        ) from exc
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise DicomWebUnreachableError(
            node, what, f"cannot reach the server ({_short(exc)}); check the URL and that the server is up"
        ) from exc
    except requests.exceptions.HTTPError as exc:
        response = exc.response
        status = response.status_code if response is not None else None
        if status in (401, 403):
            raise DicomWebAuthError(
                node,
                what,
                f"HTTP {status} {'unauthorized' if status == 401 else 'forbidden'}; check the connection's "
                "auth, login and password/token",
                status,
            ) from exc
        if status == 404:
            reason = "HTTP 404 not found; check the base URL and the QIDO/WADO/STOW prefixes"
        else:
            reason = f"HTTP {status}: {_body(response)}"
        raise DicomWebHttpError(node, what, reason, status) from exc


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 300 else text[:300] + "..."


def _body(response: requests.Response | None) -> str:
    if response is None:
        return "no response"
    text = (response.text or "").strip().replace("\n", " ")
    return text[:300] or response.reason or "error"


def service_url(node: DicomWebNode, service: str) -> str:
    """The root of one service (``qido``, ``wado`` or ``stow``): the base URL plus the node's prefix.

    :param node: the node.
    :param service: the service.
    """
    prefix = getattr(node, f"{service}_prefix")
    return node.url + ("/" + prefix.strip("/") if prefix else "")
