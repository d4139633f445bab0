"""``python -m analogmem`` is the ``analogmem`` command."""

import sys

from .cli import main

sys.exit(main())
