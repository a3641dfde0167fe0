"""Errors a user can act on. The CLI prints their message (no traceback) and exits non-zero."""


class HvdError(Exception):
    """Something the user can fix: the message says what was wrong, where, and what to do."""


class SourceError(HvdError):
    """A nuScenes-format dataset (real or synthetic) is missing, unreadable or inconsistent."""


class CatalogError(HvdError):
    """``data_catalog.yaml`` (or a file given with --catalog) is invalid or names something unknown."""


class StoreError(HvdError):
    """A derived store is missing, incomplete, stale or unreadable."""


class RowError(HvdError):
    """One keyframe cannot be computed (a missing or corrupt file): that row fails, the others go on."""
