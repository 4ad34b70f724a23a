"""The desired state of one InferenceService, as the planner writes it and executors read it.

Everything is frozen and free of I/O. An executor (the embedded platform or Kubernetes) turns
a :class:`ServicePlan` into running replicas, routes and autoscalers; it fills the process
placeholders (ports, the model's local folder, the upstream component's address) itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "PLACEHOLDERS",
    "BatcherPlan",
    "ComponentPlan",
    "LoggerPlan",
    "ProcessSpec",
    "Revision",
    "Route",
    "ScalingMetric",
    "ScalingPolicy",
    "ServicePlan",
    "StorageSpecPlan",
    "TrafficSplit",
]

# Filled by the executor in argv and environment values: the replica's REST and gRPC ports,
# where the model is (a local folder, or the storageUri for ``modelhost serve`` to fetch), and
# host:port of the component this one calls (a transformer's predictor).
PLACEHOLDERS = ("{http_port}", "{grpc_port}", "{model_dir}", "{predictor_host}")


@dataclass(frozen=True)
class StorageSpecPlan:
    """A model found through KServe's storage spec: an entry of the storage Secret, a path.

    The executor hands the fetcher the Secret ``secret``'s key ``key`` (a JSON document: the
    store's ``type``, ``bucket``, endpoint and credentials) with ``parameters`` over it. When
    the spec names no key, ``key`` is KServe's fallback (``default``, or ``default_<type>``)
    and ``key_optional`` says the Secret may lack it (the parameters then say it all). With a
    ``path`` the model is ``<type>://<bucket>/<path>``; without one the entry only brings the
    credentials for the component's ``storage_uri``.
    """

    secret: str
    key: str
    key_optional: bool = False
    path: str | None = None
    parameters: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ProcessSpec:
    """How to start one replica: a process locally, a container on Kubernetes.

    ``command`` is empty when only the image's entrypoint knows what to run (an image that a
    local executor cannot start). ``resources`` holds ``(kind, name, quantity)`` triples, kind
    being ``requests`` or ``limits``. ``storage`` is the storage spec the model is fetched
    with (besides, or instead of, ``storage_uri``).
    """

    command: tuple[str, ...]
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    image: str | None = None
    working_dir: str | None = None
    storage_uri: str | None = None
    resources: tuple[tuple[str, str, str], ...] = ()
    storage: StorageSpecPlan | None = None

    @property
    def argv(self) -> tuple[str, ...]:
        return self.command + self.args

    @property
    def fetches_model(self) -> bool:
        """Whether a model is put in the model folder before the server starts."""
        return bool(self.storage_uri) or self.storage is not None

    @property
    def runnable(self) -> bool:
        """Whether a process can be started without the image (a command is known)."""
        return bool(self.command)

    def render(
        self,
        *,
        http_port: int,
        grpc_port: int,
        model_dir: str | None = None,
        predictor_host: str = "",
    ) -> tuple[list[str], dict[str, str]]:
        """The argv and environment with the placeholders filled.

        ``model_dir`` defaults to the storage URI (``modelhost serve`` fetches it itself).
        """
        values = {
            "{http_port}": str(http_port),
            "{grpc_port}": str(grpc_port),
            "{model_dir}": model_dir if model_dir is not None else (self.storage_uri or ""),
            "{predictor_host}": predictor_host,
        }
        argv = [_fill(arg, values) for arg in self.argv]
        env = {name: _fill(value, values) for name, value in self.env}
        return argv, env


def _fill(text: str, values: Mapping[str, str]) -> str:
    # Only the known tokens: user arguments may hold other braces (JSON, templates).
    for token, value in values.items():
        if token in text:
            text = text.replace(token, value)
    return text


@dataclass(frozen=True)
class LoggerPlan:
    """Payload logging (CloudEvents) of one revision: KServe's ``logger``."""

    url: str
    mode: str  # all | request | response
    metadata_headers: tuple[str, ...] = ()
    # The InferenceService annotations named by metadataAnnotations, with their values.
    metadata_annotations: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class BatcherPlan:
    """Request batching of one revision: KServe's ``batcher`` with its defaults filled."""

    max_batch_size: int
    max_latency_ms: int
    timeout_s: int | None = None


@dataclass(frozen=True)
class Revision:
    """An immutable version of a component; ``name`` is derived from everything else here.

    The same spec always plans the same revision name, so re-applying an unchanged object
    restarts nothing, and any change to what replicas run makes a new revision.
    """

    name: str
    component: str
    process: ProcessSpec
    protocol: str  # v1 | v2 | grpc-v1 | grpc-v2
    container_concurrency: int  # the most requests a replica takes at once; 0: no limit
    timeout_s: int
    logger: LoggerPlan | None = None
    batcher: BatcherPlan | None = None


