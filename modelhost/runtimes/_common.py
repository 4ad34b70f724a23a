"""What the framework runtimes share: finding their model file and turning errors into ours."""

from __future__ import annotations

import fnmatch
import importlib
import re
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from modelhost import errors

__all__ = [
    "IGNORED_NAMES",
    "import_framework",
    "input_error",
    "listing",
    "matches",
    "model_files",
    "native_message",
    "single_model_file",
    "truthy",
]

# Files that sit next to models without being one; they match a pattern only by accident.
IGNORED_NAMES = frozenset(
    {
        "config.json",
        "model-settings.json",
        "settings.json",
        "requirements.txt",
        "readme.txt",
        "license.txt",
    }
)

# XGBoost prefixes its messages with "[time] /source/file.h:20: " and appends a C++ stack.
_NATIVE_PREFIX = re.compile(r"^\[[0-9:]+\] \S+:\d+: ")


def matches(path: Path, patterns: Sequence[str]) -> bool:
    name = path.name.lower()
    if name in IGNORED_NAMES:
        return False
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def listing(path: Path) -> list[Path]:
    """The visible files of a model directory, sorted; raises if it does not exist."""
    if not path.exists():
        raise errors.ModelLoadError(f"Model path {path} does not exist.")
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))


def model_files(path: Path, patterns: Sequence[str]) -> list[Path]:
    return [p for p in listing(path) if matches(p, patterns)]


def single_model_file(path: Path, patterns: Sequence[str], runtime: str) -> Path:
    """The one model file a runtime loads: ``path`` itself if it is a file."""
    if path.is_file():
        return path
    found = model_files(path, patterns)
    if len(found) == 1:
        return found[0]
    wanted = ", ".join(patterns)
    if not found:
        raise errors.ModelLoadError(f"No {runtime} model file ({wanted}) in {path}.")
    names = ", ".join(p.name for p in found)
    raise errors.ModelLoadError(
        f"Several {runtime} model files in {path}: {names}. "
        "Keep one, or pass the model file itself as the path."
    )


def import_framework(module: str, extra: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise errors.ModelLoadError(
            f"The {extra} runtime needs {module}: pip install 'modelhost[{extra}]' ({exc})"
        ) from exc


def native_message(exc: BaseException) -> str:
    """A framework's error message without the native source location and stack trace."""
    text = str(exc).split("\nStack trace:", 1)[0].strip()
    return _NATIVE_PREFIX.sub("", text) or type(exc).__name__


def input_error(exc: BaseException) -> errors.InvalidInput:
    """The framework's complaint about the input, as a 400 with its message."""
    return errors.InvalidInput(native_message(exc))


def truthy(value: Any) -> bool:
    """A flag from JSON, a gRPC parameter or the command line: ``true``, ``"true"``, ``"1"``."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return value is True
