"""Trust: the inference data store and the fairness and drift metrics behind TrustyAI's API.

:class:`TrustApp` serves TrustyAI's routes (CloudEvents from KServe's payload logger at
``/``, ``/consumer/kserve/v2``, ``/data/upload``, ``/info``, ``/metrics/group/fairness/...``,
``/metrics/drift/...``) over a :class:`TrustStore` (one SQLite file) and exports scheduled
metrics to the Prometheus registry it is given.
"""

from __future__ import annotations

from modelhost.trust.app import TrustApp, TrustSettings
from modelhost.trust.store import InferenceBatch, TrustStore

__all__ = ["InferenceBatch", "TrustApp", "TrustSettings", "TrustStore"]
