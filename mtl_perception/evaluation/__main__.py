"""``python -m mtl_perception.evaluation`` is ``mtl-eval``."""

import sys

from .cli import main

sys.exit(main())
