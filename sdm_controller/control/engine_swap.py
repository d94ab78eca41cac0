"""Engine changes of the policy node, without ROS: quick checks, one background load, the hand-over.

A change of ``artifact``, ``backend``, ``device`` or (teacher artifacts) ``sampler`` /
``sampler_steps`` needs a new engine. :class:`EngineSwap` checks what can be checked in about a
millisecond (:func:`check_new_engine`) while the parameter change is still being answered, so a
change that cannot work is refused and changes nothing. Then it builds and warms up the new
engine on a thread of its own, at a lower OS priority, beside the running one, and hands it to
the controller (:meth:`PolicyController.request_policy`), which swaps it in at the start of its
next cycle: the running engine publishes until then. Only one load runs at a time; a second
engine change is refused until it is done. A load that fails after its change was accepted (a
failure the quick checks cannot foresee, e.g. out of GPU memory) leaves the running engine in
place and sets the changed parameters back to the values it runs with.

Every other parameter applies from the controller's next cycle, once it fits the artifact that
runs (and the one being swapped in).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from sdm_controller.control.controller import PolicyController
from sdm_controller.control.policy_interface import PolicyInterface
from sdm_controller.control.runner import PolicyRunner, check_backend, load_runner
from sdm_controller.control.settings import ENGINE_PARAMETERS, SPECS, NodeSettings, SettingsError, check_settings
from sdm_controller.errors import SdmError
from sdm_controller.runtime.artifact import check_weights_header, read_spec


def check_new_engine(settings: NodeSettings) -> PolicyInterface:
    """Everything about a new engine that can be checked quickly (raises ``SdmError``)."""
    if not settings.artifact:
        raise SettingsError("parameter 'artifact' is empty; give a policy artifact folder")
    spec = read_spec(settings.artifact)
    interface = PolicyInterface.from_spec(spec)
    check_settings(settings, interface)
    check_weights_header(spec)
    check_backend(settings, spec)
    return interface


class EngineSwap:
    """The node's settings in effect, and which engine runs and which one loads.

    ``load(settings)`` builds and warms up an engine (in the loader thread); ``on_ready()`` is
    called there once the controller holds it; ``revert(values)`` sets parameters back after a
    failed load (the node sets its ROS parameters, whose callback passes them to :meth:`accept`;
    by default they go to :meth:`accept` directly). ``log`` is a logger (``info``/``error``): the
    node's, or the standard library's.
    """

    def __init__(
        self,
        controller: PolicyController,
        settings: NodeSettings,
        load: Callable[[NodeSettings], PolicyRunner] = load_runner,
        on_ready: Callable[[], None] | None = None,
        revert: Callable[[dict[str, Any]], None] | None = None,
        log: Any = None,
    ) -> None:
        self.controller = controller
        self.settings = settings  # the accepted values, for the inference thread
        self._load = load
        self._on_ready = on_ready or (lambda: None)
        self._revert = revert or self.accept
        self._log = log or logging.getLogger(__name__)
        self._lock = threading.Lock()  # parameter changes against the loader's bookkeeping
        self._loader: threading.Thread | None = None
        self._closing = threading.Event()
        self._engine_key: tuple | None = None  # engine running or being loaded
        self._running_key: tuple | None = None  # engine running (what a failed load reverts to)

    def start(self) -> None:
        """Load the engine the settings name; without one, say why (log and diagnostics)."""
        settings = self.settings
        if not settings.artifact:
            self._fail("no artifact set: set the 'artifact' parameter to a policy artifact folder")
            return
        try:
            interface = check_new_engine(settings)
        except SdmError as exc:
            self._fail(f"cannot run artifact '{settings.artifact}': {exc}")
            return
        self._start_load(settings, interface, previous=None)

    def accept(self, changes: Mapping[str, Any]) -> None:
        """Validate ``changes``; apply them (next cycle) or start an engine load. Raises ``SdmError``
        (and changes nothing) when they cannot work."""
        with self._lock:
            proposal = self.settings.updated(changes)
            current = self.controller.pending_interface or self.controller.interface
            kind = current.kind if current else None
            new_engine = bool(set(changes) & set(ENGINE_PARAMETERS)) and proposal.engine_key(kind) != self._engine_key
            interface = None
            if new_engine:
                if self._loader is not None:
                    raise SettingsError(
                        f"an engine for '{self.controller.loading}' is still loading; change the engine parameters "
                        "again when it is ready"
                    )
                interface = check_new_engine(proposal)
                new_engine = proposal.engine_key(interface.kind) != self._engine_key  # one-step ignores the sampler
            elif self._engine_key is None and proposal.artifact:
                # Nothing runs or loads (the start failed): any change may be what makes the artifact usable.
                try:
                    interface = check_new_engine(proposal)
                    new_engine = True
                except SdmError as exc:
                    self.controller.error = f"cannot run artifact '{proposal.artifact}': {exc}"
            else:
                for running in (self.controller.interface, self.controller.pending_interface):
                    if running is not None:
                        check_settings(proposal, running)
            previous, self.settings = self.settings, proposal
            self.controller.request_settings(proposal)
            if new_engine:
                self._start_load(proposal, interface, previous)

    def close(self, timeout_s: float = 10.0) -> None:
        """Let a load still running end without handing its engine over (the loader closes it)."""
        self._closing.set()
        loader = self._loader
        if loader is not None:
            loader.join(timeout=timeout_s)

    def _start_load(self, settings: NodeSettings, interface: PolicyInterface, previous: NodeSettings | None) -> None:
        self._engine_key = settings.engine_key(interface.kind)
        self.controller.loading = settings.artifact
        self._loader = threading.Thread(
            target=self._run_load, args=(settings, interface, previous), name="engine-loader", daemon=True
        )
        self._loader.start()

    def _run_load(self, settings: NodeSettings, interface: PolicyInterface, previous: NodeSettings | None) -> None:
        """Loader thread: build and warm up the engine, then hand it to the controller."""
        lower_thread_priority()
        try:
            runner = self._load(settings)
        except Exception as exc:  # noqa: BLE001 - any failure must leave the running engine in place
            self._load_failed(settings, previous, exc)
            return
        if self._closing.is_set():
            runner.close()
            return
        self.controller.request_policy(runner, interface)
        with self._lock:
            self._running_key = settings.engine_key(interface.kind)
            self._loader = None
        self.controller.loading = ""
        self._on_ready()
        self._log.info(f"engine ready: {runner!r}; it takes over at the next cycle")

    def _load_failed(self, settings: NodeSettings, previous: NodeSettings | None, exc: Exception) -> None:
        message = f"loading '{settings.artifact}' failed: {exc}"
        with self._lock:
            self._loader = None
            self._engine_key = self._running_key
        self.controller.loading = ""
        if previous is None or self._running_key is None:
            self._fail(message)
            return
        self.controller.error = message
        revert = [name for name in settings.changed(previous) if name in SPECS]
        self._log.error(f"{message}; the running engine stays and {revert} are set back")
        self._revert({name: getattr(previous, name) for name in revert})

    def _fail(self, message: str) -> None:
        self.controller.error = message
        self._log.error(f"{message}; the node publishes nothing until a valid artifact is set")


def lower_thread_priority(niceness: int = 10) -> None:
    """Make the calling thread yield the CPU to the inference and sensor threads (Linux).

    On Linux every thread is its own scheduling entity and ``setpriority`` on a thread id changes
    only that thread, so a load beside the running engine takes CPU time it would leave idle,
    not time the next inference cycle needs. Elsewhere this does nothing.
    """
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
