"""The error split (retryable vs permanent) and the retry configuration."""

from __future__ import annotations

import inspect

import pytest
from pydicom.errors import InvalidDicomError
from pynetdicom.pdu_primitives import A_ASSOCIATE

from airflow_dicom.dimse import errors
from airflow_dicom.dimse.errors import (
    AssociationAbortedError,
    AssociationRejectedError,
    DicomError,
    DimseFailureError,
    MalformedDicomError,
    NodeUnreachableError,
    NotDicomError,
    PermanentDicomError,
    RetryableDicomError,
)
from airflow_dicom.dimse.node import DicomNode
from airflow_dicom.dimse.retry import RetryPolicy, is_retryable

NODE = DicomNode("pacs.example.org", 104, "PACS")
#: the two errors whose retryability depends on what the node answered, not on their class
DECIDED_BY_ANSWER = {AssociationRejectedError, DimseFailureError}


def _error_classes() -> list[type[DicomError]]:
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, Exception) and cls.__module__ == errors.__name__
    ]


def test_every_error_is_a_dicom_error_on_exactly_one_side() -> None:
    classes = _error_classes()
    assert len(classes) > 10
    for cls in classes:
        assert issubclass(cls, DicomError), cls
        if cls in (DicomError, RetryableDicomError, PermanentDicomError) or cls in DECIDED_BY_ANSWER:
            continue
        assert issubclass(cls, RetryableDicomError) != issubclass(cls, PermanentDicomError), cls


def test_class_decides_retryability() -> None:
    assert is_retryable(NodeUnreachableError(NODE, "connection refused"))
    assert is_retryable(AssociationAbortedError(NODE, "C-MOVE"))
    assert not is_retryable(errors.InvalidRequestError("bad key"))
    assert not is_retryable(errors.NoAcceptedContextError(NODE, "C-GET"))
    assert not is_retryable(ValueError("not a DICOM error"))


def _reject(result: int, source: int, diagnostic: int) -> AssociationRejectedError:
    primitive = A_ASSOCIATE()
    primitive.result, primitive.result_source, primitive.diagnostic = result, source, diagnostic
    return AssociationRejectedError(
        NODE, result, source, diagnostic, source_text=primitive.source_str, reason_text=primitive.reason_str
    )


def test_rejection_is_retryable_only_when_transient_and_uses_pynetdicoms_texts() -> None:
    permanent = _reject(1, 1, 7)
    assert not permanent.retryable and not permanent.transient
    assert str(permanent) == (
        "association with PACS@pacs.example.org:104 rejected permanently by the Service User: called AE "
        "title not recognised (check the node's called AE title)"
    )
    busy = _reject(2, 3, 1)
    assert busy.retryable and is_retryable(busy)
    assert "rejected transiently" in str(busy) and "temporary congestion" in str(busy)
    assert "lower the number of parallel associations" in str(busy)


@pytest.mark.parametrize(
    ("status", "retryable"), [(None, True), (0xA700, True), (0xA702, True), (0xC000, False)]
)
def test_dimse_failure_is_retryable_without_response_or_out_of_resources(
    status: int | None, retryable: bool
) -> None:
    assert DimseFailureError(NODE, "C-FIND", status).retryable is retryable


def test_file_errors_are_permanent_and_need_no_pydicom_import() -> None:
    for cls in (NotDicomError, MalformedDicomError):
        assert issubclass(cls, PermanentDicomError) and not issubclass(cls, InvalidDicomError)
    assert str(NotDicomError("no DICM prefix")) == "no DICM prefix"


def test_retry_policy() -> None:
    policy = RetryPolicy(attempts=3, backoff=2.0, max_backoff=5.0)
    assert [policy.delay(n) for n in (1, 2, 3)] == [2.0, 4.0, 5.0]
    lost = AssociationAbortedError(NODE, "C-STORE")
    assert policy.should_retry(lost, 2) and not policy.should_retry(lost, 3)
    assert not policy.should_retry(errors.InvalidRequestError("x"), 1)
    with pytest.raises(errors.InvalidRequestError):
        RetryPolicy(attempts=0)
