"""The exception the bag tools raise for unusable bags and inputs."""

from __future__ import annotations


class BagError(RuntimeError):
    """A bag (or a make-bag input) that cannot be used; the message names the path and the problem."""
