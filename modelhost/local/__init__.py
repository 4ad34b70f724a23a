"""The embedded platform: KServe's InferenceServices run on one machine, without Kubernetes.

It carries out the control plane's :class:`~modelhost.control.ServicePlan`: replicas are
``modelhost serve`` processes on free ports, a gateway routes KServe's hosts and paths to them
with the planned traffic split, an autoscaler sizes each revision (to zero, with requests held
while a replica starts), and the objects and their status live in SQLite.
"""

from __future__ import annotations

__all__: list[str] = []
