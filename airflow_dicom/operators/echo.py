"""DicomEchoOperator: verify a DICOM node answers (C-ECHO)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from airflow_dicom.hooks.dicom import DicomHook


class DicomEchoOperator(BaseOperator):
    """Send a C-ECHO to a DICOM node; fail the task with the reason when it does not answer.

    :param dicom_conn_id: connection of type ``dicom`` (templated).
    :param calling_ae_title: optional calling AE title overriding the connection's (templated).
    :return: the C-ECHO round-trip time in seconds (pushed to XCom).
    """

    template_fields: Sequence[str] = ("dicom_conn_id", "calling_ae_title")
    ui_color = "#d9ecff"

    def __init__(
        self,
        *,
        dicom_conn_id: str = DicomHook.default_conn_name,
        calling_ae_title: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dicom_conn_id = dicom_conn_id
        self.calling_ae_title = calling_ae_title

    def execute(self, context: Any) -> float:
        overrides = {"calling_ae_title": self.calling_ae_title} if self.calling_ae_title else {}
        hook = DicomHook(self.dicom_conn_id, **overrides)
        result = hook.echo()  # a DicomError fails the task with its own message
        self.log.info(
            "C-ECHO to %s: round trip %.1f ms, with association %.1f ms",
            result.node.describe(),
            result.round_trip * 1e3,
            result.total * 1e3,
        )
        return result.round_trip
