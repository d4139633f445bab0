"""The clock of an instrument bench (:class:`BenchClock`), shared by the 2450 and 2600B benches.

A bench's time is wall time since it was opened, plus what :meth:`BenchClock.wait` added on
an emulator whose clock the bench drives (``clock == "instrument"``): there a wait moves the
emulator's clock instead of sleeping. On a real instrument (``clock == "host"``) it sleeps.
"""

from __future__ import annotations

import time

from ..emulator.validation import check_seconds

__all__ = ["BenchClock"]


class BenchClock:
    """Mixin: ``time_s`` and ``wait``. A bench calls :meth:`_start_clock` when it opens, sets
    ``clock`` (``"host"`` or ``"instrument"``) and ``_emulator_delta_s`` (emulator time minus
    bench time), and implements :meth:`_set_emulator_clock`."""

    clock: str

    def _start_clock(self) -> None:
        self._t0 = time.monotonic()
        self._offset_s = 0.0
        self._emulator_delta_s = 0.0

    @property
    def time_s(self) -> float:
        """The bench clock (s since the bench was opened; with the emulator's clock,
        ``wait`` moves it forward without wall time)."""
        return time.monotonic() - self._t0 + self._offset_s

    def wait(self, seconds: float) -> None:
        """Let ``seconds`` (≥ 0) pass: sleep on a real instrument, advance the emulator's clock."""
        s = check_seconds("seconds", seconds)
        if s == 0:
            return
        if self.clock == "host":
            time.sleep(s)
            return
        self._set_emulator_clock(self.time_s + s + self._emulator_delta_s)
        self._offset_s += s

    def _set_emulator_clock(self, target_s: float) -> None:
        """Move the emulator's clock to ``target_s`` (s, its own time base)."""
        raise NotImplementedError
