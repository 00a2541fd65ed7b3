"""The receiver's store core used by retrievals: as the C-STORE handler of a C-GET and as a C-MOVE
destination, against a real Orthanc (the retrieval issue builds its operators on these)."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from harness.dcmtk import movescu
from harness.ports import free_port
from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

from airflow_dicom.dimse.association import open_association
from airflow_dicom.dimse.node import DicomNode
from airflow_dicom.dimse.receiver import Receiver, StoreWriter
from airflow_dicom.dimse.status import Status

pytestmark = pytest.mark.integration


def test_store_writer_as_c_get_handler(loaded_orthanc, tmp_path: Path) -> None:
    pacs, corpus = loaded_orthanc
    study = corpus.studies[0]
    sop_classes = sorted({i.sop_class_uid for i in corpus.instances_of_study(study.study_uid)})
    syntaxes = sorted({i.transfer_syntax for i in corpus.instances_of_study(study.study_uid)})
    writer = StoreWriter(tmp_path / "data", "study")
    roles = []
    for uid in sop_classes:
        role = SCP_SCU_RoleSelectionNegotiation()
        role.sop_class_uid = uid
        role.scu_role = False
        role.scp_role = True
        roles.append(role)
    node = DicomNode(
        host="127.0.0.1", port=pacs.dicom_port, called_ae_title=pacs.aet, calling_ae_title="GETTER"
    )
    contexts = [StudyRootQueryRetrieveInformationModelGet, *[(uid, syntaxes) for uid in sop_classes]]
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study.study_uid
    with open_association(
        node, contexts, purpose="C-GET", evt_handlers=[(evt.EVT_C_STORE, writer.handle_store)], ext_neg=roles
    ) as assoc:
        statuses = [
            int(status.Status)
            for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)
        ]
    assert statuses[-1] == Status.SUCCESS
    state = writer.study(study.study_uid)
    assert state.sop_uids == {i.sop_uid for i in corpus.instances_of_study(study.study_uid)}
    assert {r.calling_ae for r in state.instances.values()} == {pacs.aet}  # the sender: the PACS
    for path in state.paths(writer.data_dir):
        received = pydicom.dcmread(path)
        source = pydicom.dcmread(corpus.paths[str(received.SOPInstanceUID)])
        # Orthanc may transcode RLE to an uncompressed syntax for the C-GET sub-operations
        assert received.StudyInstanceUID == source.StudyInstanceUID and received.PatientID == source.PatientID
        assert (received.pixel_array == source.pixel_array).all()


def test_receiver_as_c_move_destination(loaded_orthanc, tmp_path: Path) -> None:
    pacs, corpus = loaded_orthanc
    study = corpus.studies[1]
    with Receiver(tmp_path / "data", ae_title="MOVEDEST", host="127.0.0.1", port=free_port()) as receiver:
        pacs.register_modality("movedest", "MOVEDEST", "127.0.0.1", receiver.port)
        proc = movescu(
            "127.0.0.1", pacs.dicom_port, pacs.aet, "MOVEDEST", {"StudyInstanceUID": study.study_uid}
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        state = receiver.study(study.study_uid)
    assert state.sop_uids == {i.sop_uid for i in corpus.instances_of_study(study.study_uid)}
