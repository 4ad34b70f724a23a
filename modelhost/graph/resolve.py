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
from typing import TYPE_CHECKING, Protocol

from modelhost.graph.errors import StepNotDeployed

if TYPE_CHECKING:
    from modelhost.graph.config import ServiceEntry

__all__ = [
    "PROTOCOLS",
    "GatewayResolver",
    "ServiceResolver",
    "ServiceTableResolver",
    "StepTarget",
    "predict_path",
]

PROTOCOLS = ("v1", "v2")


@dataclass(frozen=True)
class StepTarget:
    """The URL to POST to, and the ``Host`` header to send when it is not the URL's."""

    url: str
    host: str | None = None


class ServiceResolver(Protocol):
    """Maps a step's ``serviceName`` to where the router sends it.

    ``protocol`` is ``v1`` or ``v2``, the protocol of the graph's own request, or None when the
    request named none (it came at ``/``). Raises
    :class:`~modelhost.graph.errors.StepNotDeployed` for a service it knows is not there.
    """

    def __call__(self, service_name: str, protocol: str | None) -> StepTarget: ...


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
    cannot know from the request (a service not in ``protocols`` gets the request's protocol,
    v1 for a request at ``/``); ``services``, when given, is every service deployed now, and a
    step naming another fails with a 503 that names it.
    """

    namespace: str
    domain: str = "svc.cluster.local"
    gateway: str | None = None
    scheme: str = "http"
    protocols: Mapping[str, str] = field(default_factory=dict)
    model_names: Mapping[str, str] = field(default_factory=dict)
    services: Collection[str] | None = None

    def __call__(self, service_name: str, protocol: str | None) -> StepTarget:
        if self.services is not None and service_name not in self.services:
            raise StepNotDeployed(
                f"InferenceService {service_name} is not deployed in namespace {self.namespace}"
            )
        host = f"{service_name}.{self.namespace}.{self.domain}"
        path = predict_path(
            self.model_names.get(service_name, service_name),
            self.protocols.get(service_name) or protocol or "v1",
        )
        if self.gateway is None:
            return StepTarget(f"{self.scheme}://{host}{path}")
        return StepTarget(f"{self.scheme}://{self.gateway}{path}", host=host)


@dataclass(frozen=True)
class ServiceTableResolver:
    """Steps go to the services of the router's config; a service not in it is not deployed.

    The predict path is the request's protocol when the request named one (``/v1/...``,
    ``/v2/...``) and the service answers it, else the service's own ``protocol`` (KServe's
    controller writes the path of the InferenceService's protocol, whatever the request's).
    ``gateway`` (``host:port``), when set, is where every step goes, with the service's
    ingress ``host`` in ``Host``; without it a step goes to the service's in-cluster
    ``address``.
    """

    services: Mapping[str, ServiceEntry]
    gateway: str | None = None
    namespace: str | None = None
    scheme: str = "http"
    # Targets resolved so far: the table is fixed, so each (service, protocol) is found once.
    _found: dict[tuple[str, str | None], StepTarget] = field(
        default_factory=dict, compare=False, repr=False
    )

    def __call__(self, service_name: str, protocol: str | None) -> StepTarget:
        key = (service_name, protocol)
        found = self._found.get(key)
        if found is None:
            found = self._found[key] = self._resolve(service_name, protocol)
        return found

    def _resolve(self, service_name: str, protocol: str | None) -> StepTarget:
        entry = self.services.get(service_name)
        if entry is None:
            where = f" in namespace {self.namespace}" if self.namespace else ""
            raise StepNotDeployed(f"InferenceService {service_name} is not deployed{where}")
        chosen = protocol if protocol is not None and entry.speaks(protocol) else entry.protocol
        path = predict_path(entry.model, chosen)
        if self.gateway:
            return StepTarget(f"{self.scheme}://{self.gateway}{path}", host=entry.host)
        return StepTarget(f"{self.scheme}://{entry.address}{path}")
