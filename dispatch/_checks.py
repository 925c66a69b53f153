"""Input checks shared by the dispatch modules: errors name the argument, the index and the value."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def first_violation(name: str, bad: NDArray[np.bool_], values: NDArray, rule: str) -> None:
    """Raise ValueError for the first element (flat index) where ``bad`` holds, naming ``name`` and ``rule``."""
    if bad.any():
        index = int(np.flatnonzero(np.ravel(bad))[0])
        raise ValueError(f"{name}[{index}] = {float(np.ravel(values)[index])!r} violates {rule}")
