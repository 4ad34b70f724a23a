"""The embedded platform: KServe's InferenceServices run on one machine, without Kubernetes.

It carries out the control plane's :class:`~modelhost.control.ServicePlan`: replicas are
``modelhost serve`` processes on free ports, a gateway routes KServe's hosts and paths to them
with the planned traffic split, an autoscaler sizes each revision (to zero, with requests held
while a replica starts), and the objects and their status live in SQLite.

Where to look: ``server`` (``modelhost up``: the platform and its two gateways), ``platform``
(the reconciler), ``revision`` and ``replica`` (the supervisor, load balancer and activator),
``autoscaler`` (Knative's KPA), ``http_proxy`` and ``upstream`` (the HTTP data path), the
gRPC gateway (``modelhost.server.grpc.relay``, with a resolver from ``platform``),
``routing`` (routes and traffic split), ``gateway`` and ``api`` (the platform's own
routes), ``store`` (SQLite), ``payload_logger``, ``metrics``, ``client`` (the CLI's side).
Nothing is exported here, so that the CLI's client does not import the server.
"""

from __future__ import annotations

__all__: list[str] = []
