"""A planned synthetic archive: deterministic ground truth, datasets built on demand.

:func:`make_corpus` plans patients, studies, series and instances from a seed and returns a
:class:`Corpus`; datasets are built only when asked (``corpus.dataset(uid)``, ``datasets()``,
``write(dir)``), so benchmark corpora of large instances need not fit in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid

from airflow_dicom.testing.instance import (
    DEFAULT_TRANSFER_SYNTAXES,
    MODALITY_SOP_CLASS,
    make_instance,
    write_dataset,
)

__all__ = [
    "AWKWARD_NAMES",
    "Corpus",
    "InstanceTruth",
    "PatientTruth",
    "SeriesTruth",
    "StudyTruth",
    "make_corpus",
    "make_same_day_corpus",
]

#: (PatientName, SpecificCharacterSet or None for the default repertoire), used round-robin.
AWKWARD_NAMES: tuple[tuple[str, str | None], ...] = (
    ("3rd^Patient", None),
    ("Müller^Jürgen", "ISO_IR 100"),
    ("Ñúñez^María José", "ISO_IR 192"),
    ("李^雷", "ISO_IR 192"),
    ("smith^john", None),
    ("", None),
    ("O'Brien^Siobhan", None),
    ("Иванов^Иван", "ISO_IR 192"),
    ("DOE^JANE", None),
    ("Øster^Åse", "ISO_IR 100"),
    ("van der Berg^Anna^^Dr", None),
    ("42^Answer", None),
)
_DESCRIPTIONS = ("CT THORAX", "IRM cérébrale", "Abdomen/Pelvis", "", "knee, left", "Routine 1")
_SEXES = ("M", "F", "O", "")


# ---------------------------------------------------------------------------- ground truth


@dataclass(frozen=True)
class PatientTruth:
    """One patient of a corpus."""

    patient_id: str
    patient_name: str
    specific_character_set: str | None
    birth_date: str
    sex: str


@dataclass(frozen=True)
class StudyTruth:
    """One study: what a STUDY-level C-FIND should report for it."""

    study_uid: str
    patient_id: str
    study_date: date
    study_time: str
    accession_number: str
    study_description: str
    modalities: tuple[str, ...]
    n_series: int
    n_instances: int

    @property
    def study_date_str(self) -> str:
        """StudyDate as the DICOM DA string YYYYMMDD."""
        return self.study_date.strftime("%Y%m%d")


@dataclass(frozen=True)
class SeriesTruth:
    """One series: a single modality and SOP class."""

    series_uid: str
    study_uid: str
    modality: str
    sop_class_uid: str
    series_number: int
    n_instances: int


@dataclass(frozen=True)
class InstanceTruth:
    """One instance and everything needed to rebuild its dataset deterministically."""

    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    series_uid: str
    study_uid: str
    patient_id: str
    params: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass
class Corpus:
    """A planned archive: ground truth plus on-demand datasets.

    ``paths`` maps SOPInstanceUID -> file once :meth:`write` was called.
    """

    patients: list[PatientTruth]
    studies: list[StudyTruth]
    series: list[SeriesTruth]
    instances: list[InstanceTruth]
    paths: dict[str, Path] = field(default_factory=dict)

    # -- look-ups
    @property
    def sop_uids(self) -> set[str]:
        """Every SOPInstanceUID."""
        return {i.sop_uid for i in self.instances}

    @property
    def study_uids(self) -> set[str]:
        """Every StudyInstanceUID."""
        return {s.study_uid for s in self.studies}

    @property
    def series_uids(self) -> set[str]:
        """Every SeriesInstanceUID."""
        return {s.series_uid for s in self.series}

    @property
    def patient_ids(self) -> set[str]:
        """Every PatientID."""
        return {p.patient_id for p in self.patients}

    def study(self, study_uid: str) -> StudyTruth:
        """The study with this UID."""
        for study in self.studies:
            if study.study_uid == study_uid:
                return study
        raise KeyError(study_uid)

    def patient(self, patient_id: str) -> PatientTruth:
        """The patient with this ID."""
        for patient in self.patients:
            if patient.patient_id == patient_id:
                return patient
        raise KeyError(patient_id)

    def instances_of_study(self, study_uid: str) -> list[InstanceTruth]:
        """Instances belonging to a study."""
        return [i for i in self.instances if i.study_uid == study_uid]

    def studies_between(self, first: date, last: date) -> list[StudyTruth]:
        """Studies whose StudyDate is in [first, last] (both inclusive, like a DICOM range)."""
        return [s for s in self.studies if first <= s.study_date <= last]

    def studies_with_modality(self, modality: str) -> list[StudyTruth]:
        """Studies whose ModalitiesInStudy contains ``modality``."""
        return [s for s in self.studies if modality in s.modalities]

    def subset(self, study_uids: Sequence[str] | set[str]) -> Corpus:
        """A corpus restricted to some studies (and their patients, series, instances, paths)."""
        wanted = set(study_uids)
        studies = [s for s in self.studies if s.study_uid in wanted]
        pids = {s.patient_id for s in studies}
        instances = [i for i in self.instances if i.study_uid in wanted]
        return Corpus(
            patients=[p for p in self.patients if p.patient_id in pids],
            studies=studies,
            series=[s for s in self.series if s.study_uid in wanted],
            instances=instances,
            paths={i.sop_uid: self.paths[i.sop_uid] for i in instances if i.sop_uid in self.paths},
        )

    # -- datasets
    def dataset(self, sop_uid: str) -> Dataset:
        """Build the dataset of one instance (deterministic)."""
        for inst in self.instances:
            if inst.sop_uid == sop_uid:
                return make_instance(**inst.params)
        raise KeyError(sop_uid)

    def datasets(self) -> Iterator[Dataset]:
        """Build every dataset in order, one at a time."""
        for inst in self.instances:
            yield make_instance(**inst.params)

    def write(self, directory: str | os.PathLike[str]) -> list[Path]:
        """Write every instance to ``directory/<SOPInstanceUID>.dcm``; return the paths in order."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for inst in self.instances:
            path = write_dataset(make_instance(**inst.params), out / f"{inst.sop_uid}.dcm")
            self.paths[inst.sop_uid] = path
            paths.append(path)
        return paths

    def files_of_study(self, study_uid: str) -> list[Path]:
        """Written files of one study (call :meth:`write` first)."""
        return [self.paths[i.sop_uid] for i in self.instances_of_study(study_uid)]


