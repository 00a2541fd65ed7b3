"""The receiver's cached association negotiation (pynetdicom_ext.negotiation) answers as pynetdicom does.

A peer that asks the same thing again (a PACS opening one association per C-MOVE) is accepted from the
server's cache: the A-ASSOCIATE-AC it receives must be byte for byte what pynetdicom's own acceptor sends,
the instances must be stored, and everything decided per association (AE titles, the association limit,
user identity) must still be decided per association.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from harness.ports import free_port
from harness.synth import make_instance
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_context, evt
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation, UserIdentityNegotiation
from pynetdicom.sop_class import Verification

from airflow_dicom.dimse.pynetdicom_ext import make_acceptor_ae, make_nodelay_ae
from airflow_dicom.dimse.receiver import Receiver, storage_contexts

pytestmark = pytest.mark.integration

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
#: an abstract syntax no receiver supports: its context must come back rejected (0x03)
PRIVATE = "1.2.826.0.1.3680043.9.9999.1"
#: a transfer syntax no receiver supports: MR proposed with it alone must come back rejected (0x04)
PRIVATE_SYNTAX = "1.2.826.0.1.3680043.9.9999.2"


def _proposed() -> list[Any]:
    return [
        build_context(CT, [ImplicitVRLittleEndian, ExplicitVRLittleEndian]),
        build_context(MR, [PRIVATE_SYNTAX]),
        build_context(PRIVATE, [ExplicitVRLittleEndian]),
        build_context(Verification),
    ]


def _role(uid: str) -> SCP_SCU_RoleSelectionNegotiation:
    role = SCP_SCU_RoleSelectionNegotiation()
    role.sop_class_uid = uid
    role.scu_role = True
    role.scp_role = False
    return role


def _associate(port: int, *, called: str, calling: str = "PEER", ext_neg: list[Any] | None = None) -> Any:
    """An association proposing :func:`_proposed`, remembering the raw PDUs it received."""
    ae = make_nodelay_ae(calling)
    received: list[bytes] = []
    assoc = ae.associate(
        "127.0.0.1",
        port,
        contexts=_proposed(),
        ae_title=called,
        ext_neg=ext_neg if ext_neg is not None else [_role(CT)],
        evt_handlers=[(evt.EVT_DATA_RECV, lambda event: received.append(event.data))],
    )
    assoc.received_pdus = received
    return assoc


def _outcome(assoc: Any) -> list[tuple[Any, ...]]:
    contexts = assoc.accepted_contexts + assoc.rejected_contexts
    return sorted(
        (cx.context_id, cx.abstract_syntax, tuple(cx.transfer_syntax), cx.result) for cx in contexts
    )


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    with Receiver(tmp_path / "data", ae_title="RX", host="127.0.0.1", port=0, max_associations=2) as rx:
        yield rx


def test_repeated_requests_get_pynetdicoms_own_answer(receiver: Receiver, tmp_path: Path) -> None:
    """The first request is negotiated by pynetdicom, the next ones from the cache: the same A-ASSOCIATE-AC
    bytes as a stock pynetdicom acceptor with the same contexts, and every instance stored."""
    stock = make_nodelay_ae("RX")
    stock.maximum_pdu_size = receiver._ae.maximum_pdu_size
    server = stock.start_server(("127.0.0.1", free_port()), block=False, contexts=storage_contexts())
    try:
        reference = _associate(server.server_address[1], called="RX")
        assert reference.is_established
        reference.release()
    finally:
        server.shutdown()
    answers, outcomes, stored = [], [], []
    for n in range(3):
        assoc = _associate(receiver.port, called="RX")
        assert assoc.is_established, f"association {n} was not accepted"
        answers.append(assoc.received_pdus[0])
        outcomes.append(_outcome(assoc))
        ds = make_instance(seed=n, pixel_bytes=256)
        status = assoc.send_c_store(ds)
        assert status.Status == 0x0000
        stored.append(ds.SOPInstanceUID)
        assoc.release()
    assert answers[0][:1] == b"\x02"  # an A-ASSOCIATE-AC
    assert answers == [reference.received_pdus[0]] * 3
    assert outcomes == [_outcome(reference)] * 3
    results = {cx[1]: cx[3] for cx in outcomes[0]}
    assert results == {CT: 0x00, MR: 0x04, PRIVATE: 0x03, Verification: 0x00}
    data = tmp_path / "data"
    files = [p for p in data.rglob("*.dcm") if not p.relative_to(data).parts[0].startswith(".")]
    held = {str(pydicom.dcmread(p).SOPInstanceUID) for p in files}
    assert held == set(stored)
    assert len(receiver._server.negotiation_cache) == 1


def test_a_known_request_is_still_refused_beyond_the_association_limit(receiver: Receiver) -> None:
    """The association limit is checked per association, also for a request the cache knows."""
    first = _associate(receiver.port, called="RX")
    assert first.is_established
    second = _associate(receiver.port, called="RX")
    assert second.is_established
    third = _associate(receiver.port, called="RX")
    try:
        # on the wire: A-ASSOCIATE-RJ, rejected-transient, service provider (presentation), local limit
        # exceeded. Asserted from the bytes: pynetdicom's requestor, though it read them, now and then reports
        # the association aborted instead of rejected (1 in ~450 with a CPU hog beside it; see stop 23's note)
        assert third.received_pdus == [bytes([0x03, 0, 0, 0, 0, 4, 0, 0x02, 0x03, 0x02])]
        assert not third.is_established
    finally:
        first.release()
        second.release()
    deadline = time.monotonic() + 10
    while receiver._server.active_associations and time.monotonic() < deadline:
        time.sleep(0.01)  # the acceptors' threads end just after the release
    fourth = _associate(receiver.port, called="RX")
    assert fourth.is_established
    fourth.release()


def test_calling_ae_titles_are_checked_for_known_requests(tmp_path: Path) -> None:
    with Receiver(tmp_path / "d", ae_title="RX", host="127.0.0.1", port=0, allowed_aets=["GOOD"]) as rx:
        for _ in range(2):
            good = _associate(rx.port, called="RX", calling="GOOD")
            assert good.is_established
            good.release()
        bad = _associate(rx.port, called="RX", calling="BAD")
        # A-ASSOCIATE-RJ, rejected-permanent, service user, calling AE not recognized (bytes, as above)
        assert bad.received_pdus == [bytes([0x03, 0, 0, 0, 0, 4, 0, 0x01, 0x01, 0x03])]
        assert not bad.is_established
        assert len(rx._server.negotiation_cache) == 1


def test_requests_with_user_identity_are_negotiated_every_time(receiver: Receiver) -> None:
    """User identity is decided per association (a handler may judge it): such requests are never cached."""
    identity = UserIdentityNegotiation()
    identity.user_identity_type = 1
    identity.primary_field = b"someone"
    for _ in range(2):
        assoc = _associate(receiver.port, called="RX", ext_neg=[identity])
        assert assoc.is_established
        assert _outcome(assoc)[0][3] == 0x00
        assoc.release()
    assert len(receiver._server.negotiation_cache) == 0


def test_handlers_observing_the_negotiation_see_pynetdicoms_own_primitives() -> None:
    """With an EVT_ACSE_SENT handler bound, each acceptance is pynetdicom's: the handler sees the contexts."""
    ae = make_acceptor_ae("OBSERVED")
    sent: list[int] = []

    def on_sent(event: Any) -> None:
        results = getattr(event.primitive, "presentation_context_definition_results_list", None)
        if results is not None and getattr(event.primitive, "result", None) == 0x00:
            sent.append(len(results))

    server = ae.start_server(
        ("127.0.0.1", 0),
        block=False,
        contexts=storage_contexts(),
        evt_handlers=[(evt.EVT_ACSE_SENT, on_sent)],
    )
    try:
        for _ in range(2):
            assoc = _associate(server.server_address[1], called="OBSERVED")
            assert assoc.is_established
            assoc.release()
        assert len(server.negotiation_cache) == 0
    finally:
        server.shutdown()
    assert sent == [len(_proposed())] * 2
