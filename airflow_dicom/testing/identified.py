"""Synthetic *identified* studies for pseudonymisation tests and benchmarks.

Each instance carries identifying values where Table E.1-1 expects them: names, IDs, addresses,
institution, device, dates and times, free-text comments naming the patient, references in sequences
(ReferencedImageSequence, SourceImageSequence, RequestAttributesSequence), a FrameOfReferenceUID, private
blocks (one meant to be safe-listed) and, on request, ``BurnedInAnnotation=YES``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from airflow_dicom.testing.instance import make_instance, write_dataset

#: private creator of the block that tests safe-list (element 0x10 holds a harmless number)
SAFE_CREATOR = "AIRFLOW DICOM SAFE"
#: private creator of a block holding an identifying value (must never survive)
UNSAFE_CREATOR = "ACME HIDDEN"


@dataclass
class IdentifiedPatient:
    """The identifying values of one synthetic patient."""

    patient_id: str
    name: str
    birth_date: str
    address: str
    other_id: str
    phone: str


@dataclass
class IdentifiedStudy:
    """One written study and the values that must not survive pseudonymisation."""

    patient: IdentifiedPatient
    study_uid: str
    accession: str
    study_date: str
    series_uids: list[str] = field(default_factory=list)
    sop_uids: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    frame_of_reference_uid: str = ""
    burned_in_sop_uids: list[str] = field(default_factory=list)

    def secrets(self) -> list[str]:
        """Every identifying value of the study (strings that must not appear in any output byte)."""
        p = self.patient
        return [
            p.patient_id,
            p.name,
            p.birth_date,
            p.address,
            p.other_id,
            p.phone,
            self.accession,
            self.study_uid,
            self.frame_of_reference_uid,
            *self.series_uids,
            *self.sop_uids,
            "St Elsewhere Hospital",
            "Dr^Referring^Hidden",
            "Operator^Hidden",
            "SCANNER-ROOM-7",
            "SN-4711-HIDDEN",
            "REQ-PROC-HIDDEN",
            self.study_date,
        ]


def patient(index: int) -> IdentifiedPatient:
    """A deterministic synthetic patient.

    :param index: which one.
    """
    return IdentifiedPatient(
        patient_id=f"MRN{index:06d}X",
        name=f"Zyxwood^Quentina{index}^Marie",
        birth_date=f"19{50 + index % 40:02d}0{1 + index % 9}1{index % 9}",
        address=f"{index} Hidden Lane, Secretville",
        other_id=f"OTHER-{index:05d}-ID",
        phone=f"+44 1632 96{index:04d}",
    )


def write_study(
    directory: str | os.PathLike[str],
    who: IdentifiedPatient,
    *,
    series: int = 2,
    instances: int = 3,
    study_date: str = "20240315",
    pixel_bytes: int = 8 * 1024,
    burned_in: int = 0,
    seed: int = 0,
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> IdentifiedStudy:
    """Write one identified study (``series`` x ``instances`` CT instances) under ``directory``.

    :param directory: where the files go (``<sop>.dcm``).
    :param who: the patient.
    :param series: number of series.
    :param instances: instances per series.
    :param study_date: StudyDate (YYYYMMDD).
    :param pixel_bytes: pixel data size per instance.
    :param burned_in: how many instances of the last series are flagged ``BurnedInAnnotation=YES``.
    :param seed: pixel seed.
    :param transfer_syntax: the files' transfer syntax.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    study = IdentifiedStudy(
        patient=who,
        study_uid=str(generate_uid()),
        accession=f"ACC{seed:05d}H{len(who.name)}",
        study_date=study_date,
        frame_of_reference_uid=str(generate_uid()),
    )
    for s in range(series):
        series_uid = str(generate_uid())
        study.series_uids.append(series_uid)
        first_sop = None
        for i in range(instances):
            sop_uid = str(generate_uid())
            study.sop_uids.append(sop_uid)
            extra = {
                "PatientAddress": who.address,
                "OtherPatientIDs": who.other_id,
                "PatientTelephoneNumbers": who.phone,
                "InstitutionName": "St Elsewhere Hospital",
                "ReferringPhysicianName": "Dr^Referring^Hidden",
                "OperatorsName": "Operator^Hidden",
                "StationName": "SCANNER-ROOM-7",
                "DeviceSerialNumber": "SN-4711-HIDDEN",
                "ContentDate": study_date,
                "ContentTime": "101530",
                "AcquisitionDateTime": study_date + "101500",
                "InstanceCreationDate": study_date,
                "FrameOfReferenceUID": study.frame_of_reference_uid,
                "ImageComments": f"patient {who.name} id {who.patient_id}",
                "PatientAge": "054Y",
                "PatientWeight": "71.5",
                "BurnedInAnnotation": "YES" if s == series - 1 and i < burned_in else "NO",
            }
            ds = make_instance(
                sop_class_uid=CTImageStorage,
                patient_id=who.patient_id,
                patient_name=who.name,
                patient_birth_date=who.birth_date,
                study_uid=study.study_uid,
                series_uid=series_uid,
                sop_uid=sop_uid,
                study_date=study_date,
                accession_number=study.accession,
                study_description=f"CT for {who.name}",
                series_number=s + 1,
                instance_number=i + 1,
                pixel_bytes=pixel_bytes,
                transfer_syntax=transfer_syntax,
                seed=seed + s * 100 + i,
                extra=extra,
            )
            request = Dataset()
            request.RequestedProcedureID = "REQ-PROC-HIDDEN"
            request.AccessionNumber = study.accession
            request.StudyInstanceUID = study.study_uid
            ds.RequestAttributesSequence = Sequence([request])
            if first_sop is not None:
                ref = Dataset()
                ref.ReferencedSOPClassUID = CTImageStorage
                ref.ReferencedSOPInstanceUID = first_sop
                ds.ReferencedImageSequence = Sequence([ref])
                src = Dataset()
                src.ReferencedSOPClassUID = CTImageStorage
                src.ReferencedSOPInstanceUID = first_sop
                ds.SourceImageSequence = Sequence([src])
            block = ds.private_block(0x0011, UNSAFE_CREATOR, create=True)
            block.add_new(0x10, "LO", who.name)
            block.add_new(0x11, "LO", who.patient_id)
            safe = ds.private_block(0x0013, SAFE_CREATOR, create=True)
            safe.add_new(0x10, "DS", "42.5")
            if s == series - 1 and i < burned_in:
                study.burned_in_sop_uids.append(sop_uid)
            first_sop = first_sop or sop_uid
            study.files.append(write_dataset(ds, out / f"{sop_uid}.dcm"))
    return study
