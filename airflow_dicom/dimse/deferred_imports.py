"""Start-up: the optional modules pydicom imports eagerly are run when first used, not when pydicom loads.

Importing pydicom 3 imports, through its pixel-data handlers and its test-file downloader, modules that
sending, receiving and querying never use: :mod:`numpy`, ``requests`` and :mod:`urllib.request` (with
``http.client``, ``ssl``, ``email``), ``tqdm`` and ``PIL.ImageCms``. On a 2-core host that is 70-170 ms of
every network command (``storescu``'s whole run of 200 x 512 KB takes ~0.3 s). pydicom's own modules stay
eager; what this module defers are only those leaves.

:func:`install` (called by :mod:`airflow_dicom.dimse`, before anything of ours imports pydicom) puts a finder
in front of :data:`sys.meta_path`. It does nothing until pydicom's package is first imported; while pydicom's
``__init__`` runs, in that thread, each module of :data:`DEFERRED` that is imported for the first time gets a
*deferred* module object: found and bound as usual (so ``try: import numpy`` still tells whether numpy is
installed, and ``import numpy`` anywhere later returns the same object), but its code runs on the first use of
one of its attributes. After pydicom is imported the finder takes itself out of :data:`sys.meta_path`.

This is the mechanism of :class:`importlib.util.LazyLoader` (the "implementing lazy imports" recipe of the
:mod:`importlib` documentation), written out here because the standard one does not fit on Python 3.11:

* a second ``import numpy`` statement would run the module at once (the import system reads
  ``module.__spec__``, which counts as a use for :class:`~importlib.util.LazyLoader`): here ``__spec__``
  and the other attributes the import system set (``__name__``, ``__file__``...) are read without running
  the module (``__path__`` and ``__dict__`` do run it);
* threads that race to use a deferred module (the receiver and the sender run associations in threads) wait
  until one of them has run it completely, instead of seeing it half run.

What a user may notice: a module whose *code* fails (not one that is missing) raises that error on its first
use rather than when pydicom is imported; ``repr()``, ``dir()`` and ``vars()`` of a deferred module run it.
pydicom features are unaffected: decoding pixel data, ``pydicom.data`` and ``pydicom.config`` work as before,
and a codec plugin that pydicom checks when it loads (pylibjpeg, Pillow) imports numpy for real.
:func:`load_deferred` runs whatever is still deferred (the Celery worker preload does, before it forks).
"""

from __future__ import annotations

import importlib.machinery
import sys
import threading
import types
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

#: modules that pydicom imports eagerly and that networking does not use (names as imported: leaves only, a
#: package whose submodules are imported at once cannot be deferred)
DEFERRED: tuple[str, ...] = ("numpy", "requests", "urllib.request", "tqdm", "PIL.ImageCms")

#: the import during which :data:`DEFERRED` is deferred
TRIGGER = "pydicom"

# module name -> the lock its first use runs under; the ident of the thread running it while it runs
_LOCKS: dict[str, threading.Lock] = {}
_RUNNING: dict[str, int] = {}
_GUARD = threading.Lock()
#: what the import system set on the module before its code ran (read by ``import`` statements, and by
#: ``inspect.getmodule``, which walks every module in ``sys.modules``): reading them runs nothing
_IMPORT_METADATA = frozenset({"__spec__", "__name__", "__file__", "__cached__", "__package__", "__loader__"})


