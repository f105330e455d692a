"""Models shipped inside the package.

`bundled-2d/` holds the 2D 68-point model trained on this project's rendered faces
(recipes/bundled-2d.yaml; docs/bundled-model.md): model-symbol.json, model-0000.params
and model-0000.json (its network config). `Aligner()` and `predict` without a prefix use it.
"""
from __future__ import annotations

import os

from ..errors import DataError

BUNDLED_2D = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bundled-2d", "model")
BUNDLED_EPOCH = 0


def bundled_prefix() -> tuple:
    """(prefix, epoch) of the bundled 2D model; a clear error when the install lacks it."""
    if not os.path.exists("%s-%04d.params" % (BUNDLED_2D, BUNDLED_EPOCH)):
        raise DataError(BUNDLED_2D + "-0000.params",
                        "the bundled model is missing from this install; pass --prefix/--epoch of a checkpoint")
    return BUNDLED_2D, BUNDLED_EPOCH
