"""Old ``python -m`` paths of tools that moved to another folder.

Each old module is a stub: run, it prints where the tool is now and exits 2; imported, it
raises ImportError with the same sentence. Nothing is forwarded, so a script on an old path
fails loudly instead of running something its author did not mean.
"""

from __future__ import annotations

import sys

from mtl_perception.exit_codes import EXIT_BAD_INPUT


def module_moved(old: str, new: str, main_name: str) -> None:
    """Refuse the old path ``old``: exit 2 when run as a script (``main_name == "__main__"``), else ImportError."""
    message = f"{old} moved to {new}: run 'python -m {new}' (the console scripts and make targets are unchanged)"
    if main_name == "__main__":
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    raise ImportError(message)
