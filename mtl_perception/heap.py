"""Giving memory back after large frames (glibc's ``malloc_trim``), for long-running nodes.

After a burst of large frames (4K, 8K) the buffers they needed (decoded image, float input,
full-resolution logits, message bytes) are freed, but glibc keeps the freed pages in its
arenas (the inference worker thread has its own), so the process' RSS stays high. The
:class:`LargeFrameTrimmer` calls ``malloc_trim(0)`` (every arena, pages in the middle of a
heap too) once, on the first frame that is much smaller than the largest since the last trim:
a camera that always sends large frames never pays for it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

TRIM_MIN_PIXELS = 1_000_000  # frames below this never trigger a trim
TRIM_RATIO = 2.0  # trim when a frame has at most 1 / TRIM_RATIO of the largest frame's pixels since the last trim


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        function = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None
    if function is not None:
        function.argtypes, function.restype = [ctypes.c_size_t], ctypes.c_int
    return function


def trim_heap() -> bool:
    """Return the allocator's free pages to the OS; True if glibc released any."""
    function = _malloc_trim()
    return bool(function(0)) if function is not None else False


class LargeFrameTrimmer:
    """Decides when a stream of frames has come back down from large ones (see the module doc)."""

    def __init__(self, min_pixels: int = TRIM_MIN_PIXELS, ratio: float = TRIM_RATIO):
        self.min_pixels, self.ratio = min_pixels, ratio
        self.largest = 0

    def frame_done(self, pixels: int) -> bool:
        """Record a served frame of ``pixels``; trims the heap (and returns True) when it is the first
        small one after a large one."""
        if pixels > self.largest:
            self.largest = pixels
            return False
        if self.largest >= self.min_pixels and pixels * self.ratio <= self.largest:
            self.largest = pixels
            trim_heap()
            return True
        return False