@dataclass(frozen=True)
class TrafficSplit:
    """A share of a component's traffic, as Knative's TrafficTarget.

    ``latest`` marks the share of the newest revision: Knative serves it from the latest
    *ready* revision until the newest one is ready, so a rollout never routes to a replica
    that cannot answer yet.
    """

    revision: str
    percent: int
    latest: bool = False
    tag: str | None = None


@dataclass(frozen=True)
class ScalingMetric:
    """One metric an ``hpa`` or ``keda`` autoscaler holds at its target (``autoScaling.metrics``).

    ``source`` is ``Resource`` (``name`` is cpu or memory of the pods) or ``External``
    (``name`` is the backend, prometheus, asked ``query`` at ``server_address``; empty: the
    executor's own Prometheus). ``target_type`` is Kubernetes' MetricTarget type: Utilization
    (percent of the pods' requests), AverageValue (per pod) or Value (in all); ``target`` is
    the quantity as the object writes it (``50``, ``1Gi``, ``0.5``).
    """

    source: str
    name: str
    target_type: str
    target: str
    query: str = ""
    server_address: str = ""
    namespace: str = ""
    # KEDA's TriggerAuthentication for the backend, and its authModes.
    authentication: str = ""
    auth_modes: str = ""


@dataclass(frozen=True)
class ScalingPolicy:
    """How many replicas of a component's revisions run, and what drives the autoscaler.

    ``autoscaler`` is ``kpa`` (Knative's: concurrency or rps, panic mode, scale to zero),
    ``hpa`` (cpu or memory), ``keda``, ``external`` (someone else scales) or ``none`` (fixed at
    ``min_replicas``). ``max_replicas`` 0 means no limit. The desired count of a ``kpa`` is
    observed load / (``target`` * ``target_utilization``) over the stable window, or over the
    panic window when that asks for ``panic_threshold`` times the current replicas.

    ``metrics`` are what an ``hpa`` or ``keda`` autoscaler scales on (``metric`` and ``target``
    repeat the first resource metric); ``stable_window_s`` is its scale-down stabilization
    window and ``scale_up_window_s`` its scale-up one (None: the autoscaler's default).
    """

    autoscaler: str
    min_replicas: int
    max_replicas: int
    metric: str  # concurrency | rps | cpu | memory
    target: float
    target_utilization: float = 1.0
    container_concurrency: int = 0
    initial_replicas: int = 1
    stable_window_s: float = 60.0
    panic_window_s: float = 6.0
    panic_threshold: float = 2.0
    scale_to_zero_grace_s: float = 30.0
    metrics: tuple[ScalingMetric, ...] = ()
    scale_up_window_s: float | None = None

    @property
    def scale_to_zero(self) -> bool:
        return self.min_replicas == 0 and self.autoscaler in ("kpa", "keda")


@dataclass(frozen=True)
class ComponentPlan:
    """One component (predictor, transformer or explainer): its newest revision and traffic.

    ``traffic`` may name older revisions (the previous rolled-out one during a canary or a
    rollback); the executor keeps those running from what it recorded when it planned them.
    ``calls`` is the component this one sends requests to (a transformer's predictor).
    """

    component: str
    service_name: str
    host: str
    url: str
    model_name: str
    revision: Revision
    traffic: tuple[TrafficSplit, ...]
    scaling: ScalingPolicy
    calls: str | None = None

    @property
    def revision_names(self) -> tuple[str, ...]:
        """Every revision that must run: the newest, and those the traffic names."""
        names = [self.revision.name]
        names.extend(s.revision for s in self.traffic if s.revision not in names)
        return tuple(names)


@dataclass(frozen=True)
class Route:
    """A gateway rule to a component; the first rule that matches a request wins.

    ``host`` is compared with the Host header without its port (None: any host), ``path`` is a
    regular expression the whole path must match (None: any path), and ``model`` the ``model``
    field of an OpenAI request's body (None: any).
    """

    component: str
    host: str | None = None
    path: str | None = None
    model: str | None = None


@dataclass(frozen=True)
class ServicePlan:
    """Everything an executor needs to run one InferenceService."""

    name: str
    namespace: str
    generation: int
    deployment_mode: str
    host: str
    url: str
    address_url: str
    entry: str  # the component that receives the service's traffic
    components: tuple[ComponentPlan, ...]
    routes: tuple[Route, ...]
    protocol: str
    model_format: str | None = None
    runtime: str | None = None
    runtime_kind: str | None = None  # ServingRuntime | ClusterServingRuntime
    stopped: bool = False
    warnings: tuple[str, ...] = ()

    def component(self, name: str) -> ComponentPlan | None:
        return next((c for c in self.components if c.component == name), None)
