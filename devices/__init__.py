"""Bundled device cards (TOML). Installed as ``analogmem.devices``; load them with
:func:`analogmem.load_device` by name (the file stem)."""
