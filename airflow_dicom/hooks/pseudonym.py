"""The pseudonymisation key from an Airflow connection's password (its secret field), or a key file."""

from __future__ import annotations

import os

from airflow.sdk import BaseHook

from airflow_dicom.deid.keys import InvalidKeyError, PseudonymKey


class PseudonymKeyHook(BaseHook):
    """Reads the key of a pseudonymisation run from a connection's **password** (any connection type;
    ``generic`` is fine), so it lives in Airflow's secrets backend and is masked in logs.

    :param key_conn_id: the connection holding the key in its password.
    """

    conn_name_attr = "key_conn_id"
    default_conn_name = "dicom_pseudonym_key"
    hook_name = "DICOM pseudonymisation key"

    def __init__(self, key_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.key_conn_id = key_conn_id

    def get_key(self) -> PseudonymKey:
        """The key.

        :raises InvalidKeyError: the connection has no password, or it is shorter than 16 bytes.
        """
        conn = self.get_connection(self.key_conn_id)
        if not conn.password:
            raise InvalidKeyError(
                f"connection {self.key_conn_id!r} has no password: put the pseudonymisation key there"
            )
        return PseudonymKey.from_text(conn.password)


def load_key(key_conn_id: str | None = None, key_file: str | os.PathLike[str] | None = None) -> PseudonymKey:
    """The key from exactly one of a connection or a key file.

    :param key_conn_id: connection whose password is the key.
    :param key_file: file holding the key.
    :raises ValueError: neither or both given.
    """
    if bool(key_conn_id) == bool(key_file):
        raise ValueError("give the pseudonymisation key as exactly one of key_conn_id or key_file")
    if key_file:
        return PseudonymKey.from_file(key_file)
    return PseudonymKeyHook(str(key_conn_id)).get_key()
