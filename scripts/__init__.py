"""Developer scripts that regenerate what the repository ships, run from the repository root.

``scripts/cards/`` turns lab data into the calibrated device cards of ``devices/``
(``python -m scripts.cards.NAME``; its README gives each card's commands), and
``scripts/docs_tables.py`` renders the results tables of README.md and docs/*.md from
``docs/results/*.json`` (``python -m scripts.docs_tables --check``). They are a package so that
the tests import them like any module; they are not installed with analogmem.
"""
