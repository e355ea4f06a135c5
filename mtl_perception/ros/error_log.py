"""Error logging that stays readable under a flood of bad messages."""

from __future__ import annotations

import re
import time
from collections import OrderedDict

_MAX_KINDS = 64
_NUMBER = re.compile(r"0x[0-9a-fA-F]+|\d+(\.\d+)?")


def error_kind(text: str) -> str:
    """The throttling key of an error line: its text with every number (sizes, byte counts,
    addresses) replaced by ``#``, so errors that differ only in numbers share a kind."""
    return _NUMBER.sub("#", text)


class ThrottledErrorLog:
    """Log at most one line per error kind (see :func:`error_kind`) every ``period`` seconds.

    The logged line keeps the full detail; it also says how many errors of its kind were held
    back since the previous line of that kind. At most 64 kinds are remembered (the least
    recently logged is forgotten first), so a flood of varied errors cannot grow memory.

    Args:
        logger: an rclpy logger (anything with ``error(str)``).
        period: seconds between two lines of one kind.
    """

    def __init__(self, logger, period: float = 5.0) -> None:
        self._logger = logger
        self._period = period
        self._kinds: OrderedDict[str, list] = OrderedDict()  # kind -> [last logged time, held back]

    def error(self, text: str) -> bool:
        """Log ``text`` unless an error of its kind was logged less than ``period`` ago; True if logged."""
        kind = error_kind(text)
        now = time.monotonic()
        entry = self._kinds.get(kind)
        if entry is not None and now - entry[0] < self._period:
            entry[1] += 1
            return False
        held_back = entry[1] if entry is not None else 0
        self._kinds[kind] = [now, 0]
        self._kinds.move_to_end(kind)
        while len(self._kinds) > _MAX_KINDS:
            self._kinds.popitem(last=False)
        suffix = f" ({held_back} more like it since the last report)" if held_back else ""
        self._logger.error(f"{text}{suffix}")
        return True

    def __len__(self) -> int:
        return len(self._kinds)
