"""The protocol-neutral data plane: what REST v1, REST v2 and gRPC all ask of the server.

Routes and gRPC methods decode the wire, call one of these operations, and encode the
result; nothing here knows about HTTP or protobuf.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any

from modelhost import errors
from modelhost._version import __version__
from modelhost.model.model import Model
from modelhost.model.payload import get_predict_response
from modelhost.model.repository import ModelRepository
from modelhost.protocol.declared_inputs import DeclaredInputs
from modelhost.protocol.infer_type import InferRequest, InferResponse
from modelhost.server.inference import StepRunner

__all__ = ["EXTENSIONS", "DataPlane"]

# Standard extension names (Triton's), plus KServe's name for the repository extension
# so that KServe-aware clients find it too.
EXTENSIONS = ["binary_tensor_data", "model_repository", "model_repository_extension"]

logger = logging.getLogger("modelhost.server")

# ``ServerExtensions.explainer``'s type (``server.extensions.ModelExplainer``), as a plain
# callable: the extensions module imports layers the HTTP app must not reach through here.
Explainer = Callable[[Model, Any, dict[str, str] | None], Any]


class DataPlane:
    """Health, metadata, inference and repository operations over a ``ModelRepository``."""

    def __init__(
        self,
        repository: ModelRepository,
        runner: StepRunner,
        name: str,
        explainer: Explainer | None = None,
    ) -> None:
        self.repository = repository
        self.runner = runner
        self.name = name
        # Explains for the models that have no explain of their own (``serve --explainer``).
        self.explainer = explainer
        # Set on SIGTERM: readiness turns false while in-flight requests drain.
        self.draining = False
        # False while a listener is still starting (gRPC, after HTTP already answers): a
        # replica is not sent gRPC calls before its gRPC port listens.
        self.listening = True
        # Each model object's declared inputs, read from its metadata on its first request
        # (a reloaded model is a new object, or is forgotten here on load and unload).
        self._declared: weakref.WeakKeyDictionary[Model, DeclaredInputs] = (
            weakref.WeakKeyDictionary()
        )

    # -- health and metadata -------------------------------------------------------

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        if self.draining or not self.listening:
            return False
        return all(m.ready for m in self.repository.get_models().values())

    def server_metadata(self) -> dict[str, Any]:
        return {"name": self.name, "version": __version__, "extensions": EXTENSIONS}

    def model(self, name: str, version: str | None = None) -> Model:
        model = self.repository.get_model(name)
        _check_version(model, name, version)
        return model

    def model_ready(self, name: str, version: str | None = None) -> bool:
        # A deferred model (evicted, or past the budget) is servable: it loads on request.
        # Its version is checked when its object is known; else when it loads.
        if self.repository.is_deferred(name):
            known = self.repository.instance(name)
            if known is not None:
                _check_version(known, name, version)
            return True
        return self.model(name, version).ready

    async def loaded_model(self, name: str, version: str | None = None) -> Model:
        """The model, loading it first if it is deferred."""
        if self.repository.is_deferred(name):
            await self.runner.call(self.repository.ensure_loaded, name)
        return self.model(name, version)

    async def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        model = await self.loaded_model(name, version)
        metadata: dict[str, Any] = {"name": model.name}
        own = getattr(model, "version", None)
        if own is not None:
            metadata["versions"] = [str(own)]
        metadata["platform"] = model.platform
        metadata["inputs"] = model.get_input_types()
        metadata["outputs"] = model.get_output_types()
        return metadata

    # -- inference -----------------------------------------------------------------

    def check_servable(self, name: str, version: str | None = None) -> None:
        """Fail fast, before a body is decoded, for a model that cannot serve now."""
        if self.repository.is_deferred(name):
            return
        model = self.model(name, version)
        if not model.ready:
            raise errors.ModelNotReady(name)

    async def _acquire(self, name: str, version: str | None) -> Model:
        """The ready model held for one request; loads a deferred model first."""
        repository = self.repository
        try:
            model = repository.acquire(name)
        except (errors.ModelNotFound, errors.ModelNotReady):
            if not repository.is_deferred(name):
                raise
            model = await self.runner.call(repository.acquire_loaded, name)
        try:
            _check_version(model, name, version)
        except errors.ModelNotFound:
            self.repository.release(model)
            raise
        return model

    async def infer(self, request: InferRequest, headers: dict[str, str]) -> InferResponse:
        """Run a v2 request (REST or gRPC) and return a response for it."""
        model = await self._acquire(request.model_name, request.model_version)
        try:
            self._check_inputs(model, request)
            result, _ = await self.runner.run(model, request, headers)
        finally:
            self.repository.release(model)
        response = _as_response(request, result, model)
        if request.request_outputs:
            response.outputs = _select_outputs(response, request)
        if response.id is None:
            response.id = request.id
        own = getattr(model, "version", None)
        if own is not None:
            response.model_version = str(own)
        return response

    def _check_inputs(self, model: Model, request: InferRequest) -> None:
        """The request's inputs against the model's declared ones (``declared_inputs``)."""
        declared = self._declared.get(model)
        if declared is None:
            try:
                metadata = model.get_input_types()
            except Exception:
                # A model whose metadata fails still serves, unchecked, as it did before.
                logger.exception("get_input_types() of model %s failed", model.name)
                metadata = []
            declared = self._declared[model] = DeclaredInputs(model.name, metadata)
        declared.check(request)

    async def predict_v1(
        self, name: str, payload: dict[str, Any], headers: dict[str, str], verb: str = "predict"
    ) -> tuple[Any, dict[str, str]]:
        """Run a v1 ``:predict`` or ``:explain``; the result is encoded by the route."""
        model = await self._acquire(name, None)
        try:
            step = None
            if verb == "explain" and not model.has_explainer():
                explainer = self.explainer
                if explainer is None:
                    raise errors.Unsupported(f"Model {name} has no explainer.")

                def explain(payload: Any, headers: dict[str, str]) -> Any:
                    return explainer(model, payload, headers)

                step = explain
            return await self.runner.run(model, payload, headers, verb, step)
        finally:
            self.repository.release(model)

    # -- repository extension ------------------------------------------------------

    def repository_index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        entries = self.repository.index()
        return [
            {"name": e.name, "state": e.state.value, "reason": e.reason}
            for e in entries
            if not ready_only or e.state.value == "READY"
        ]

    async def load(self, name: str) -> None:
        await self.runner.call(self.repository.load, name)
        self._forget_inputs(name)

    async def unload(self, name: str) -> None:
        await self.runner.call(self.repository.unload, name)
        self._forget_inputs(name)

    def _forget_inputs(self, name: str) -> None:
        # The same object may load other weights: its inputs are read again.
        for model in [m for m in self._declared if m.name == name]:
            self._declared.pop(model, None)


def _check_version(model: Model, name: str, version: str | None) -> None:
    """A 404 for a version the model does not have; an unversioned model has none.

    As Triton and MLServer answer: ``/versions/<v>`` names one version, and a server
    that serves another (or no versioning at all) does not have it.
    """
    if version is None:
        return
    own = getattr(model, "version", None)
    if own is None or str(own) != version:
        raise errors.ModelNotFound(f"{name} (version {version})")


def _as_response(request: InferRequest, result: Any, model: Model) -> InferResponse:
    if isinstance(result, InferResponse):
        return result
    if isinstance(result, dict) and "predictions" in result:
        result = result["predictions"]
    if isinstance(result, dict):
        raise errors.InferenceError(
            f"Model {model.name} returned a dict, which has no v2 form; return an "
            "InferResponse, an array or a list."
        )
    try:
        converted = get_predict_response(request, result, model.name)
    except (ValueError, TypeError) as exc:
        raise errors.InferenceError(f"Model {model.name} returned {exc}") from None
    assert isinstance(converted, InferResponse)
    return converted


def _select_outputs(response: InferResponse, request: InferRequest) -> list[Any]:
    by_name = {o.name: o for o in response.outputs}
    selected = []
    for wanted in request.request_outputs or ():
        output = by_name.get(wanted.name)
        if output is None:
            raise errors.InvalidInput(
                f"Requested output {wanted.name!r} is not an output of model "
                f"{request.model_name}; outputs are {sorted(by_name)}."
            )
        selected.append(output)
    return selected
