"""The error a source that cannot be loaded raises."""

from __future__ import annotations


class IngestionError(ValueError):
    """A source that cannot be loaded; the message names the file, and the column and row where known."""
