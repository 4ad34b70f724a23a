"""The embedded platform: KServe's InferenceServices run on one machine, without Kubernetes.

It carries out the control plane's :class:`~modelhost.control.ServicePlan`: replicas are
``modelhost serve`` processes on free ports, a gateway routes KServe's hosts and paths to them
with the planned traffic split, an autoscaler sizes each revision (to zero, with requests held
while a replica starts), and the objects and their status live in SQLite.

Where to look: ``server`` (``modelhost up``: the platform and its two gateways), ``platform``
(the API's front: admission, the store, the views), ``reconciler`` (plans carried out,
status written), ``traffic`` (route table, splits, the gRPC resolver), ``reaper`` (replicas
a killed platform left), ``revision`` and ``replica`` (the supervisor, load balancer and
activator), ``autoscaler`` (Knative's KPA), the HTTP gateway (``modelhost.transport.http1_proxy``,
wired in ``gateway``: where a request goes, its token check, the platform's own routes; and
``forwarder``: the revision, replicas, metrics and payload log of each request), the gRPC
gateway (``modelhost.transport.grpc_relay``, with a resolver from ``traffic``, and
``grpc_services`` for its health checks and reflection), ``routing`` (routes and traffic
split), ``api`` (the control API's routes), ``store`` (SQLite),
``payload_logger``, ``metrics``, ``client`` (the CLI's side).
Nothing is exported here, so that the CLI's client does not import the server.
"""

from __future__ import annotations

__all__: list[str] = []
