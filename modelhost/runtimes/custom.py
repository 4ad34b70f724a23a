"""The custom runtime: serves a user's own ``Model`` class named as ``pkg.module:Class``."""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from modelhost import errors
from modelhost.model.model import Model

__all__ = ["build_custom_model", "load_model_class"]

_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
# Handed to the class itself, never as an option.
_RESERVED = frozenset({"name", "model_dir", "model_class"})


def load_model_class(spec: str, model_dir: str | Path | None = None) -> type[Any]:
    """The class named by ``spec`` (``"pkg.module:Class"``).

    A module that cannot be imported is looked for once more in ``model_dir``, so that a
    ``model.py`` shipped beside the weights works without setting ``PYTHONPATH``.
    """
    if not _SPEC.match(spec):
        raise errors.ModelLoadError(
            f"Bad model class {spec!r}: expected 'pkg.module:Class', e.g. 'model:MyModel'."
        )
    module_name, _, qualname = spec.partition(":")
    module = _import(module_name, spec, model_dir)
    target: Any = module
    for part in qualname.split("."):
        if not hasattr(target, part):
            found = ", ".join(_model_like_names(module)) or "none"
            raise errors.ModelLoadError(
                f"Module {module_name!r} has no {qualname!r} (model classes in it: {found})."
            )
        target = getattr(target, part)
    if not inspect.isclass(target):
        raise errors.ModelLoadError(f"{spec} is a {type(target).__name__}, not a class.")
    if not _is_model_like(target):
        raise errors.ModelLoadError(
            f"{spec} is not a model: subclass modelhost's Model, or define load() and predict()."
        )
    return target


def build_custom_model(
    name: str,
    model_dir: str | Path | None,
    spec: str,
    options: Mapping[str, Any] | None = None,
) -> Model:
    """An instance of the class ``spec`` names: ``Class(name)``, plus what ``__init__`` takes.

    ``model_dir`` is passed when ``__init__`` has a ``model_dir`` parameter, and so is each
    option whose key names one of its parameters; other options are left out.
    """
    cls = load_model_class(spec, model_dir)
    accepted = _parameter_names(cls)
    kwargs: dict[str, Any] = {}
    if "model_dir" in accepted and model_dir is not None:
        kwargs["model_dir"] = str(model_dir)
    for key, value in (options or {}).items():
        if key in accepted and key not in _RESERVED:
            kwargs[key] = value
    try:
        model = cls(name, **kwargs)
    except Exception as exc:
        raise errors.ModelLoadError(
            f"{spec}({name!r}) failed: {type(exc).__name__}: {exc}"
        ) from exc
    # Duck-typed classes are served as they are: the server only calls the Model methods.
    return cast(Model, model)


def _import(module_name: str, spec: str, model_dir: str | Path | None) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if not _is_missing(module_name, exc) or model_dir is None:
            raise _import_error(spec, exc) from exc
        first = exc
    except Exception as exc:
        raise _import_error(spec, exc) from exc
    folder = Path(model_dir)
    folder = folder.parent if folder.is_file() else folder
    if not folder.is_dir():
        raise _import_error(spec, first) from first
    if str(folder) not in sys.path:
        # Appended, not prepended: the model folder must not shadow installed modules.
        sys.path.append(str(folder))
    importlib.invalidate_caches()
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if _is_missing(module_name, exc):
            raise errors.ModelLoadError(
                f"Cannot import module {module_name!r} for {spec}: not installed, "
                f"and not in {folder}."
            ) from exc
        raise _import_error(spec, exc) from exc
    except Exception as exc:
        raise _import_error(spec, exc) from exc


def _is_missing(module_name: str, exc: ModuleNotFoundError) -> bool:
    """Whether the module itself is missing, rather than something it imports."""
    missing = exc.name or ""
    return bool(missing) and (module_name == missing or module_name.startswith(missing + "."))


def _import_error(spec: str, exc: BaseException) -> errors.ModelLoadError:
    return errors.ModelLoadError(f"Cannot import {spec}: {type(exc).__name__}: {exc}")


def _is_model_like(cls: type[Any]) -> bool:
    if issubclass(cls, Model):
        return True
    return callable(getattr(cls, "predict", None)) and callable(getattr(cls, "load", None))


def _model_like_names(module: Any) -> list[str]:
    return sorted(
        name
        for name, value in vars(module).items()
        if inspect.isclass(value) and value is not Model and _is_model_like(value)
    )


def _parameter_names(cls: type[Any]) -> set[str]:
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return set()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in parameters if p.kind in kinds}
