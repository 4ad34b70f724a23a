"""Framework runtimes: a ``Model`` per format, and the detection that picks one for a folder.

The names below come from :mod:`modelhost.runtimes.detect` on first use: importing a module
of this package (``names``, one runtime) does not register every runtime.
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from modelhost.runtimes.detect import RUNTIMES, build_model, detect_runtime

__all__ = ["RUNTIMES", "build_model", "detect_runtime"]


def __getattr__(name: str) -> _typing.Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module("modelhost.runtimes.detect"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
