"""Value checks shared by the stages, for values the config schema does not cover.

Config values are checked once, by the schema (``workflow/schemas/config.schema.yaml``);
these helpers are for function arguments and for fields read from files.
"""

from __future__ import annotations

import numbers

__all__ = ["is_int"]


def is_int(value: object) -> bool:
    """Whether ``value`` is an integer (Python or NumPy), not a bool.

    Args:
        value: Any value.

    Returns:
        True for ``3`` and ``np.int64(3)``; False for ``True``, ``3.0`` and ``"3"``.
    """
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
