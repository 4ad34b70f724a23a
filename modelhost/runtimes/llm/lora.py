"""LoRA adapters over the engine's one base model, mixed in one batch with ``peft``.

``peft`` injects each adapter's low-rank matrices next to the base model's linear layers, in
place; a forward given ``adapter_names`` (one per batch row, ``__base__`` for none) adds to
each row only its own adapter's product. So requests for different adapters, and for the
base model, share the running batch and its KV cache, and an adapter loaded or unloaded at
run time leaves the base weights, and so the cached keys and values, untouched.

Adapters are known to ``peft`` by internal names (``a0``, ``a1``...): a served name may hold
dots, which ``torch`` module names cannot. Everything here that touches the model must run
where no forward runs at the same time: before the engine starts, or on its worker thread.
"""

from __future__ import annotations

import json
import logging
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from modelhost import errors
from modelhost.runtimes._common import import_framework

__all__ = ["BASE", "Adapters"]

logger = logging.getLogger("modelhost.runtimes.llm")

# peft's name for a row that takes no adapter.
BASE = "__base__"
_CONFIG_FILE = "adapter_config.json"
# peft's noise on transformers 5, and its notice when the active adapter is deleted: the
# engine names every row's adapter, so which one peft calls active does not matter.
_QUIET = ("is_gradient_checkpointing", "was active which is now deleted")


class Adapters:
    """The adapters loaded over one base model, by served name.

    ``names`` may be read from any thread; ``load``, ``unload`` and ``route`` only where no
    forward runs at the same time (see the module's docstring).
    """

    def __init__(self, model: Any, model_dir: Path) -> None:
        self._base = model
        self._model_dir = model_dir
        self._peft: Any = None
        self._internal: dict[str, str] = {}
        self._paths: dict[str, str] = {}
        self._counter = 0
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        with self._lock:
            return list(self._internal)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._internal

    def path(self, name: str) -> str | None:
        with self._lock:
            return self._paths.get(name)

    def check_path(self, path: str | Path) -> Path:
        """The adapter folder, if it holds a LoRA adapter's config; reads one small file."""
        folder = Path(path).expanduser()
        config_file = folder / _CONFIG_FILE
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise errors.ModelLoadError(
                f"{folder} holds no LoRA adapter: {_CONFIG_FILE} is missing."
            ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise errors.ModelLoadError(f"Cannot read {config_file}: {exc}") from None
        kind = config.get("peft_type") if isinstance(config, dict) else None
        if str(kind).upper() != "LORA":
            raise errors.ModelLoadError(
                f"{folder} holds a {kind or 'nameless'} adapter; only LoRA adapters are served."
            )
        return folder

    def load(self, name: str, path: str | Path) -> None:
        """Inject the adapter in ``path`` as ``name``; blocks while reading its weights."""
        folder = self.check_path(path)
        with self._lock:
            if name in self._internal:
                raise errors.InvalidInput(f"The LoRA adapter {name!r} is already loaded.")
        internal = f"a{self._counter}"
        self._counter += 1
        peft = import_framework("peft", "llm")
        try:
            with _peft_warnings():
                if self._peft is None:
                    self._peft = peft.PeftModel.from_pretrained(
                        self._base, str(folder), adapter_name=internal, is_trainable=False
                    )
                else:
                    self._peft.load_adapter(str(folder), adapter_name=internal, is_trainable=False)
                    if self._peft.active_adapter not in self._peft.peft_config:
                        # Left dangling when the last adapter was deleted; peft's forward
                        # reads its config before it looks at the rows' names.
                        self._peft.set_adapter(internal)
                self._peft.eval()
        except Exception as exc:
            self._discard(internal)
            raise errors.ModelLoadError(
                f"Cannot load the LoRA adapter {name!r} from {folder} over the model in "
                f"{self._model_dir}: {type(exc).__name__}: {exc}"
            ) from exc
        with self._lock:
            self._internal[name] = internal
            self._paths[name] = str(folder)

    def unload(self, name: str) -> None:
        with self._lock:
            internal = self._internal.pop(name, None)
            self._paths.pop(name, None)
        if internal is None:
            raise errors.ModelNotFound(name)
        self._discard(internal)

    def _discard(self, internal: str) -> None:
        if self._peft is None or internal not in self._peft.peft_config:
            return
        with _peft_warnings():
            self._peft.delete_adapter(internal)

    def route(self, rows: Sequence[str | None]) -> tuple[Any, dict[str, Any]]:
        """The module to run a batch on, and the extra forward arguments its rows need."""
        with self._lock:
            internal = dict(self._internal)
        if self._peft is None or not internal:
            # No adapter left: the injected layers add nothing, the base model runs alone.
            return self._base, {}
        names = [BASE if row is None else internal[row] for row in rows]
        return self._peft, {"adapter_names": names}


@contextmanager
def _peft_warnings() -> Iterator[None]:
    """Log what peft warns about instead of printing it (or raising it, under -W error)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for warning in caught:
        message = str(warning.message)
        quiet = any(text in message for text in _QUIET) or issubclass(
            warning.category, (DeprecationWarning, FutureWarning)
        )
        logger.log(logging.DEBUG if quiet else logging.WARNING, "peft: %s", message)
