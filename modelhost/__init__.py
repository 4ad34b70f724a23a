"""modelhost: a KServe-compatible model server and platform.

The names here are the public API; a KServe custom model ports by changing
``from kserve import ...`` to ``from modelhost import ...``.

Each name is imported on first use: a command that needs none of them (``modelhost
apply``, a replica's start before the server) does not pay for the model server, numpy
and the HTTP stack that they bring.
"""

import importlib as _importlib
import typing as _typing

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

if _typing.TYPE_CHECKING:
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

# Name -> the module that defines it; "" for a name that is the module itself.
_LAZY_NAMES = {
    "BatchSettings": "modelhost.settings",
    "InferInput": "modelhost.protocol.infer_type",
    "InferOutput": "modelhost.protocol.infer_type",
    "InferRequest": "modelhost.protocol.infer_type",
    "InferResponse": "modelhost.protocol.infer_type",
    "Model": "modelhost.model.model",
    "ModelRepository": "modelhost.model.repository",
    "ModelServer": "modelhost.server.model_server",
    "PredictorConfig": "modelhost.model.model",
    "RequestedOutput": "modelhost.protocol.infer_type",
    "ServerSettings": "modelhost.settings",
    "get_predict_input": "modelhost.model.payload",
    "get_predict_response": "modelhost.model.payload",
}
# KServe scripts build their parser on ``kserve.model_server.parser``: the module itself.
_LAZY_MODULES = {"model_server": "modelhost.server.model_server"}


def __getattr__(name: str) -> _typing.Any:
    if name in _LAZY_NAMES:
        value = getattr(_importlib.import_module(_LAZY_NAMES[name]), name)
    elif name in _LAZY_MODULES:
        value = _importlib.import_module(_LAZY_MODULES[name])
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # the next look-up finds it without calling here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_NAMES, *_LAZY_MODULES})
