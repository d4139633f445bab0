"""Instrument errors: one specific subclass of :class:`~analogmem.errors.InstrumentError`
per kind of trouble, so a caller can react to each (retry, reconnect, stop the sweep).

=============================  ==============================================================
error                          raised when
=============================  ==============================================================
:class:`InstrumentTimeoutError`    no complete reply within the VISA timeout (a slow or hung
                                   instrument, or a reply the instrument never sent — a client
                                   cannot tell a dropped reply from a late one)
:class:`InstrumentReplyError`      a reply arrived but is not what the command answers
                                   (undecodable bytes, wrong field count, unparsable or
                                   physically impossible numbers, a route other than requested)
:class:`InstrumentReportedError`   the instrument's own error queue (``:SYST:ERR?``) holds
                                   entries; ``.errors`` lists ``(code, message)`` pairs
:class:`InstrumentConnectionError` the resource cannot be opened, or the link was lost
:class:`InstrumentReadTimeError`  a read was asked for at a time that has already passed (a
                                   real bench cannot read in the past); an
                                   :class:`analogmem.errors.ReadTimeError`, re-exported here
=============================  ==============================================================

``SafetyLimitError`` (from :mod:`analogmem.errors`) is raised *before* anything is sent.
"""

from __future__ import annotations

from ..errors import InstrumentError, ReadTimeError

__all__ = [
    "InstrumentError",
    "InstrumentTimeoutError",
    "InstrumentReplyError",
    "InstrumentReportedError",
    "InstrumentConnectionError",
    "InstrumentReadTimeError",
    "ReadTimeError",
]


class InstrumentTimeoutError(InstrumentError, TimeoutError):
    """No complete reply arrived within the configured timeout (after the configured
    retries, where a retry is safe)."""


class InstrumentReplyError(InstrumentError):
    """A reply arrived but is garbage for the command that was sent (undecodable,
    malformed, unparsable, or physically impossible); never turned into a value."""


class InstrumentReportedError(InstrumentError):
    """The instrument reported errors in its error queue.

    Attributes:
        errors: the ``(code, message)`` pairs read from ``:SYST:ERR?`` (the queue is
            drained before raising).
        command: the message after which they were found.
    """

    def __init__(self, message: str, errors: list[tuple[int, str]] | None = None, command: str = ""):
        super().__init__(message)
        self.errors = list(errors or [])
        self.command = command


class InstrumentConnectionError(InstrumentError, ConnectionError):
    """The VISA resource could not be opened or the connection was lost."""


class InstrumentReadTimeError(InstrumentError, ReadTimeError):
    """``read(t_s=...)`` asked for a moment that has already passed on a real bench: the one
    :class:`analogmem.errors.ReadTimeError` (as the emulator raises for the same request),
    also catchable with the instrument's errors as an :class:`InstrumentError`."""
