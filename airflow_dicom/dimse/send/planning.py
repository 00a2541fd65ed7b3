"""Which associations a send opens: contexts for the (SOP class, transfer syntax) pairs present, <=128 each.

One presentation context is proposed per pair actually present, compressed syntaxes included (with
``transcode=True`` also one uncompressed fallback per SOP class). More than 128 contexts are spread over
several associations, and each group's files are striped over up to ``parallel`` associations.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from airflow_dicom.dimse.association import MAX_CONTEXTS
from airflow_dicom.dimse.send.files import DicomFileInfo

#: the uncompressed syntaxes offered as fallback when transcoding is allowed, in preference order.
FALLBACK_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


@dataclass(frozen=True)
class AssociationJob:
    """Files sent over one association at a time (re-opened after a lost response)."""

    files: tuple[DicomFileInfo, ...]
    contexts: tuple[tuple[str, tuple[str, ...]], ...]


def contexts_for(files: Iterable[DicomFileInfo], transcode: bool) -> list[tuple[str, tuple[str, ...]]]:
    """One context per (SOP class, transfer syntax) present, plus fallbacks when transcoding.

    :param files: the files.
    :param transcode: add an uncompressed fallback context per SOP class.
    """
    by_class: dict[str, set[str]] = {}
    for info in files:
        by_class.setdefault(info.sop_class_uid, set()).add(info.transfer_syntax)
    contexts: list[tuple[str, tuple[str, ...]]] = []
    for sop_class in sorted(by_class):
        syntaxes = sorted(by_class[sop_class])
        contexts.extend((sop_class, (ts,)) for ts in syntaxes)
        if transcode and set(syntaxes) - {ImplicitVRLittleEndian}:
            contexts.append((sop_class, FALLBACK_SYNTAXES))
    return contexts


def plan_associations(
    files: Sequence[DicomFileInfo], *, parallel: int, transcode: bool
) -> list[AssociationJob]:
    """Split files into jobs: groups of SOP classes needing at most 128 contexts, each striped.

    :param files: the sendable files.
    :param parallel: associations to run at once.
    :param transcode: add uncompressed fallback contexts.
    """
    per_class: dict[str, list[DicomFileInfo]] = {}
    for info in files:
        per_class.setdefault(info.sop_class_uid, []).append(info)
    groups: list[list[DicomFileInfo]] = []
    current: list[DicomFileInfo] = []
    used = 0
    for sop_class in sorted(per_class):
        members = per_class[sop_class]
        needed = len(contexts_for(members, transcode))
        if current and used + needed > MAX_CONTEXTS:
            groups.append(current)
            current, used = [], 0
        current.extend(members)
        used += needed
    if current:
        groups.append(current)
    order = {id(info): n for n, info in enumerate(files)}
    jobs: list[AssociationJob] = []
    for group in groups:
        group.sort(key=lambda info: order[id(info)])
        stripes = max(1, min(parallel, len(group)))
        for stripe in range(stripes):
            members = tuple(group[stripe::stripes])
            jobs.append(AssociationJob(members, tuple(contexts_for(members, transcode))))
    return jobs
