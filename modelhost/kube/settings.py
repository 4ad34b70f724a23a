"""What the Kubernetes executor needs beyond the plan: gateway, images, Prometheus, planner config.

The plan says what runs; these settings say where it plugs into one cluster (the Gateway the
routes attach to, the Prometheus that KEDA asks, registry mirrors for images). They are built
once by the CLI or the operator from its flags and passed explicitly; nothing reads the
environment.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from modelhost._version import __version__
from modelhost.control.config import PlatformConfig

__all__ = ["DEFAULT_INITIALIZER_IMAGE", "DEFAULT_STORAGE_SPEC_SECRET", "KubeSettings"]

# The storage initializer runs ``modelhost fetch``: the slim image has every storage client.
DEFAULT_INITIALIZER_IMAGE = f"modelhost/modelhost-tabular:{__version__}"
# KServe's storageSpecSecretName: the namespace's Secret a model's ``storage:`` spec names.
DEFAULT_STORAGE_SPEC_SECRET = "storage-config"


@dataclasses.dataclass(frozen=True)
class KubeSettings:
    """How plans become manifests in one cluster.

    ``planner`` is the :class:`PlatformConfig` the plans are made with. Its deployment mode
    stays KServe's default, Knative ("Serverless"): this executor carries out Knative's
    semantics without Knative (each revision a Deployment, the canary split as HTTPRoute
    weights, scale to zero with KEDA), so KServe YAML written for the default mode keeps its
    canaries; ``Standard``/``RawDeployment`` objects render as one revision, as KServe's raw
    mode runs them. A cluster always has Secrets, so a planner config that names no storage
    Secret (``storage_spec_secret``) gets KServe's, ``storage-config``.
    """

    # The Gateway API Gateway every HTTPRoute attaches to (KServe's default one).
    gateway_namespace: str = "kserve"
    gateway_name: str = "kserve-ingress-gateway"
    # An image as the runtime names it → the image to run (a mirror, a pinned digest).
    image_overrides: Mapping[str, str] = dataclasses.field(default_factory=dict)
    initializer_image: str = DEFAULT_INITIALIZER_IMAGE
    # The Prometheus that KEDA's prometheus trigger queries for modelhost's request metrics.
    prometheus_address: str = "http://prometheus-operated.monitoring.svc:9090"
    # The image pull policy of every container; None leaves Kubernetes' default.
    image_pull_policy: str | None = None
    # Every pod runs as this user and group (the modelhost images' own); None: the image's.
    run_as_user: int | None = 1000
    # KServe's agent sidecar: the payload logger (and the batcher of a server without one).
    agent_image: str = "kserve/agent:v0.15.2"
    # The HPA's maxReplicas where the plan sets no limit (Knative's maxReplicas 0).
    replica_ceiling: int = 100
    # How long a replica may take to load its model before liveness checks begin.
    startup_timeout_s: int = 600
    planner: PlatformConfig = dataclasses.field(default_factory=PlatformConfig)

    def __post_init__(self) -> None:
        if self.planner.storage_spec_secret is None:
            planner = dataclasses.replace(
                self.planner, storage_spec_secret=DEFAULT_STORAGE_SPEC_SECRET
            )
            # A frozen dataclass completes itself once, while it is being made.
            object.__setattr__(self, "planner", planner)

    def image(self, image: str) -> str:
        """The image to run for ``image`` as the plan names it."""
        return self.image_overrides.get(image, image)
