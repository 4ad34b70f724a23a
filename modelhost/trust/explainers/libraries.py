"""The explainer libraries, imported on first use (``shap``, ``lime``: the extra ``explain``).

They take seconds to import and may be absent: nothing imports them before it needs them.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from modelhost import errors

__all__ = ["import_explainer_library"]


def import_explainer_library(name: str) -> Any:
    """``shap`` or ``lime``, imported on first use (they are the optional extra ``explain``)."""
    try:
        with warnings.catch_warnings():
            # Their dependencies (matplotlib) warn of their own deprecations on import.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            return importlib.import_module("shap" if name == "shap" else "lime.lime_tabular")
    except ImportError:
        raise errors.Unsupported(
            f"The {name} explainer needs the {name} package: pip install 'modelhost[explain]'."
        ) from None
