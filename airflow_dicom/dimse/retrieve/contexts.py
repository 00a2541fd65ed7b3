"""Presentation contexts of retrieval associations: the Q/R models, and C-GET's storage contexts and roles."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from airflow_dicom.dimse.errors import InvalidRequestError
from airflow_dicom.dimse.retrieve.items import GET, MOVE

#: the Q/R models a C-MOVE association proposes
MOVE_MODELS = (StudyRootQueryRetrieveInformationModelMove, PatientRootQueryRetrieveInformationModelMove)

#: uncompressed syntaxes, one presentation context each: the acceptor picks one syntax per context, so a
#: shared context would make the PACS convert Implicit VR files to Explicit VR (or the reverse)
_UNCOMPRESSED_FAMILIES = [
    [ExplicitVRLittleEndian],
    [ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian],
]
_COMPRESSED_FAMILIES = [
    [RLELossless],
    [JPEGLosslessSV1, JPEGLossless, JPEGLSLossless, JPEGLSNearLossless],
    [JPEG2000Lossless, JPEG2000],
    [JPEGBaseline8Bit, JPEGExtended12Bit],
]
#: image storage SOP classes offered with compressed transfer syntaxes for C-GET
GET_IMAGE_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.2",  # CT
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT
    "1.2.840.10008.5.1.4.1.1.4",  # MR
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR
    "1.2.840.10008.5.1.4.1.1.1",  # CR
    "1.2.840.10008.5.1.4.1.1.1.1",  # DX for presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # DX for processing
    "1.2.840.10008.5.1.4.1.1.1.2",  # MG for presentation
    "1.2.840.10008.5.1.4.1.1.6.1",  # US
    "1.2.840.10008.5.1.4.1.1.3.1",  # US multi-frame
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
    "1.2.840.10008.5.1.4.1.1.20",  # NM
    "1.2.840.10008.5.1.4.1.1.128",  # PET
    "1.2.840.10008.5.1.4.1.1.12.1",  # XA
    "1.2.840.10008.5.1.4.1.1.12.2",  # RF
    "1.2.840.10008.5.1.4.1.1.481.1",  # RT Image
    "1.2.840.10008.5.1.4.1.1.77.1.4",  # VL Photographic
)
#: non-image storage SOP classes offered uncompressed for C-GET
GET_OTHER_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.59",  # Key Object Selection
    "1.2.840.10008.5.1.4.1.1.11.1",  # Grayscale Softcopy Presentation State
    "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
    "1.2.840.10008.5.1.4.1.1.481.2",  # RT Dose
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT Structure Set
    "1.2.840.10008.5.1.4.1.1.481.5",  # RT Plan
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte SC
    "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color SC
)


def get_contexts(
    level: str, sop_classes: Sequence[str] | None = None
) -> tuple[list[Any], list[SCP_SCU_RoleSelectionNegotiation]]:
    """Presentation contexts and SCP role items for a C-GET association (at most 128 contexts).

    :param level: the retrieve level (PATIENT needs the patient root model).
    :param sop_classes: storage SOP classes to accept; default :data:`GET_IMAGE_SOP_CLASSES` (with every
        compressed family) plus :data:`GET_OTHER_SOP_CLASSES` (uncompressed). Instances of other classes
        are reported by the PACS as failed sub-operations.
    """
    model = query_model(GET, level)
    contexts: list[Any] = [build_context(model)]
    if sop_classes:
        image = [uid for uid in sop_classes]
        other: list[str] = []
    else:
        image, other = list(GET_IMAGE_SOP_CLASSES), list(GET_OTHER_SOP_CLASSES)
    families = [*_UNCOMPRESSED_FAMILIES, *_COMPRESSED_FAMILIES]
    for uid in image:
        contexts.extend(build_context(uid, list(ts)) for ts in families)
    for uid in other:
        contexts.extend(build_context(uid, list(ts)) for ts in _UNCOMPRESSED_FAMILIES)
    if len(contexts) > 128:
        per_class = len(families)
        raise InvalidRequestError(
            f"C-GET for {len(image)} SOP classes needs {len(contexts)} presentation contexts (at most "
            f"128; each "
            f"class takes {per_class}); give at most {127 // per_class} SOP classes"
        )
    roles = []
    for uid in dict.fromkeys([*image, *other]):
        role = SCP_SCU_RoleSelectionNegotiation()
        role.sop_class_uid = uid
        role.scu_role = False
        role.scp_role = True
        roles.append(role)
    return contexts, roles


def query_model(service: str, level: str) -> str:
    """The Q/R information model of a request: Patient Root at PATIENT level, Study Root below.

    :param service: ``C-MOVE`` or ``C-GET``.
    :param level: the retrieve level.
    """
    if service == MOVE:
        return (
            PatientRootQueryRetrieveInformationModelMove
            if level == "PATIENT"
            else StudyRootQueryRetrieveInformationModelMove
        )
    return (
        PatientRootQueryRetrieveInformationModelGet
        if level == "PATIENT"
        else StudyRootQueryRetrieveInformationModelGet
    )
