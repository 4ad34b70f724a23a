"""modelhost: a KServe-compatible model server and platform.

The names here are the public API; a KServe custom model ports by changing
``from kserve import ...`` to ``from modelhost import ...``.
"""

from modelhost._version import __version__
from modelhost.errors import (
    InferenceError,
    InvalidInput,
    ModelhostError,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    ServerNotReady,
    Unsupported,
)
from modelhost.model.model import Model, PredictorConfig
from modelhost.model.payload import get_predict_input, get_predict_response
from modelhost.model.repository import ModelRepository
from modelhost.protocol.infer_type import (
    InferInput,
    InferOutput,
    InferRequest,
    InferResponse,
    RequestedOutput,
)
from modelhost.server import model_server as model_server  # KServe scripts' parser
from modelhost.server.model_server import ModelServer
from modelhost.settings import BatchSettings, ServerSettings

__all__ = [
    "BatchSettings",
    "InferInput",
    "InferOutput",
    "InferRequest",
    "InferResponse",
    "InferenceError",
    "InvalidInput",
    "Model",
    "ModelLoadError",
    "ModelNotFound",
    "ModelNotReady",
    "ModelRepository",
    "ModelServer",
    "ModelhostError",
    "PredictorConfig",
    "RequestedOutput",
    "ServerNotReady",
    "ServerSettings",
    "Unsupported",
    "__version__",
    "get_predict_input",
    "get_predict_response",
]
