"""Where a ``serviceName`` step is sent: the InferenceService's address and predict path.

KServe's controller resolves a step's ``serviceName`` to the InferenceService's
``status.address.url`` (``http://<name>.<namespace>.svc.cluster.local``) plus the predict
path of the service's protocol: ``/v1/models/<model>:predict`` for v1,
``/v2/models/<model>/infer`` for v2 (the model name is the service's name unless its server
is started with another). A ``serviceUrl`` step is called as written.

:class:`GatewayResolver` builds the same URLs for any domain, and can send them to one gateway
address with the service's host in the ``Host`` header, which is how the embedded platform's
gateway routes (canaries and scale-from-zero then work inside a graph). When the caller does not
say which protocol a service speaks, the protocol of the graph's request is used.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from modelhost.graph.errors import StepNotDeployed

__all__ = ["PROTOCOLS", "GatewayResolver", "ServiceResolver", "StepTarget", "predict_path"]

PROTOCOLS = ("v1", "v2")


@dataclass(frozen=True)
class StepTarget:
    """The URL to POST to, and the ``Host`` header to send when it is not the URL's."""

    url: str
    host: str | None = None


class ServiceResolver(Protocol):
    """Maps a step's ``serviceName`` to where the router sends it.

    ``protocol`` is ``v1`` or ``v2``, the protocol of the graph's own request. Raises
    :class:`~modelhost.graph.errors.StepNotDeployed` for a service it knows is not there.
    """

    def __call__(self, service_name: str, protocol: str) -> StepTarget: ...


def predict_path(model_name: str, protocol: str) -> str:
    """KServe's predict path of a model for ``v1`` or ``v2``."""
    if protocol == "v2":
        return f"/v2/models/{model_name}/infer"
    return f"/v1/models/{model_name}:predict"


@dataclass(frozen=True)
class GatewayResolver:
    """``<scheme>://<service>.<namespace>.<domain><predict path>``, or the same via a gateway.

    ``gateway`` (``host:port``), when set, is where every step goes, with the service's host
    name in ``Host``. ``protocols`` and ``model_names`` say, per service, what the router
    cannot know from the request; ``services``, when given, is every service deployed now,
    and a step naming another fails with a 503 that names it.
    """

    namespace: str
    domain: str = "svc.cluster.local"
    gateway: str | None = None
    scheme: str = "http"
    protocols: Mapping[str, str] = field(default_factory=dict)
    model_names: Mapping[str, str] = field(default_factory=dict)
    services: Collection[str] | None = None

    def __call__(self, service_name: str, protocol: str) -> StepTarget:
        if self.services is not None and service_name not in self.services:
            raise StepNotDeployed(
                f"InferenceService {service_name} is not deployed in namespace {self.namespace}"
            )
        host = f"{service_name}.{self.namespace}.{self.domain}"
        path = predict_path(
            self.model_names.get(service_name, service_name),
            self.protocols.get(service_name, protocol),
        )
        if self.gateway is None:
            return StepTarget(f"{self.scheme}://{host}{path}")
        return StepTarget(f"{self.scheme}://{self.gateway}{path}", host=host)
