"""Kubernetes, the second executor of the planner's plan: manifests, and an operator.

``control/`` decides what an InferenceService runs; this package says it in Kubernetes'
words (Deployments, Services, an HTTPRoute, autoscalers) so that a cluster without KServe
runs KServe's YAML, and writes KServe's status back. It never imports ``local/``.
"""

from __future__ import annotations

from modelhost.kube.render import manifests_json, manifests_yaml, render_plan
from modelhost.kube.settings import KubeSettings

__all__ = ["KubeSettings", "manifests_json", "manifests_yaml", "render_plan"]
