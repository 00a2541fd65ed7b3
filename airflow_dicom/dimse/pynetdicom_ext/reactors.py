"""Reactors that wait for what can happen instead of polling: the DUL loop and the association base.

pynetdicom 3.0's DUL thread and association thread each sleep a hard-coded ~1 ms between polls, so every
DIMSE message waits 1-2 ms for nothing (measured: 1,000 x 8 KB C-STOREs to dcmtk's storescp). Here:

* :class:`SelectDUL` waits in ``select()`` on its socket and a wake-up pipe; queuing a PDU to send wakes
  it, so does incoming data;
* :class:`OwnProvidersAssociation` is the base of our two association classes (:mod:`.requestor`,
  :mod:`.acceptor`): it installs their DUL and DIMSE providers and unbinds pynetdicom's logging handlers;
* :func:`reactor_should_stop` is the end-of-association step both our reactors share.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import ssl
import threading
import time
from typing import Any

from pynetdicom import _config, _handlers
from pynetdicom import acse as _acse
from pynetdicom import association as _association
from pynetdicom import dimse as _pdimse
from pynetdicom import dul as _dul
from pynetdicom import events as _evt
from pynetdicom import pdu as _pdu
from pynetdicom import utils as _utils

#: longest the acceptor's DUL waits in ``select()`` (and its association thread on its queue) before
#: re-checking timers and flags without a wake-up. Everything it acts on wakes it: incoming data, PDUs to
#: send and kills (the wake-up pipe), messages and release/abort indications (the queues); what is left is
#: timers, checked to the second. It was 2 ms: 500 idle turns a second per association, each taking the GIL.
ACCEPTOR_IDLE_WAIT = 0.02
#: longest the requestor's DUL waits (it serves no peer requests; its kill and sends wake it)
REQUESTOR_IDLE_WAIT = 0.02


class SelectDUL(_dul.DULServiceProvider):
    """pynetdicom's DUL provider with its idle ``time.sleep`` replaced by ``select()``.

    Replaces ``DULServiceProvider.run_reactor``. The loop is pynetdicom 3.0's, step for step (ARTIM timer,
    one primitive to send or one PDU received per turn, abort on an exception); only the wait between
    turns differs: ``select()`` on the socket and a wake-up pipe, at most :attr:`idle_wait` seconds.
    :meth:`send_pdu` and :meth:`kill_dul` write to the pipe, so a queued PDU is sent at once and a kill is
    seen at once. On a TLS socket, bytes OpenSSL has already decrypted (``SSLSocket.pending()``) end the
    wait at once; anything else is still in the kernel (Python's ``ssl`` reads one record at a time, no
    read-ahead), where ``select()`` sees it. pynetdicom slept 1 ms per turn on TLS sockets.

    :param assoc: the parent association.
    :param idle_wait: longest wait between turns without a wake-up.
    """

    def __init__(self, assoc: Any, idle_wait: float = ACCEPTOR_IDLE_WAIT) -> None:
        super().__init__(assoc)
        self.idle_wait = idle_wait
        # the pipe exists only while the DUL thread runs; the lock makes sure no thread ever writes to a
        # closed descriptor (its number may already belong to another file or another peer's socket)
        self._wake_lock = threading.Lock()
        self._wake_r: int | None = None
        self._wake_w: int | None = None
        #: the last idle wait saw the socket readable (a subclass may skip its own readiness check)
        self._socket_readable = False

    def send_pdu(self, primitive: Any) -> None:
        """Queue a primitive to send (pynetdicom's ``send_pdu``) and wake the DUL thread.

        :param primitive: the primitive.
        """
        super().send_pdu(primitive)
        self.wake()

    def kill_dul(self) -> None:
        """Stop the DUL thread (pynetdicom's ``kill_dul``), at once."""
        super().kill_dul()
        self.wake()

    def wake(self) -> None:
        """Interrupt the DUL thread's wait (safe from any thread, never blocks; no-op when not running)."""
        with self._wake_lock:
            if self._wake_w is None:
                return
            try:
                os.write(self._wake_w, b"\0")
            except OSError:  # pipe full: a wake-up is pending anyway
                pass

    def _idle_wait(self) -> None:
        """Wait until the socket is readable, a wake-up arrives, or ``idle_wait`` has passed."""
        sock = getattr(self.socket, "socket", None)
        wake_r = self._wake_r  # only this (the DUL) thread opens and closes it
        if sock is None or wake_r is None:
            time.sleep(self._run_loop_delay)
            return
        if isinstance(sock, ssl.SSLSocket):
            try:
                if sock.pending():  # decrypted bytes OpenSSL holds, which select() cannot see
                    return
            except (OSError, ValueError):
                return
        try:
            readable, _, _ = select.select([sock, wake_r], [], [], self.idle_wait)
        except (OSError, ValueError):  # socket closed under us: let the loop find out
            return
        self._socket_readable = sock in readable
        if wake_r in readable:
            try:
                os.read(wake_r, 4096)
            except OSError:
                pass

    def _open_wake(self) -> None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        with self._wake_lock:
            self._wake_r, self._wake_w = read_fd, write_fd

    def _close_wake(self) -> None:
        with self._wake_lock:
            fds = (self._wake_r, self._wake_w)
            self._wake_r = self._wake_w = None
            for fd in fds:
                if fd is not None:
                    try:
                        os.close(fd)
                    except OSError:
                        pass

    def run_reactor(self) -> None:
        """pynetdicom 3.0's DUL loop with the idle ``time.sleep`` replaced by :meth:`_idle_wait`."""
        self._open_wake()
        try:
            self._run_reactor_loop()
        finally:
            self._close_wake()

    def _run_reactor_loop(self) -> None:
        self._idle_timer.start()
        sleep = False
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
                sleep = True
            if sleep:
                self._idle_wait()
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception as exc:
                _dul.LOGGER.error("Exception in DUL.run(), aborting association")
                _dul.LOGGER.exception(exc)
                abort_pdu = _pdu.A_ABORT_RQ()
                abort_pdu.source = 0x02
                abort_pdu.reason_diagnostic = 0x00
                self.socket.send(abort_pdu.encode())
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                sleep = True
                continue
            self.state_machine.do_action(event)
            sleep = False


#: pynetdicom's standard handlers only log (and decode every command set to do so, and hide each C-STORE
#: from the acceptor's direct path); they are kept when pynetdicom logs at DEBUG, where their dumps are
#: the point.
_STANDARD_LOG_HANDLERS = (
    (_evt.EVT_DIMSE_RECV, _handlers.standard_dimse_recv_handler),
    (_evt.EVT_DIMSE_SENT, _handlers.standard_dimse_sent_handler),
    (_evt.EVT_PDU_RECV, _handlers.standard_pdu_recv_handler),
    (_evt.EVT_PDU_SENT, _handlers.standard_pdu_sent_handler),
)


def unbind_log_handlers(assoc: Any) -> None:
    """Unbind pynetdicom's standard DIMSE/PDU logging handlers unless pynetdicom logs at DEBUG.

    :param assoc: an association (not yet running).
    """
    if logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG):
        return
    for event, handler in _STANDARD_LOG_HANDLERS:
        assoc.unbind(event, handler)


class OwnProvidersAssociation(_association.Association):
    """A pynetdicom Association that runs the ACSE, DUL and DIMSE providers its subclass names.

    Replaces ``Association.__init__``: pynetdicom 3.0's, attribute for attribute, except that the providers
    are the subclass's from the start. pynetdicom's own built a stock DUL (four queues, a state machine,
    two timers), DIMSE provider and ACSE that were replaced at once: about a quarter of the CPU of accepting
    an association (measured in a C-MOVE of 2,000 studies, where a PACS opens one association per study).

    :param ae: the local application entity.
    :param mode: ``requestor`` or ``acceptor``.
    """

    #: the DUL provider's idle wait (see :class:`SelectDUL`)
    dul_idle_wait = ACCEPTOR_IDLE_WAIT
    #: the DIMSE provider class
    dimse_class: type = _pdimse.DIMSEServiceProvider
    #: the DUL provider class (a :class:`SelectDUL`)
    dul_class: type = SelectDUL
    #: the ACSE provider class
    acse_class: type = _acse.ACSE

    def __init__(self, ae: Any, mode: str) -> None:
        self._ae = ae
        self.mode = mode
        self._server = None
        self.requestor = _association.ServiceUser(self, _association.MODE_REQUESTOR)
        self.acceptor = _association.ServiceUser(self, _association.MODE_ACCEPTOR)
        self.is_established = False
        self.is_rejected = False
        self.is_aborted = False
        self.is_released = False
        self._sent_abort = False
        self._sent_release = False
        self._accepted_cx = {}
        self._rejected_cx = []
        self.acse = self.acse_class(self)
        self.dul = self.dul_class(self, self.dul_idle_wait)
        self.dimse = self.dimse_class(self)
        # the timeouts are stored on the DUL's timers and the DIMSE provider: set after both exist
        self.acse_timeout = ae.acse_timeout
        self.connection_timeout = ae.connection_timeout
        self.dimse_timeout = ae.dimse_timeout
        self.network_timeout = ae.network_timeout
        self.network_timeout_response = "A-ABORT"
        self._handlers = {}
        self._bind_defaults()
        self._kill = False
        self._started_dul = False
        self._dul_ready = threading.Event()
        self._reactor_checkpoint = threading.Event()
        self._reactor_checkpoint.set()
        self._is_paused = False
        self._timer_resolution = _config.WINDOWS_TIMER_RESOLUTION
        threading.Thread.__init__(self, target=_utils.make_target(self.run_reactor))
        self.daemon = True
        unbind_log_handlers(self)

    def kill(self) -> None:
        """pynetdicom's ``kill``, waking the DUL thread so it stops at once."""
        super().kill()
        self.dul.wake()


def reactor_should_stop(assoc: Any) -> bool:
    """The end-of-association step of pynetdicom 3.0's ``Association._run_reactor``, shared by our reactors.

    Handles a peer's release request, an abort, a dead DUL and the network timeout exactly as pynetdicom
    does; kills the association and returns True when the reactor must stop.

    :param assoc: the association whose reactor is running.
    """
    log = _association.LOGGER
    if assoc.is_established and assoc.acse.is_release_requested():
        assoc.acse.send_release(is_response=True)
        log.info("Association Released")
        assoc.is_released = True
        assoc.is_established = False
        _evt.trigger(assoc, _evt.EVT_RELEASED, {})
        assoc.kill()
        return True
    if assoc.acse.is_aborted():
        log_msg = "Association Aborted"
        if assoc.acse.is_aborted("a-p-abort"):
            log_msg += " (A-P-ABORT)"
        log.info(log_msg)
        assoc.dul.receive_pdu(wait=False)
        assoc.is_aborted = True
        assoc.is_established = False
        _evt.trigger(assoc, _evt.EVT_ABORTED, {})
        assoc.kill()
        return True
    if not assoc.dul.is_alive():
        assoc.kill()
        return True
    if assoc.dul.idle_timer_expired():
        log.error("Network timeout reached")
        if assoc.network_timeout_response == "A-RELEASE":
            assoc._is_paused = True
            assoc._reactor_checkpoint.wait()
            assoc.release()
            assoc._is_paused = False
        else:
            assoc.abort()
        assoc.kill()
        return True
    return False
