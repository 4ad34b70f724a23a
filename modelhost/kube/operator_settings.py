"""How ``modelhost operator`` runs: its own settings, apart from kopf (which this never imports).

The CLI builds them from flags without the optional ``kube`` extra installed, and says what is
missing only when the operator is started.
"""

from __future__ import annotations

import dataclasses

from modelhost.kube.settings import KubeSettings

__all__ = ["OperatorSettings"]


@dataclasses.dataclass(frozen=True)
class OperatorSettings:
    """How the operator runs; ``kube`` is how plans become manifests (``modelhost render``'s).

    ``namespaces`` empty means every namespace. ``peering`` names the KopfPeering (or, for
    all namespaces, ClusterKopfPeering) the replicas elect through, and makes it mandatory;
    None uses one named ``modelhost`` if its CRD is installed. ``standalone`` turns peering
    off. ``api_server`` talks to that URL without credentials (``kubectl proxy``, an API
    emulator) instead of the pod's service account or the kubeconfig.
    """

    kube: KubeSettings = dataclasses.field(default_factory=KubeSettings)
    namespaces: tuple[str, ...] = ()
    peering: str | None = None
    standalone: bool = False
    priority: int | None = None
    api_server: str | None = None
    # Where kopf answers liveness probes (http://0.0.0.0:8080/healthz); None: no endpoint.
    liveness_endpoint: str | None = None
    # Retries of a failed reconcile wait base * 2**attempt seconds, at most max; a reconcile
    # that a Deployment's or pod's change started gives up after ``kick_attempts``.
    retry_backoff_s: float = 1.0
    retry_backoff_max_s: float = 60.0
    kick_attempts: int = 8
    request_timeout_s: float = 30.0
    # Plan with the built-in ClusterServingRuntimes where the cluster has none of that name.
    builtin_runtimes: bool = True
