"""KServe's runtime auto-selection and the named-runtime checks, case by case."""

from __future__ import annotations

from typing import Any

import pytest
from control_support import fmt, isvc, runtime, sample_isvc, sklearn

from modelhost._version import __version__
from modelhost.control import (
    RuntimeSelectionError,
    apply_defaults,
    builtin_runtimes,
    dump_yaml,
    parse_documents,
    select_runtime,
    supporting_runtimes,
)
from modelhost.control.objects import AnyRuntime, InferenceService
from modelhost.control.runtimes import image_reference


def chosen(source: InferenceService, runtimes: list[AnyRuntime] | None = None) -> str:
    selected = select_runtime(
        apply_defaults(source), builtin_runtimes() if runtimes is None else runtimes
    )
    assert selected is not None
    return selected.name


def refusal(
    source: InferenceService, runtimes: list[AnyRuntime] | None = None
) -> RuntimeSelectionError:
    with pytest.raises(RuntimeSelectionError) as caught:
        select_runtime(apply_defaults(source), builtin_runtimes() if runtimes is None else runtimes)
    return caught.value


def model(name: str, version: str | None = None, **fields: Any) -> dict[str, Any]:
    model_format = {"name": name} if version is None else {"name": name, "version": version}
    return {"model": {"modelFormat": model_format, "storageUri": "gs://b/m", **fields}}


@pytest.mark.parametrize(
    ("predictor", "expected"),
    [
        # The reference's consequences of the shipped runtimes: an unset protocol means v1,
        # which mlserver does not list; with v2, mlserver's priority 2 beats sklearnserver's 1.
        (sklearn(), "kserve-sklearnserver"),
        (sklearn(protocolVersion="v2"), "kserve-mlserver"),
        ({"sklearn": {"storageUri": "gs://b/m", "protocolVersion": "v2"}}, "kserve-mlserver"),
        (model("xgboost"), "kserve-xgbserver"),
        (model("xgboost", protocolVersion="v2"), "kserve-mlserver"),
        (model("lightgbm", "4"), "kserve-lgbserver"),
        (model("lightgbm", "3", protocolVersion="v2"), "kserve-mlserver"),
        (model("catboost"), "kserve-catboostserver"),
        ({"onnx": {"storageUri": "gs://b/m"}}, "modelhost-onnxserver"),
        ({"huggingface": {"storageUri": "hf://org/m"}}, "kserve-huggingfaceserver"),
        ({"pytorch": {"storageUri": "gs://b/m"}}, "modelhost-pytorchserver"),
        (model("mlflow"), "modelhost-mlflowserver"),
        (model("mlflow", "3", protocolVersion="v2"), "modelhost-mlflowserver"),
        (model("custom"), "modelhost-customserver"),
        (sklearn(protocolVersion="grpc-v2"), "kserve-mlserver"),
    ],
)
def test_builtin_runtime_choices(predictor: dict[str, Any], expected: str) -> None:
    assert chosen(isvc(predictor)) == expected


def test_samples_choose_as_kserve_does() -> None:
    assert chosen(sample_isvc("sklearn-iris-v1.yaml")) == "kserve-sklearnserver"
    assert chosen(sample_isvc("sklearn-iris-v2.yaml")) == "kserve-mlserver"
    assert chosen(sample_isvc("torch-transformer.yaml")) == "modelhost-pytorchserver"


def test_no_runtime_for_a_format() -> None:
    error = refusal(isvc({"tensorflow": {"storageUri": "gs://b/m"}}))
    assert error.failure_reason == "NoSupportingRuntime"
    assert error.field == "spec.predictor.model.modelFormat"
    assert (
        "no runtime found to support predictor with model type: tensorflow and protocol version v1"
        in str(error)
    )


def test_version_match_is_exact_and_the_error_says_why() -> None:
    assert chosen(isvc(model("sklearn", "1"))) == "kserve-sklearnserver"
    assert chosen(isvc(model("sklearn", "0", protocolVersion="v2"))) == "kserve-mlserver"
    error = refusal(isvc(model("sklearn", "1.0")))
    assert "model type: sklearn (version 1.0) and protocol version v1" in str(error)
    assert "kserve-sklearnserver serves versions 1" in str(error)
    # Version 0 is mlserver's only, which speaks v2 only.
    error = refusal(isvc(model("sklearn", "0")))
    assert "kserve-mlserver speaks v2, grpc-v2 only" in str(error)


