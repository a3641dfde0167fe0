"""The one module of ours that imports MinkowskiEngine.

MinkowskiEngine 0.5.4 imports ``Sequence`` from ``collections``, which Python 3.10 removed; we alias
it to ``collections.abc.Sequence`` before the import. Everything else imports ``ME`` from here.
"""

from __future__ import annotations

import collections
import collections.abc

if not hasattr(collections, "Sequence"):
    collections.Sequence = collections.abc.Sequence  # type: ignore[attr-defined]

import MinkowskiEngine as ME  # noqa: E402

__all__ = ["ME"]
