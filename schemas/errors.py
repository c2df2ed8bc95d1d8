"""natchet's root exception, at the bottom layer so every layer's errors share it."""

from __future__ import annotations


class NatchetError(Exception):
    """Root of every error natchet raises on purpose."""


class ConfigError(NatchetError):
    """A setting is missing or malformed."""