def test_namespaced_runtime_beats_cluster_runtime_of_higher_priority() -> None:
    runtimes = [
        runtime("cluster-best", [fmt("sklearn", "1", 10)]),
        runtime("mine", [fmt("sklearn", "1", 1)], namespace="default"),
        runtime("theirs", [fmt("sklearn", "1", 20)], namespace="other"),
    ]
    assert chosen(isvc(sklearn()), runtimes) == "mine"
    assert chosen(isvc(sklearn(), namespace="other"), runtimes) == "theirs"
    assert chosen(isvc(sklearn(), namespace="third"), runtimes) == "cluster-best"
    selected = select_runtime(apply_defaults(isvc(sklearn())), runtimes)
    assert selected.kind == "ServingRuntime"


def test_highest_priority_wins_and_a_priority_beats_none() -> None:
    runtimes = [
        runtime("low", [fmt("sklearn", priority=1)]),
        runtime("none", [fmt("sklearn")]),
        runtime("high", [fmt("sklearn", priority=5)]),
    ]
    names = [
        s.name
        for s in supporting_runtimes(
            apply_defaults(isvc(sklearn())).spec.predictor.model, "default", runtimes
        )
    ]
    assert names == ["high", "low", "none"]


def test_ties_go_to_lowest_protocol_then_newest_then_name() -> None:
    runtimes = [
        runtime(
            "b-v2-old",
            [fmt("sklearn", priority=1)],
            protocols=["v2"],
            created="2023-01-01T00:00:00Z",
        ),
        runtime(
            "a-v2-old",
            [fmt("sklearn", priority=1)],
            protocols=["v2"],
            created="2023-01-01T00:00:00Z",
        ),
        runtime(
            "v2-new", [fmt("sklearn", priority=1)], protocols=["v2"], created="2024-01-01T00:00:00Z"
        ),
        runtime(
            "v1-and-v2",
            [fmt("sklearn", priority=1)],
            protocols=["v2", "v1"],
            created="2020-01-01T00:00:00Z",
        ),
        runtime("any-protocol", [fmt("sklearn", priority=1)]),
    ]
    spec = apply_defaults(isvc(sklearn(protocolVersion="v2"))).spec.predictor.model
    names = [s.name for s in supporting_runtimes(spec, "default", runtimes)]
    assert names == ["v1-and-v2", "v2-new", "a-v2-old", "b-v2-old", "any-protocol"]


def test_priority_is_the_first_entry_of_the_format_name() -> None:
    # KServe's GetPriority reads the first entry with the name, whatever its version.
    runtimes = [
        runtime("first-entry-low", [fmt("sklearn", "0", 1), fmt("sklearn", "1", 9)]),
        runtime("middle", [fmt("sklearn", "1", 5)]),
    ]
    assert chosen(isvc(model("sklearn", "1")), runtimes) == "middle"


def test_auto_select_false_is_only_used_when_named() -> None:
    predictive = runtime("kserve-predictiveserver", [fmt("sklearn", "1", 3, auto=False)])
    error = refusal(isvc(sklearn()), [predictive])
    assert "kserve-predictiveserver is not auto-selected for it" in str(error)
    assert (
        chosen(isvc(sklearn(runtime="kserve-predictiveserver")), [predictive])
        == "kserve-predictiveserver"
    )


def test_disabled_multi_model_and_multi_node_runtimes_are_skipped() -> None:
    runtimes = [
        runtime("disabled", [fmt("sklearn", priority=9)], disabled=True),
        runtime("mesh", [fmt("sklearn", priority=8)], multiModel=True),
        runtime("nodes", [fmt("sklearn", priority=7)], workerSpec={"containers": [{"name": "w"}]}),
        runtime("plain", [fmt("sklearn", priority=1)]),
    ]
    assert chosen(isvc(sklearn()), runtimes) == "plain"
    multi_node = {
        **model("sklearn", storageUri="pvc://claim/m"),
        "workerSpec": {"containers": [{"name": "w"}]},
    }
    assert chosen(isvc(multi_node), runtimes) == "nodes"


