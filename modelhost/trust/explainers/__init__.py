"""Explainers: SHAP and LIME for ``:explain`` (``serve --explainer``) and TrustyAI's API.

:class:`ServedModelExplainer` is the server's ``ModelExplainer``; :class:`LocalExplainers`
answers ``POST /explainers/local/shap`` and ``/explainers/local/lime`` over a stored
prediction, calling the model through a :class:`ModelCaller`.
"""

from __future__ import annotations

from modelhost.trust.explainers.caller import ModelCaller, ModelTarget
from modelhost.trust.explainers.local import LocalExplainers
from modelhost.trust.explainers.served import (
    EXPLAINERS,
    ServedModelExplainer,
    explainer_from_settings,
)

__all__ = [
    "EXPLAINERS",
    "LocalExplainers",
    "ModelCaller",
    "ModelTarget",
    "ServedModelExplainer",
    "explainer_from_settings",
]
