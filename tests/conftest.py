"""Shared fixtures for the analogmem test suite."""

from __future__ import annotations

import pytest


@pytest.fixture
def card_text():
    """Return the text of a bundled card, for making malformed variants."""
    from importlib import resources

    def _text(name: str = "pcm-nandakumar2019") -> str:
        return (resources.files("analogmem.devices") / f"{name}.toml").read_text()

    return _text