def test_explicit_runtime_is_honoured_over_priorities() -> None:
    assert (
        chosen(isvc(sklearn(runtime="kserve-mlserver", protocolVersion="v2"))) == "kserve-mlserver"
    )
    assert (
        chosen(isvc(sklearn(runtime="kserve-sklearnserver", protocolVersion="v2")))
        == "kserve-sklearnserver"
    )


def test_explicit_runtime_prefers_the_namespaced_one_of_that_name() -> None:
    runtimes = [
        *builtin_runtimes(),
        runtime("kserve-sklearnserver", [fmt("sklearn", "1", 1)], namespace="default"),
    ]
    selected = select_runtime(
        apply_defaults(isvc(sklearn(runtime="kserve-sklearnserver"))), runtimes
    )
    assert (selected.name, selected.kind) == ("kserve-sklearnserver", "ServingRuntime")


def test_explicit_runtime_refusals_carry_kserves_reasons() -> None:
    unknown = refusal(isvc(sklearn(runtime="nope")))
    assert (unknown.failure_reason, unknown.field) == (
        "RuntimeNotRecognized",
        "spec.predictor.model.runtime",
    )
    assert "runtime 'nope' not found" in str(unknown)
    off = runtime("off", [fmt("sklearn")], disabled=True)
    assert refusal(isvc(sklearn(runtime="off")), [off]).failure_reason == "RuntimeDisabled"
    protocol = refusal(isvc(sklearn(runtime="kserve-mlserver", protocolVersion="v1")))
    assert protocol.failure_reason == "NoSupportingRuntime"
    assert "does not support specified protocol version v1 (it supports v2, grpc-v2)" in str(
        protocol
    )
    framework = refusal(isvc(model("xgboost", runtime="kserve-sklearnserver")))
    assert "does not support specified framework/version xgboost (it supports sklearn:1)" in str(
        framework
    )


def test_explicit_runtime_with_unset_protocol_is_not_protocol_checked() -> None:
    # KServe checks the protocol of a named runtime only when the predictor sets one.
    assert chosen(isvc(sklearn(runtime="kserve-mlserver"))) == "kserve-mlserver"


def test_runtime_without_protocols_serves_any() -> None:
    anything = runtime("anything", [fmt("tensorflow")])
    assert chosen(isvc(model("tensorflow", protocolVersion="grpc-v1")), [anything]) == "anything"


def test_custom_predictor_has_no_runtime() -> None:
    source = isvc({"containers": [{"image": "example/m:1"}]})
    assert select_runtime(apply_defaults(source), builtin_runtimes()) is None


def test_builtin_runtimes_print_and_parse_back() -> None:
    for builtin in builtin_runtimes():
        assert parse_documents(dump_yaml(builtin)) == [builtin]
        (container,) = builtin.spec.containers
        assert container.command == ["modelhost", "serve"]
        assert builtin.metadata.annotations["serving.kserve.io/server-type"] == "modelhost"


def test_builtin_runtimes_name_the_image_of_their_runtime_in_any_registry() -> None:
    images = {
        r.name: r.spec.containers[0].image for r in builtin_runtimes("mirror.example/ml/", "7")
    }
    assert images["kserve-sklearnserver"] == "mirror.example/ml/modelhost-tabular:7"
    assert images["kserve-mlserver"] == "mirror.example/ml/modelhost-full:7"
    assert images["kserve-catboostserver"] == "mirror.example/ml/modelhost-full:7"
    assert images["modelhost-mlflowserver"] == "mirror.example/ml/modelhost-full:7"
    assert images["modelhost-pytorchserver"] == "mirror.example/ml/modelhost-torch:7"
    assert images["kserve-huggingfaceserver"] == "mirror.example/ml/modelhost-llm:7"
    assert image_reference("modelhost-tabular") == f"modelhost/modelhost-tabular:{__version__}"
