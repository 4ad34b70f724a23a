"""The gateway's own paths and the in-process APIs' never take a model's path.

The gateway sends a ``/v1/models/...`` or ``/v2/models/...`` request to the route table
without asking the trust service, the guardrails or the registry whether it is theirs
(:func:`modelhost.local.gateway.resolve`); that holds only while none of their paths is one.
"""

from __future__ import annotations

import itertools

from modelhost.local.gateway import LOCAL_PATHS
from modelhost.local.guardrails_host import is_guardrails_request
from modelhost.local.registry_host import is_registry_request
from modelhost.local.routing import MODEL_PATH_PREFIXES
from modelhost.local.trust_host import is_trust_request
from modelhost.registry import API_PREFIXES
from modelhost.transport.http1_proxy import ProxiedRequest
from modelhost.trust import paths as trust_paths
from modelhost.trust.guardrails.app import GUARDRAILS_PATHS


def request(method: bytes, path: str) -> ProxiedRequest:
    return ProxiedRequest(method, path.encode(), [(b"host", b"localhost")], b"", True)


def test_no_in_process_api_claims_a_model_path() -> None:
    declared = [
        *LOCAL_PATHS,
        *GUARDRAILS_PATHS,
        *API_PREFIXES,
        *trust_paths._PATHS,
        *trust_paths._PREFIXES,
    ]
    assert declared
    for path in declared:
        assert not path.startswith(MODEL_PATH_PREFIXES), path
        # Nor could a model path be one of them with a character less or more.
        assert not any(prefix.startswith(path) for prefix in MODEL_PATH_PREFIXES), path
    model_paths = [
        "/v1/models/iris:predict",
        "/v1/models/info",
        "/v2/models/iris/infer",
        "/v2/models/metrics/group/",
        "/v2/models/x/",
    ]
    for method, path in itertools.product([b"GET", b"POST"], model_paths):
        asked = request(method, path)
        assert not is_trust_request(asked)
        assert not is_guardrails_request(asked)
        assert not is_registry_request(asked)
