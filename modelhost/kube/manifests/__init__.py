"""One module per Kubernetes kind or concern that a plan renders to.

``workload`` (the Deployment and its pod), ``model_source`` (how the model reaches
``/mnt/models``), ``agent`` (KServe's logger and batcher sidecar), ``probes``, ``services``,
``routing`` (Gateway API), ``scaling`` (HPA or KEDA) and ``disruption`` (PDB). Each returns
plain dicts; :mod:`modelhost.kube.render` puts them together in a stable order.
"""
