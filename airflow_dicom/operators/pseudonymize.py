"""DicomPseudonymizeOperator: PS3.15 E.1-1 pseudonymisation of files, directories or a manifest."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from airflow.sdk import BaseOperator

from airflow_dicom.deid.options import ProfileOptions
from airflow_dicom.deid.pipeline import Pseudonymiser
from airflow_dicom.dimse.storage_layout import Layout
from airflow_dicom.hooks.pseudonym import load_key
from airflow_dicom.operators.inputs import collect_paths


class DicomPseudonymizeOperator(BaseOperator):
    """Pseudonymise DICOM instances into a new data directory (receiver layouts and arrival records, so a
    ``DicomArrivalSensor`` or ``DicomStoreOperator`` can take it from there).

    PS3.15 Annex E Basic Application Level Confidentiality Profile (Table E.1-1) with keyed deterministic
    UIDs (``2.25.`` + HMAC-SHA256), keyed PatientID/AccessionNumber pseudonyms and, by default, per-patient
    date shifts: the same key gives the same output in any run. Instances that may carry burned-in text
    are held back and counted unless ``include_burned_in``.

    :param paths: files and directories (templated).
    :param manifest: a ``DicomArrivalSensor`` manifest whose files are pseudonymised too (templated).
    :param out_dir: the output data directory (templated).
    :param key_conn_id: connection whose **password** is the key (templated); or
    :param key_file: a file holding the key (templated).
    :param profile_options: ``clean-descriptors``, ``patient-characteristics``, ``device-identity``,
        ``no-modified-dates``.
    :param keep_private: safe-listed private elements ``"CREATOR:EE"``.
    :param include_burned_in: write instances that may carry burned-in text too.
    :param layout: ``patient``, ``study`` (default) or ``flat``.
    :param mapping_path: Parquet file for the identifying original -> pseudonym mapping (templated;
        None: no mapping is written).
    :param max_failed: unreadable instances tolerated before the task fails.
    :return: the run summary (no identifying value): counts, held back and why, key id, options,
        ``studies`` (pseudonymous study UID -> instances written, also pushed as XCom ``studies`` for
        ``DicomArrivalSensor(studies_from_task=..., studies_xcom_key="studies")``), ``out_dir``.
    """

    template_fields: Sequence[str] = (
        "paths",
        "manifest",
        "out_dir",
        "key_conn_id",
        "key_file",
        "mapping_path",
    )
    template_fields_renderers = {"manifest": "json"}
    ui_color = "#d9f2e6"

    def __init__(
        self,
        *,
        out_dir: str | os.PathLike[str],
        paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
        manifest: Mapping[str, Any] | str | None = None,
        key_conn_id: str | None = None,
        key_file: str | None = None,
        profile_options: Sequence[str] = (),
        keep_private: Sequence[str] = (),
        include_burned_in: bool = False,
        layout: str = "study",
        mapping_path: str | None = None,
        max_failed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if paths is None and manifest is None:
            raise ValueError("DicomPseudonymizeOperator needs paths, a manifest, or both")
        if bool(key_conn_id) == bool(key_file):
            raise ValueError("give the pseudonymisation key as exactly one of key_conn_id or key_file")
        self.options = ProfileOptions.from_names(list(profile_options), list(keep_private), include_burned_in)
        self.layout = Layout.parse(layout).value
        if max_failed < 0:
            raise ValueError(f"max_failed must be 0 or more, got {max_failed}")
        self.paths = paths
        self.manifest = manifest
        self.out_dir = out_dir
        self.key_conn_id = key_conn_id
        self.key_file = key_file
        self.mapping_path = mapping_path
        self.max_failed = max_failed

    def execute(self, context: Any) -> dict[str, Any]:
        key = load_key(self.key_conn_id, self.key_file)
        runner = Pseudonymiser(key, self.out_dir, self.options, layout=self.layout, mapping=self.mapping_path)
        summary = runner.run(collect_paths(self.paths, self.manifest)).as_dict()
        summary["out_dir"] = os.fspath(self.out_dir)
        self.log.info(
            "pseudonymised %d of %d instances into %s (key id %s, options %s); held back: %s",
            summary["written"],
            summary["processed"],
            self.out_dir,
            summary["key_id"],
            ",".join(summary["options"]) or "none",
            summary["held_back"] or "none",
        )
        # for DicomArrivalSensor(studies_from_task=..., studies_xcom_key="studies"): {uid: instances}
        context["ti"].xcom_push(key="studies", value=summary["studies"])
        if len(summary["failed"]) > self.max_failed:
            raise ValueError(
                f"{len(summary['failed'])} instances could not be pseudonymised (nothing written for them): "
                + "; ".join(summary["failed"][:10])
            )
        return summary


#: keys of ``DicomStoreOperator(pseudonymize={...})``
SEND_OPTION_KEYS = frozenset(
    {
        "key_conn_id",
        "key_file",
        "profile_options",
        "keep_private",
        "include_burned_in",
        "mapping_path",
        "work_dir",
    }
)


def check_send_option(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``DicomStoreOperator(pseudonymize=...)``.

    :param spec: ``{"key_conn_id": ...}`` or ``{"key_file": ...}``, optionally ``profile_options``,
        ``keep_private``, ``include_burned_in``, ``mapping_path``, ``work_dir`` (where the pseudonymised
        copies are made; default the system's temporary directory).
    :raises ValueError: unknown keys, no key or two keys, unknown options.
    """
    unknown = set(spec) - SEND_OPTION_KEYS
    if unknown:
        raise ValueError(f"pseudonymize: unknown keys {sorted(unknown)}; known: {sorted(SEND_OPTION_KEYS)}")
    if bool(spec.get("key_conn_id")) == bool(spec.get("key_file")):
        raise ValueError("pseudonymize: give exactly one of key_conn_id or key_file")
    ProfileOptions.from_names(
        list(spec.get("profile_options", ())),
        list(spec.get("keep_private", ())),
        bool(spec.get("include_burned_in")),
    )
    return dict(spec)


@contextmanager
def pseudonymised_copies(
    spec: Mapping[str, Any], sources: Sequence[str]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Pseudonymise ``sources`` into a private temporary directory, removed on exit.

    Only pseudonymised bytes are written (each instance is rewritten in memory first).

    :param spec: as checked by :func:`check_send_option`.
    :param sources: files and directories.
    :returns: (the directory, the run summary).
    """
    options = ProfileOptions.from_names(
        list(spec.get("profile_options", ())),
        list(spec.get("keep_private", ())),
        bool(spec.get("include_burned_in")),
    )
    key = load_key(spec.get("key_conn_id"), spec.get("key_file"))
    with tempfile.TemporaryDirectory(prefix="airflow-dicom-pseudo-", dir=spec.get("work_dir")) as tmp:
        runner = Pseudonymiser(
            key, tmp, options, layout="flat", mapping=spec.get("mapping_path"), record_arrivals=False
        )
        summary = runner.run(sources).as_dict()
        yield tmp, summary
