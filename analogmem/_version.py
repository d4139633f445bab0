"""The package version, in its own module so that every layer can record it without
importing the package's public face (:mod:`analogmem`)."""

__version__ = "0.1.0"
