"""The platform's internal address for services: what cluster DNS is to a KServe graph router.

A graph router calls the InferenceServices its steps name, and on Kubernetes it reaches them
at ``<service>.<namespace>.svc.cluster.local``, past the ingress and its authentication. Here
the router is a replica process on loopback like the model servers, and it calls this one
listener with the service's host in ``Host``: the request goes to the service's entry
component through the same traffic split, activator and forwarder as at the gateway, so
canaries and scale-from-zero work inside a graph, but with no token to check. Like the
replicas and the component listeners, it listens on loopback only.
"""

from __future__ import annotations

import functools

from modelhost.local.component import ComponentState
from modelhost.local.forwarder import Forwarder
from modelhost.local.traffic import TrafficRouter
from modelhost.settings import Http1Limits
from modelhost.transport.http1_proxy import ProxiedRequest, ProxyServer

__all__ = ["mesh_server"]


def mesh_server(traffic: TrafficRouter, forwarder: Forwarder, limits: Http1Limits) -> ProxyServer:
    """The mesh listener (to ``start`` on loopback): routes by ``Host`` alone."""
    return ProxyServer(
        functools.partial(_resolve, traffic),
        forwarder.forward,
        not_found="no InferenceService has host {host}",
        pool=forwarder.pool,
        limits=limits,
    )


def _resolve(traffic: TrafficRouter, request: ProxiedRequest) -> ComponentState | None:
    # Host routes only: a path route would let a step reach a service of another namespace
    # by its model name, which cluster DNS would not.
    routes = traffic.routes
    if request.host not in routes.hosts:
        return None
    return routes.match(request.host, request.path)