# ---------------------------------------------------------------------------- corpus planning


def _count(rng: np.random.Generator, spec: int | tuple[int, int]) -> int:
    """An int, or a uniform draw from an inclusive (low, high) range."""
    if isinstance(spec, tuple):
        return int(rng.integers(spec[0], spec[1] + 1))
    return int(spec)


def _patient_id(index: int) -> str:
    """Awkward but unique PatientIDs: digits with leading zeros, dashes, lower case."""
    kind = index % 3
    if kind == 0:
        return f"{index:08d}"
    if kind == 1:
        return f"PAT-{index:05d}"
    return f"mrn{index}x"


def make_corpus(
    *,
    n_patients: int = 20,
    studies_per_patient: int | tuple[int, int] = 2,
    series_per_study: int | tuple[int, int] = (1, 2),
    instances_per_series: int | tuple[int, int] = (1, 3),
    start: date = date(2024, 1, 1),
    days: int = 365,
    seed: int = 0,
    pixel_bytes: int = 8 * 1024,
    transfer_syntaxes: Sequence[str] = DEFAULT_TRANSFER_SYNTAXES,
    modalities: Sequence[str] = ("CT", "MR", "CR", "US", "OT"),
    fixed_date: date | None = None,
    fixed_time: str | None = None,
) -> Corpus:
    """Plan a deterministic corpus for ``seed`` (same arguments -> same UIDs and values).

    Counts are an int or an inclusive ``(low, high)`` range drawn per parent. Study dates are
    spread uniformly over ``[start, start + days)`` unless ``fixed_date`` is given; study times
    are random (some with a fractional part) unless ``fixed_time`` is given. A study's first
    series has the study's main modality, later ones are often a different modality (so
    ModalitiesInStudy has several values). Transfer syntaxes rotate per instance. UIDs derive
    from a hash of all arguments, so different corpora never share a UID.
    """
    for modality in modalities:
        if modality not in MODALITY_SOP_CLASS:
            raise ValueError(f"unknown modality {modality}")
    namespace = json.dumps(
        [
            n_patients,
            studies_per_patient,
            series_per_study,
            instances_per_series,
            start.isoformat(),
            days,
            seed,
            pixel_bytes,
            list(transfer_syntaxes),
            list(modalities),
            str(fixed_date),
            fixed_time,
        ],
    )
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(namespace.encode()).digest()[:8], "little"))

    def uid(*parts: object) -> str:
        # joined with a separator: generate_uid concatenates its sources, so (1, 11) and (11, 1) collided
        return str(generate_uid(entropy_srcs=[namespace, "/" + "/".join(map(str, parts))]))

    patients: list[PatientTruth] = []
    studies: list[StudyTruth] = []
    series_list: list[SeriesTruth] = []
    instances: list[InstanceTruth] = []
    n_instance = 0
    for p in range(n_patients):
        name, charset = AWKWARD_NAMES[p % len(AWKWARD_NAMES)]
        birth = (
            ""
            if p % 7 == 5
            else (date(1930, 1, 1) + timedelta(days=int(rng.integers(0, 90 * 365)))).strftime("%Y%m%d")
        )
        patient = PatientTruth(_patient_id(p), name, charset, birth, _SEXES[p % len(_SEXES)])
        patients.append(patient)
        for s in range(_count(rng, studies_per_patient)):
            study_uid = uid("study", p, s)
            study_date = fixed_date or start + timedelta(days=int(rng.integers(0, max(1, days))))
            if fixed_time is not None:
                study_time = fixed_time
            else:
                hh, mm, ss = (int(rng.integers(0, n)) for n in (24, 60, 60))
                study_time = f"{hh:02d}{mm:02d}{ss:02d}"
                if rng.random() < 0.2:
                    study_time += f".{int(rng.integers(0, 1000)):03d}"
            main_modality = modalities[int(rng.integers(0, len(modalities)))]
            accession = f"ACC{seed % 1000:03d}{len(studies):06d}"
            description = _DESCRIPTIONS[len(studies) % len(_DESCRIPTIONS)]
            study_series: list[SeriesTruth] = []
            for r in range(_count(rng, series_per_study)):
                modality = main_modality
                if r > 0 and rng.random() < 0.6:
                    modality = modalities[int(rng.integers(0, len(modalities)))]
                series_uid = uid("series", p, s, r)
                n_inst = max(1, _count(rng, instances_per_series))
                sop_class = MODALITY_SOP_CLASS[modality]
                for i in range(n_inst):
                    sop_uid = uid("instance", p, s, r, i)
                    ts = UID(transfer_syntaxes[n_instance % len(transfer_syntaxes)])
                    params = {
                        "sop_class_uid": sop_class,
                        "modality": modality,
                        "patient_id": patient.patient_id,
                        "patient_name": patient.patient_name,
                        "specific_character_set": patient.specific_character_set,
                        "patient_birth_date": patient.birth_date,
                        "patient_sex": patient.sex,
                        "study_uid": study_uid,
                        "series_uid": series_uid,
                        "sop_uid": sop_uid,
                        "study_date": study_date,
                        "study_time": study_time,
                        "accession_number": accession,
                        "study_description": description,
                        "study_id": str(len(studies) + 1),
                        "series_number": r + 1,
                        "instance_number": i + 1,
                        "transfer_syntax": ts,
                        "pixel_bytes": pixel_bytes,
                        "seed": seed * 1_000_003 + n_instance,
                    }
                    instances.append(
                        InstanceTruth(
                            sop_uid, sop_class, ts, series_uid, study_uid, patient.patient_id, params
                        )
                    )
                    n_instance += 1
                study_series.append(SeriesTruth(series_uid, study_uid, modality, sop_class, r + 1, n_inst))
            series_list.extend(study_series)
            studies.append(
                StudyTruth(
                    study_uid=study_uid,
                    patient_id=patient.patient_id,
                    study_date=study_date,
                    study_time=study_time,
                    accession_number=accession,
                    study_description=description,
                    modalities=tuple(sorted({x.modality for x in study_series})),
                    n_series=len(study_series),
                    n_instances=sum(x.n_instances for x in study_series),
                )
            )
    return Corpus(patients=patients, studies=studies, series=series_list, instances=instances)


def make_same_day_corpus(
    n_studies: int,
    *,
    day: date = date(2024, 6, 1),
    study_time: str | None = "120000",
    seed: int = 0,
    **kwargs: Any,
) -> Corpus:
    """``n_studies`` studies (one per patient) all on ``day`` and, unless None, at the same StudyTime.

    Useful to exercise C-FIND splitting when a single day (or a single time) is over a PACS limit.
    Other keyword arguments go to :func:`make_corpus`.
    """
    kwargs.setdefault("series_per_study", 1)
    kwargs.setdefault("instances_per_series", 1)
    return make_corpus(
        n_patients=n_studies,
        studies_per_patient=1,
        fixed_date=day,
        fixed_time=study_time,
        seed=seed,
        **kwargs,
    )
