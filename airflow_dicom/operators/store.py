"""DicomStoreOperator: send DICOM files to a node (C-STORE) with a per-file account."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator

from airflow_dicom.dimse.send import SendReport, transcoding
from airflow_dicom.hooks.dicom import DicomHook
from airflow_dicom.hooks.dicomweb import node_hook
from airflow_dicom.operators.inputs import collect_paths
from airflow_dicom.operators.pseudonymize import check_send_option, pseudonymised_copies


class DicomStoreOperator(BaseOperator):
    """Send DICOM files, directories (recursively) and globs to a DICOM node.

    Each file's data set is sent as stored (compressed syntaxes included, never decoded), over up to
    ``parallel`` associations. Every file is accounted for: sent, warning, failed (with the status and
    its meaning, or why nothing was sent) or skipped (not a DICOM file). The task fails at the end,
    listing the failed files and reasons, when more than ``max_failed`` files failed.

    To forward what a ``DicomArrivalSensor`` saw arrive, pass its manifest (e.g.
    ``manifest="{{ ti.xcom_pull(task_ids='arrival') }}"`` with ``render_template_as_native_obj=True``,
    or an XComArg). Expected shape::

        {"studies": {"<StudyInstanceUID>": {"files": ["/data/.../1.2.3.dcm", ...],
                                             "instances": 12, "bytes": 123456}, ...},
         ...other keys ignored...}

    A plain ``{"files": [...]}`` is accepted too.

    :param paths: files, directories and glob patterns (templated); a string or a list.
    :param manifest: a ``DicomArrivalSensor`` manifest whose files are sent too (templated).
    :param dicom_conn_id: connection of type ``dicom`` (templated).
    :param calling_ae_title: optional calling AE title overriding the connection's (templated).
    :param parallel: associations at once (1-32; templated).
    :param transcode: send compressed files uncompressed (decoded with pydicom) when the node refuses
        their transfer syntax but accepts an uncompressed one.
    :param max_failed: failed files tolerated before the task fails (default 0: any failure fails it).
    :param retries_per_file: re-sends of a file whose C-STORE response was lost.
    :param pseudonymize: pseudonymise on the way out (PS3.15 E.1-1, keyed; see
        :class:`~airflow_dicom.operators.pseudonymize.DicomPseudonymizeOperator`): ``{"key_conn_id": ...}``
        or ``{"key_file": ...}``, optionally ``profile_options``, ``keep_private``, ``include_burned_in``,
        ``mapping_path``, ``work_dir``. Nothing is written in clear; the summary gets ``pseudonymized``.
    :return: the summary pushed to XCom: ``files``, ``bytes``, ``sent``, ``warning``, ``failed``,
        ``skipped``, ``retried``, ``associations``, ``seconds`` and lists ``failures``,
        ``skipped_files``, ``warnings`` (``path``, ``sop_instance_uid``, ``status``, ``reason``).
    """

    template_fields: Sequence[str] = (
        "paths",
        "manifest",
        "dicom_conn_id",
        "calling_ae_title",
        "parallel",
        "pseudonymize",
    )
    template_fields_renderers = {"manifest": "json"}
    ui_color = "#ffe7c2"

    def __init__(
        self,
        *,
        paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
        manifest: Mapping[str, Any] | None = None,
        dicom_conn_id: str = DicomHook.default_conn_name,
        calling_ae_title: str | None = None,
        parallel: int = 2,
        transcode: bool = False,
        max_failed: int = 0,
        retries_per_file: int = 1,
        pseudonymize: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if paths is None and manifest is None:
            raise ValueError("DicomStoreOperator needs paths, a manifest, or both")
        if not isinstance(parallel, str):  # a template (e.g. "{{ params.parallel }}") is checked at run time
            _check_parallel(parallel)
        if max_failed < 0:
            raise ValueError(f"max_failed must be 0 or more, got {max_failed}")
        self.paths = paths
        self.manifest = manifest
        self.dicom_conn_id = dicom_conn_id
        self.calling_ae_title = calling_ae_title
        self.parallel = parallel
        self.transcode = transcode
        self.max_failed = max_failed
        self.retries_per_file = retries_per_file
        self.pseudonymize = check_send_option(pseudonymize) if pseudonymize else None

    def _all_paths(self) -> list[str]:
        return collect_paths(self.paths, self.manifest)

    def execute(self, context: Any) -> dict[str, Any]:
        overrides = {"calling_ae_title": self.calling_ae_title} if self.calling_ae_title else {}
        hook = node_hook(self.dicom_conn_id, **overrides)  # dicom: C-STORE; dicomweb: STOW-RS
        self.parallel = _check_parallel(self.parallel)
        paths = self._all_paths()
        if paths and self.pseudonymize:
            with pseudonymised_copies(self.pseudonymize, paths) as (copies, pseudonymized):
                self.log.info(
                    "pseudonymised %d of %d instances for sending (key id %s); held back: %s; failed: %d",
                    pseudonymized["written"],
                    pseudonymized["processed"],
                    pseudonymized["key_id"],
                    pseudonymized["held_back"] or "none",
                    len(pseudonymized["failed"]),
                )
                return self._send(hook, [copies], context, pseudonymized)
        return self._send(hook, paths, context, None)

    def _send(
        self, hook: DicomHook, paths: list[str], context: Any, pseudonymized: dict[str, Any] | None
    ) -> dict[str, Any]:
        if paths:
            report = hook.send(
                paths, parallel=self.parallel, transcode=self.transcode, retries=self.retries_per_file
            )
        else:
            self.log.info("the manifest lists no files: nothing to send")
            report = SendReport(node=hook.node)
        summary = report.summary()
        if pseudonymized is not None:
            summary["pseudonymized"] = pseudonymized
        self.log.info(
            "send to %s: %d files, %d sent, %d warning, %d failed, %d skipped (not DICOM), "
            "%d retried, %d transcoded, %.1f MB in %.2f s",
            summary["node"],
            summary["files"],
            summary["sent"],
            summary["warning"],
            summary["failed"],
            summary["skipped"],
            summary["retried"],
            summary["transcoded"],
            summary["bytes"] / 1e6,
            summary["seconds"],
        )
        for skipped in report.skipped:
            self.log.info("skipped %s: %s", skipped.path, skipped.reason)
        for converted in report.transcoded:
            self.log.info(
                "transcoded %s (%s): %s", converted.path, converted.sop_instance_uid, transcoding(converted)
            )
        for warned in report.warnings:
            self.log.warning(
                "stored with a warning %s (%s): %s", warned.path, warned.sop_instance_uid, warned.reason
            )
        for failed in report.failed:
            self.log.error("not stored %s (%s): %s", failed.path, failed.sop_instance_uid, failed.reason)
        context["ti"].xcom_push(key="return_value", value=summary)
        report.raise_for_failures(self.max_failed)
        if pseudonymized is not None and len(pseudonymized["failed"]) > self.max_failed:
            raise ValueError(
                f"{len(pseudonymized['failed'])} files could not be pseudonymised (not sent): "
                + "; ".join(pseudonymized["failed"][:10])
            )
        return summary


def _check_parallel(value: Any) -> int:
    """``parallel`` as an int in 1..32 (rendered templates arrive as strings)."""
    try:
        number = int(str(value).strip()) if isinstance(value, str) else int(value)
    except ValueError:
        raise ValueError(f"parallel must be a whole number between 1 and 32, got {value!r}") from None
    if not 1 <= number <= 32:
        raise ValueError(f"parallel must be between 1 and 32, got {value}")
    return number
