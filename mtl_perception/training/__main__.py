"""``python -m mtl_perception.training`` is ``mtl-train``."""

import sys

from .cli import main

sys.exit(main())