class _DeferredModule(types.ModuleType):
    """A module whose code has not run yet: the first use of an attribute it defines runs it."""

    def __getattribute__(self, name: str) -> Any:
        if name in _IMPORT_METADATA:
            return types.ModuleType.__getattribute__(self, name)
        spec = types.ModuleType.__getattribute__(self, "__spec__")
        if _RUNNING.get(spec.name) == threading.get_ident():  # its own code, while it runs
            return types.ModuleType.__getattribute__(self, name)
        _run(self, spec)
        return getattr(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        spec = types.ModuleType.__getattribute__(self, "__spec__")
        if _RUNNING.get(spec.name) != threading.get_ident():
            _run(self, spec)
        types.ModuleType.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        spec = types.ModuleType.__getattribute__(self, "__spec__")
        if _RUNNING.get(spec.name) != threading.get_ident():
            _run(self, spec)
        types.ModuleType.__delattr__(self, name)


def _run(module: types.ModuleType, spec: importlib.machinery.ModuleSpec) -> None:
    """Run a deferred module's code once; other threads wait until it has run (or failed)."""
    with _GUARD:
        lock = _LOCKS.setdefault(spec.name, threading.Lock())
    with lock:
        if type(module) is not _DeferredModule:  # another thread ran it while this one waited
            return
        _RUNNING[spec.name] = threading.get_ident()
        try:
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        except BaseException:
            if sys.modules.get(spec.name) is module:  # as a failed import does: not importable as is
                del sys.modules[spec.name]
            raise
        finally:
            del _RUNNING[spec.name]
            types.ModuleType.__setattr__(module, "__class__", types.ModuleType)


class _DeferringLoader:  # a loader by duck typing, as importlib.abc costs ~6 ms of imports (tempfile)
    """Wraps a module's loader: creating the module is the real loader's, running its code waits for a use.

    :param loader: the loader the import system found for the module.
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self._hand_over(module)
        module.__class__ = _DeferredModule

    def _hand_over(self, module: types.ModuleType) -> None:
        """The real loader from here on, as LazyLoader does (``importlib.reload``, tracebacks, resources)."""
        module.__spec__.loader = self.loader  # type: ignore[union-attr]
        module.__loader__ = self.loader


class _TriggerLoader(_DeferringLoader):
    """Wraps pydicom's loader: its package code runs now, with :data:`DEFERRED` deferred in this thread.

    :param loader: the loader the import system found for pydicom.
    :param finder: the finder to take out of :data:`sys.meta_path` afterwards.
    """

    def __init__(self, loader: Any, finder: _Finder) -> None:
        super().__init__(loader)
        self.finder = finder

    def exec_module(self, module: types.ModuleType) -> None:
        self._hand_over(module)
        try:
            with self.finder.deferring(DEFERRED):
                self.loader.exec_module(module)
        finally:
            self.finder.uninstall()


class _Finder:
    """The :data:`sys.meta_path` entry: defers the names :meth:`deferring` names, in that thread only."""

    def __init__(self) -> None:
        self._local = threading.local()
        self.watch_trigger = False  # set by install()

    def _names(self) -> frozenset[str]:
        return getattr(self._local, "names", frozenset())

    @contextmanager
    def deferring(self, names: Iterable[str]) -> Iterator[None]:
        """Within the block, in this thread, modules of ``names`` imported for the first time are deferred.

        :param names: full module names (``"numpy"``, ``"urllib.request"``).
        """
        before = self._names()
        self._local.names = before | frozenset(names)
        try:
            yield
        finally:
            self._local.names = before

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        """The spec the other finders give, with a deferring loader when ``fullname`` is to be deferred."""
        if fullname == TRIGGER and self.watch_trigger:
            self.watch_trigger = False
            spec = self._others(fullname, path, target)
            if spec is not None and _can_wrap(spec):
                spec.loader = _TriggerLoader(spec.loader, self)  # type: ignore[arg-type]
            else:
                self.uninstall()
            return spec
        if fullname not in self._names():
            return None
        spec = self._others(fullname, path, target)
        if spec is not None and _can_wrap(spec):
            spec.loader = _DeferringLoader(spec.loader)  # type: ignore[arg-type]
        return spec

    def _others(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None
    ) -> importlib.machinery.ModuleSpec | None:
        """What the finders after this one find (None: not installed, and the import fails as usual)."""
        for finder in list(sys.meta_path):
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                return spec
        return None

    def uninstall(self) -> None:
        """Leave :data:`sys.meta_path` (deferred modules stay deferred until used)."""
        self.watch_trigger = False
        if not self._names() and self in sys.meta_path:
            sys.meta_path.remove(self)


def _can_wrap(spec: importlib.machinery.ModuleSpec) -> bool:
    """Only plain Python source or bytecode modules: an extension module loads when it is created."""
    return isinstance(
        spec.loader, (importlib.machinery.SourceFileLoader, importlib.machinery.SourcelessFileLoader)
    )


_FINDER = _Finder()


def install() -> bool:
    """Defer :data:`DEFERRED` while pydicom is imported, if pydicom is not imported yet.

    Returns True if the finder was put in place (False: pydicom is already imported, or it already is).
    """
    if TRIGGER in sys.modules or _FINDER in sys.meta_path:
        return False
    _FINDER.watch_trigger = True
    sys.meta_path.insert(0, _FINDER)
    return True


@contextmanager
def deferring(names: Iterable[str]) -> Iterator[None]:
    """Within the block, in this thread, modules of ``names`` imported for the first time are deferred.

    :param names: full module names; a module already imported stays as it is.
    """
    added = _FINDER not in sys.meta_path
    if added:
        sys.meta_path.insert(0, _FINDER)
    try:
        with _FINDER.deferring(names):
            yield
    finally:
        if added and not _FINDER.watch_trigger:
            _FINDER.uninstall()


def is_deferred(module: types.ModuleType) -> bool:
    """Whether ``module``'s code has yet to run (without running it).

    :param module: a module object, e.g. ``sys.modules["numpy"]``.
    """
    return type(module) is _DeferredModule


def deferred_modules() -> list[str]:
    """The names in :data:`sys.modules` of the modules still deferred."""
    return sorted(name for name, module in list(sys.modules.items()) if type(module) is _DeferredModule)


def load_deferred() -> list[str]:
    """Run every module still deferred (e.g. before a worker forks its task processes).

    Returns the names run. A module whose code fails is skipped (its first use raises the error).
    """
    ran = []
    for name in deferred_modules():
        module = sys.modules.get(name)
        if module is None or type(module) is not _DeferredModule:
            continue
        try:
            _run(module, types.ModuleType.__getattribute__(module, "__spec__"))
        except Exception:  # the module's own failure: its first use reports it
            continue
        ran.append(name)
    return ran
