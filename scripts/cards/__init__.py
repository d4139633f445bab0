"""Converters from lab formats to tidy tables and the fits that regenerate the shipped cards
(README.md in this folder); each module runs as ``python -m scripts.cards.NAME``."""
