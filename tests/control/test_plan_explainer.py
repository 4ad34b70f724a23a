"""The ``serving.modelhost.dev/explainer`` annotation: ``--explainer`` on the predictor."""

from __future__ import annotations

import pytest
from control_support import fmt, isvc, runtime, sklearn

from modelhost.cli import build_parser
from modelhost.control import ValidationError, plan
from modelhost.control.plan import EXPLAINER_ANNOTATION
from modelhost.settings import settings_from_args


@pytest.mark.parametrize("method", ["shap", "lime"])
def test_the_annotation_becomes_the_serve_flag(method: str) -> None:
    source = isvc(sklearn(), annotations={EXPLAINER_ANNOTATION: method})
    predictor = plan(source).component("predictor")
    assert predictor is not None
    argv, _ = predictor.revision.process.render(http_port=31000, grpc_port=31001)
    assert settings_from_args(build_parser().parse_args(argv[1:])).explainer == method
    # A different explainer is a different revision.
    plain = plan(isvc(sklearn())).component("predictor")
    assert plain is not None
    assert "--explainer" not in " ".join(plain.revision.process.args)
    assert plain.revision.name != predictor.revision.name


def test_an_unknown_explainer_names_the_annotation() -> None:
    with pytest.raises(ValidationError) as caught:
        plan(isvc(sklearn(), annotations={EXPLAINER_ANNOTATION: "anchors"}))
    assert caught.value.field == f"metadata.annotations[{EXPLAINER_ANNOTATION}]"
    assert "shap, lime" in str(caught.value)


def test_another_server_keeps_its_command_and_is_warned_about() -> None:
    mlserver = runtime("kserve-mlserver", [fmt("sklearn", "1", 2)], protocols=["v2"])
    source = isvc(sklearn(protocolVersion="v2"), annotations={EXPLAINER_ANNOTATION: "shap"})
    result = plan(source, runtimes=[mlserver])
    predictor = result.component("predictor")
    assert predictor is not None
    assert not any("--explainer" in arg for arg in predictor.revision.process.args)
    assert any(EXPLAINER_ANNOTATION in warning for warning in result.warnings)


def test_kserve_explainer_components_are_planned_as_before() -> None:
    source = isvc(
        sklearn(),
        annotations={EXPLAINER_ANNOTATION: "lime"},
        explainer={"containers": [{"name": "kserve-container", "image": "my/explainer"}]},
    )
    result = plan(source)
    assert result.component("explainer") is not None
    assert any(route.component == "explainer" for route in result.routes)
