"""The secret key and the keyed functions: UIDs, pseudonyms, per-patient date shifts.

Every output value is HMAC-SHA256 of the original under the key, so the same key gives the same output in
any process, on any worker, in any run (a series sent next month joins its study), and a different key
gives unrelated values. The key itself is never logged or written; the audit names it by its fingerprint.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

from airflow_dicom.dimse.errors import PermanentDicomError

#: UIDs never remapped: everything under the root the standard reserves for the UIDs it defines (PS3.5
#: 9.1: SOP classes, transfer syntaxes, coding schemes, well-known frames of reference and SOP instances,
#: LDAP OIDs, ...). Every UID of pydicom's ``UID_dictionary`` is under it, and so are those defined after
#: pydicom's release; no implementation may create an instance UID there.
WELL_KNOWN_ROOT = "1.2.840.10008."
MIN_KEY_BYTES = 16
#: days of the per-patient date shift: back by 1 to 10 years.
SHIFT_MIN_DAYS = 365
SHIFT_SPAN_DAYS = 3286


class InvalidKeyError(PermanentDicomError, ValueError):
    """The key is missing, too short or unreadable."""


class PseudonymKey:
    """A pseudonymisation key (at least 16 bytes of secret).

    :param secret: the key bytes.
    :raises InvalidKeyError: shorter than 16 bytes.
    """

    __slots__ = ("_secret", "_uid_cache")

    def __init__(self, secret: bytes) -> None:
        secret = secret.strip()
        if len(secret) < MIN_KEY_BYTES:
            raise InvalidKeyError(
                f"the pseudonymisation key has {len(secret)} bytes; give at least {MIN_KEY_BYTES} "
                "(e.g. `openssl rand -hex 32 > key`)"
            )
        self._secret = secret
        self._uid_cache: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"PseudonymKey(fingerprint={self.fingerprint})"

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> PseudonymKey:
        """Read the key from a file (its bytes, surrounding whitespace stripped).

        :param path: the key file.
        :raises InvalidKeyError: unreadable or too short.
        """
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise InvalidKeyError(f"cannot read the key file {path}: {exc.strerror}") from exc
        return cls(data)

    @classmethod
    def from_text(cls, text: str) -> PseudonymKey:
        """The key from a string (an Airflow connection's password).

        :param text: the secret.
        """
        return cls(text.encode("utf-8"))

    @property
    def fingerprint(self) -> str:
        """A key id safe to show and store: the first 16 hex digits of SHA-256 over a tagged key."""
        return hashlib.sha256(b"airflow-dicom key id\0" + self._secret).hexdigest()[:16]

    def _mac(self, domain: bytes, value: str) -> bytes:
        return hmac.new(
            self._secret, domain + b"\0" + value.encode("utf-8", "surrogateescape"), "sha256"
        ).digest()

    def uid(self, original: str) -> str:
        """The pseudonymous UID of ``original``: ``2.25.`` + the first 128 bits of HMAC-SHA256 (≤ 44 chars).

        Well-known UIDs (under :data:`WELL_KNOWN_ROOT`) and empty values come back unchanged.

        :param original: the UID (trailing NUL/space padding ignored).
        """
        original = original.rstrip("\0 ")
        if not original or original.startswith(WELL_KNOWN_ROOT):
            return original
        cached = self._uid_cache.get(original)
        if cached is None:
            cached = "2.25." + str(int.from_bytes(self._mac(b"uid", original)[:16], "big"))
            self._uid_cache[original] = cached
        return cached

    def pseudonym(self, kind: str, original: str, length: int = 16) -> str:
        """A keyed pseudonym: a letter for ``kind`` and base32 of the HMAC (``length`` characters in all).

        :param kind: ``"patient"`` or ``"accession"`` (the first letter prefixes the value).
        :param original: the identifier.
        :param length: length of the result (16 fits SH and LO).
        """
        digest = base64.b32encode(self._mac(kind.encode(), original.strip())).decode("ascii")
        return kind[0].upper() + digest[: length - 1]

    def date_shift_days(self, patient_id: str) -> int:
        """The patient's date shift in days (negative: 1 to 10 years back), derived from key and PatientID.

        :param patient_id: the original PatientID.
        """
        value = int.from_bytes(self._mac(b"shift", patient_id.strip())[:8], "big")
        return -(SHIFT_MIN_DAYS + value % SHIFT_SPAN_DAYS)
