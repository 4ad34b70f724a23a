"""What the layers above the server plug into it, without the server importing them.

The trust layer's explainers, detectors and TrustyAI's API sit above ``server/`` in the
layer order; the command that starts a server (``modelhost serve``) builds them and hands
them over in one :class:`ServerExtensions`, passed explicitly to :class:`ModelServer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from modelhost.model.model import Model
from modelhost.server.http.mount import Mount
from modelhost.server.openai.guardrails import Guardrail

__all__ = ["ModelExplainer", "Mount", "ServerExtensions"]


class ModelExplainer(Protocol):
    """Explains a v1 ``:explain`` request to a model that has no ``explain`` of its own.

    Called off the event loop (as ``predict`` is); returns the JSON-able answer.
    """

    def __call__(self, model: Model, payload: Any, headers: dict[str, str] | None) -> Any: ...


@dataclass(frozen=True, slots=True)
class ServerExtensions:
    """Everything plugged into one server; the default plugs in nothing."""

    explainer: ModelExplainer | None = None
    # Run after the built-in guardrails (``--guardrails``) on every prompt and output.
    guardrails: Sequence[Guardrail] = ()
    mounts: Sequence[Mount] = field(default_factory=tuple)
