"""InferenceGraphs parsed, defaulted and validated as KServe's webhooks do, and stricter.

KServe's four sample shapes (tests/control/samples/graphs) parse, validate, and pass the
``openAPIV3Schema`` of KServe's CRD (``../shared/reference/kserve-crds``) with unknown fields
refused, as ``kubectl apply --validate=strict`` would. Each invalid graph is refused with the
path of the field at fault.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from modelhost.control import (
    InferenceGraph,
    InferenceService,
    ParseError,
    ValidationError,
    apply_graph_defaults,
    dump_yaml,
    graph_services,
    graph_wait_reason,
    parse_documents,
    parse_object,
    to_dict,
    validate_inference_graph,
)

SAMPLES = Path(__file__).parent / "samples" / "graphs"
REPO = Path(__file__).resolve().parents[2]
# The shared reference data sits next to the repository, here and in CI.
CRD_FILE = (
    REPO.parent / "shared" / "reference" / "kserve-crds" / "serving.kserve.io_inferencegraphs.yaml"
)
SAMPLE_NAMES = ("sequence.yaml", "switch.yaml", "ensemble.yaml", "splitter.yaml")


def graph(nodes: dict[str, Any], name: str = "g", **spec: Any) -> InferenceGraph:
    """An InferenceGraph from plain data, as if parsed from YAML."""
    document = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "InferenceGraph",
        "metadata": {"name": name},
        "spec": {"nodes": nodes, **spec},
    }
    parsed = parse_object(document)
    assert isinstance(parsed, InferenceGraph)
    return parsed


def sample_graph(file_name: str) -> InferenceGraph:
    objects = parse_documents((SAMPLES / file_name).read_text(), file_name)
    (found,) = [obj for obj in objects if isinstance(obj, InferenceGraph)]
    return found


def refusals(candidate: InferenceGraph) -> dict[str, str]:
    """Every refused field → its message (empty when the graph is valid)."""
    try:
        validate_inference_graph(candidate)
    except ValidationError as exc:
        return {error.field: error.message for error in exc.errors}
    return {}


def seq(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"routerType": "Sequence", "steps": list(steps)}


# -- KServe's samples --------------------------------------------------------------------------


def test_the_sequence_sample_parses_with_its_services_and_request_data() -> None:
    objects = parse_documents((SAMPLES / "sequence.yaml").read_text(), "sequence.yaml")
    assert [type(obj) for obj in objects] == [InferenceService, InferenceService, InferenceGraph]
    chainer = objects[2]
    assert isinstance(chainer, InferenceGraph)
    root = chainer.spec.nodes["root"]
    assert root.router_type == "Sequence"
    assert [step.service_name for step in root.steps or ()] == ["sklearn-iris", "xgboost-iris"]
    first, second = root.steps or ()
    # KServe's router sends the original request unless a step asks for $response.
    assert (first.data_source, second.data_source) == ("$request", "$request")
    assert refusals(chainer) == {}


def test_the_switch_sample_keeps_its_conditions_and_dependency() -> None:
    switch = sample_graph("switch.yaml")
    steps = switch.spec.nodes["root"].steps or []
    assert [step.condition for step in steps] == [
        '[@this].#(model=="sklearn")',
        "instances.#(0>=7)",
        '[@this].#(model%"xgb*")',
    ]
    assert [step.hard for step in steps] == [False, False, True]
    assert refusals(switch) == {}


def test_the_ensemble_and_splitter_samples_validate() -> None:
    ensemble = sample_graph("ensemble.yaml")
    assert ensemble.spec.nodes["root"].router_type == "Ensemble"
    assert refusals(ensemble) == {}
    splitter = sample_graph("splitter.yaml")
    steps = splitter.spec.nodes["root"].steps or []
    assert [step.weight for step in steps] == [80, 20]
    timeouts = splitter.spec.router_timeouts
    assert timeouts is not None
    assert (timeouts.server_read, timeouts.service_client) == (60, 30)
    assert refusals(splitter) == {}


@pytest.mark.parametrize("file_name", SAMPLE_NAMES)
def test_a_sample_survives_defaulting_and_a_yaml_round_trip(file_name: str) -> None:
    original = sample_graph(file_name)
    defaulted = apply_graph_defaults(original)
    assert defaulted.spec.min_replicas == 1
    assert defaulted.metadata.namespace == "default"
    assert original.metadata.namespace is None  # the input is not changed
    again = parse_object(yaml.safe_load(dump_yaml(defaulted)))
    assert again == defaulted
    assert refusals(defaulted) == {}


def test_defaulting_keeps_a_given_min_replicas_and_leaves_step_fields_unset() -> None:
    zero = apply_graph_defaults(graph({"root": seq({"serviceName": "a"})}, minReplicas=0))
    assert zero.spec.min_replicas == 0
    (step,) = zero.spec.nodes["root"].steps or ()
    # KServe's defaulter writes neither: the router reads an unset one as $request and Soft.
    assert (step.data, step.dependency) == (None, None)
    assert (step.data_source, step.hard) == ("$request", False)


# -- KServe's CRD schema -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def crd_validator() -> jsonschema.protocols.Validator:
    """The served version's openAPIV3Schema, unknown fields refused where it lists the fields."""
    crd = yaml.safe_load(CRD_FILE.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["served"]]
    assert (crd["spec"]["group"], version["name"]) == ("serving.kserve.io", "v1alpha1")
    assert crd["spec"]["names"]["kind"] == "InferenceGraph"
    schema = _strict(version["schema"]["openAPIV3Schema"])
    # OpenAPI 3.0's schema object is JSON Schema draft 4's vocabulary.
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The API server prunes unknown fields; strict field validation refuses them: so do we."""
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {name: _strict(sub) for name, sub in out["properties"].items()}
        if "additionalProperties" not in out and not out.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = _strict(out[key])
    return out


def _schema_errors(validator: jsonschema.protocols.Validator, document: Any) -> list[str]:
    return [
        f"{'.'.join(str(p) for p in error.absolute_path)}: {error.message}"
        for error in validator.iter_errors(document)
    ]


@pytest.mark.parametrize("file_name", SAMPLE_NAMES)
def test_every_sample_graph_passes_kserves_crd_schema(
    crd_validator: jsonschema.protocols.Validator, file_name: str
) -> None:
    documents = list(yaml.safe_load_all((SAMPLES / file_name).read_text()))
    graphs = [d for d in documents if d["kind"] == "InferenceGraph"]
    assert len(graphs) == 1
    assert _schema_errors(crd_validator, graphs[0]) == []
    # What modelhost stores (defaulted, as KServe's field names) passes too.
    stored = to_dict(apply_graph_defaults(sample_graph(file_name)))
    assert _schema_errors(crd_validator, stored) == []


def test_the_schema_check_refuses_what_kserves_api_server_would(
    crd_validator: jsonschema.protocols.Validator,
) -> None:
    document = yaml.safe_load((SAMPLES / "ensemble.yaml").read_text())
    document["spec"]["nodes"]["root"]["routerType"] = "Parallel"
    document["spec"]["nodes"]["root"]["steps"][0]["wieght"] = 1
    errors = _schema_errors(crd_validator, document)
    assert any("Parallel" in error for error in errors)
    assert any("wieght" in error for error in errors)


# -- refused at parse --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"steps": [{"serviceName": "a", "wieght": 3}]}, "spec.nodes.root.steps[0].wieght"),
        ({"steps": [{"serviceName": "a", "weight": "x"}]}, "spec.nodes.root.steps[0].weight"),
        ({"routerTyp": "Sequence"}, "spec.nodes.root.routerTyp"),
    ],
)
def test_parse_refuses_unknown_fields_and_wrong_types_naming_the_node(
    change: dict[str, Any], field: str
) -> None:
    node = {"routerType": "Sequence", **change}
    document = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "InferenceGraph",
        "metadata": {"name": "g"},
        "spec": {"nodes": {"root": node}},
    }
    with pytest.raises(ParseError) as caught:
        parse_object(document)
    assert caught.value.field == field


def test_parse_names_the_node_among_several_and_requires_a_router_type() -> None:
    text = (
        "apiVersion: serving.kserve.io/v1alpha1\nkind: InferenceGraph\nmetadata: {name: g}\n"
        "spec:\n  nodes:\n    root: {routerType: Sequence, steps: [{nodeName: second}]}\n"
        "    second: {steps: [{serviceName: a}]}\n"
    )
    with pytest.raises(ParseError) as caught:
        parse_documents(text, "graph.yaml")
    assert caught.value.field == "spec.nodes.second.routerType"
    assert "required field is missing" in str(caught.value)


def test_parse_refuses_another_api_version() -> None:
    with pytest.raises(ParseError) as caught:
        parse_object(
            {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceGraph", "spec": {}}
        )
    assert caught.value.field == "apiVersion"


# -- refused at validation ---------------------------------------------------------------------

SVC = {"serviceName": "iris"}

INVALID: list[tuple[str, dict[str, Any], dict[str, Any], str, str]] = [
    # (case, nodes, spec fields, refused field, a piece of its message)
    ("no root", {"main": seq(SVC)}, {}, "spec.nodes", "root node not found"),
    ("no target", {"root": seq({"name": "x"})}, {}, "spec.nodes.root.steps[0]", "target"),
    (
        "two targets",
        {"root": seq({"serviceName": "iris", "serviceUrl": "http://iris.default"})},
        {},
        "spec.nodes.root.steps[0]",
        "found serviceName, serviceUrl",
    ),
    (
        "unknown node",
        {"root": seq(SVC, {"nodeName": "missing"})},
        {},
        "spec.nodes.root.steps[1].nodeName",
        "no node named 'missing'",
    ),
    (
        "data",
        {"root": seq(SVC, {"serviceName": "b", "data": "$respones"})},
        {},
        "spec.nodes.root.steps[1].data",
        "$request or $response",
    ),
    (
        "weight outside a splitter",
        {"root": seq(SVC, {"serviceName": "b", "weight": 50})},
        {},
        "spec.nodes.root.steps[1].weight",
        "only a Splitter",
    ),
    (
        "splitter step without weight",
        {
            "root": {
                "routerType": "Splitter",
                "steps": [{**SVC, "weight": 100}, {"serviceName": "b"}],
            }
        },
        {},
        "spec.nodes.root.steps[1].weight",
        "every step needs a weight",
    ),
    (
        "weights not summing to 100",
        {
            "root": {
                "routerType": "Splitter",
                "steps": [{**SVC, "weight": 70}, {"serviceName": "b", "weight": 20}],
            }
        },
        {},
        "spec.nodes.root.steps",
        "should be 100, not 90",
    ),
    (
        "weight out of range",
        {
            "root": {
                "routerType": "Splitter",
                "steps": [{**SVC, "weight": 120}, {"serviceName": "b", "weight": -20}],
            }
        },
        {},
        "spec.nodes.root.steps[0].weight",
        "between 0 and 100",
    ),
    (
        "condition in an ensemble",
        {"root": {"routerType": "Ensemble", "steps": [{**SVC, "condition": "a"}]}},
        {},
        "spec.nodes.root.steps[0].condition",
        "only Switch and Sequence",
    ),
    (
        "switch step without condition",
        {
            "root": {
                "routerType": "Switch",
                "steps": [{**SVC, "condition": "a"}, {"serviceName": "b"}],
            }
        },
        {},
        "spec.nodes.root.steps[1].condition",
        "never matches",
    ),
    (
        "condition the router cannot evaluate",
        {"root": {"routerType": "Switch", "steps": [{**SVC, "condition": "a.@keys"}]}},
        {},
        "spec.nodes.root.steps[0].condition",
        "condition 'a.@keys'",
    ),
    (
        "dependency",
        {"root": seq({**SVC, "dependency": "Strong"})},
        {},
        "spec.nodes.root.steps[0].dependency",
        "Soft, Hard",
    ),
    (
        "router type",
        {"root": {"routerType": "Parallel", "steps": [SVC]}},
        {},
        "spec.nodes.root.routerType",
        "Sequence, Splitter, Ensemble, Switch",
    ),
    ("no steps", {"root": {"routerType": "Sequence"}}, {}, "spec.nodes.root.steps", "one step"),
    (
        "duplicate step names",
        {"root": seq({**SVC, "name": "a"}, {"serviceName": "b", "name": "a"})},
        {},
        "spec.nodes.root.steps[1].name",
        'more than one step with name "a"',
    ),
    (
        "service name",
        {"root": seq({"serviceName": "Iris_Model"})},
        {},
        "spec.nodes.root.steps[0].serviceName",
        "not an InferenceService name",
    ),
    (
        "service url",
        {"root": seq({"serviceUrl": "iris.default/v1/models/iris:predict"})},
        {},
        "spec.nodes.root.steps[0].serviceUrl",
        "absolute http",
    ),
    (
        "router timeout",
        {"root": seq(SVC)},
        {"routerTimeouts": {"serverRead": 10, "serviceClient": 0}},
        "spec.routerTimeouts.serviceClient",
        "positive",
    ),
    ("min replicas", {"root": seq(SVC)}, {"minReplicas": -1}, "spec.minReplicas", "less than 0"),
    (
        "min above max",
        {"root": seq(SVC)},
        {"minReplicas": 4, "maxReplicas": 2},
        "spec.minReplicas",
        "greater than MaxReplicas",
    ),
    ("max replicas", {"root": seq(SVC)}, {"maxReplicas": -2}, "spec.maxReplicas", "less than 0"),
    ("scale target", {"root": seq(SVC)}, {"scaleTarget": 0}, "spec.scaleTarget", "at least 1"),
    ("scale metric", {"root": seq(SVC)}, {"scaleMetric": "gpu"}, "spec.scaleMetric", "gpu"),
    ("timeout", {"root": seq(SVC)}, {"timeout": -1}, "spec.timeout", ">= 0"),
    (
        "cycle through root",
        {"root": seq({"nodeName": "a"}), "a": seq({"nodeName": "root"})},
        {},
        "spec.nodes.a.steps[0].nodeName",
        "root -> a -> root",
    ),
    (
        "node calling itself",
        {"root": seq(SVC, {"nodeName": "root"})},
        {},
        "spec.nodes.root.steps[1].nodeName",
        "root -> root",
    ),
    (
        "cycle below root",
        {
            "root": seq({"nodeName": "a"}),
            "a": {"routerType": "Ensemble", "steps": [SVC, {"nodeName": "b"}]},
            "b": seq({"nodeName": "a"}),
        },
        {},
        "spec.nodes.b.steps[0].nodeName",
        "a -> b -> a",
    ),
]


@pytest.mark.parametrize(
    ("nodes", "spec", "field", "message"),
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
def test_an_invalid_graph_is_refused_naming_the_field(
    nodes: dict[str, Any], spec: dict[str, Any], field: str, message: str
) -> None:
    found = refusals(graph(nodes, **spec))
    assert field in found, found
    assert message in found[field]


def test_the_graph_name_follows_kserves_rule() -> None:
    found = refusals(graph({"root": seq(SVC)}, name="Model_Chainer"))
    assert "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?'" in found["metadata.name"]
    assert "63" in refusals(graph({"root": seq(SVC)}, name="g" * 64))["metadata.name"]


def test_a_graph_cannot_ask_for_modelmesh() -> None:
    candidate = graph({"root": seq(SVC)})
    candidate.metadata.annotations = {"serving.kserve.io/deploymentMode": "ModelMesh"}
    assert "metadata.annotations[serving.kserve.io/deploymentMode]" in refusals(candidate)
    candidate.metadata.annotations = {"serving.kserve.io/deploymentMode": "RawDeployment"}
    assert refusals(candidate) == {}


def test_every_problem_is_reported_at_once_with_the_graph_named() -> None:
    broken = graph(
        {"main": seq({"serviceName": "a", "weight": 5}, {"nodeName": "nowhere"})},
        routerTimeouts={"serverIdle": -1},
    )
    with pytest.raises(ValidationError) as caught:
        validate_inference_graph(broken)
    assert [error.field for error in caught.value.errors] == [
        "spec.nodes",
        "spec.nodes.main.steps[0].weight",
        "spec.nodes.main.steps[1].nodeName",
        "spec.routerTimeouts.serverIdle",
    ]
    assert str(caught.value).startswith("InferenceGraph default/g is invalid (4 problems)")


def test_nested_nodes_without_cycles_are_valid() -> None:
    diamond = graph(
        {
            "root": seq({"nodeName": "left"}, {"nodeName": "right", "data": "$response"}),
            "left": {"routerType": "Ensemble", "steps": [SVC, {"nodeName": "shared"}]},
            "right": {"routerType": "Switch", "steps": [{"nodeName": "shared", "condition": "x"}]},
            "shared": seq({"serviceUrl": "https://models.example.com/v1/models/m:predict"}),
        }
    )
    assert refusals(diamond) == {}


def test_a_long_chain_of_nodes_is_checked_without_recursion() -> None:
    names = ["root", *(f"n{i}" for i in range(1, 3000))]
    nodes = {name: seq({"nodeName": after}) for name, after in itertools.pairwise(names)}
    nodes[names[-1]] = seq(SVC)
    assert refusals(graph(nodes)) == {}
    nodes[names[-1]] = seq({"nodeName": "n2990"})
    found = refusals(graph(nodes))
    assert found[f"spec.nodes.{names[-1]}.steps[0].nodeName"].endswith("n2999 -> n2990")


# -- what a graph waits for --------------------------------------------------------------------


def test_graph_services_lists_each_service_once_from_every_node() -> None:
    assert graph_services(sample_graph("switch.yaml")) == ["sklearn-iris", "xgboost-iris"]
    nested = graph(
        {
            "root": seq({"serviceName": "detector"}, {"nodeName": "classify"}),
            "classify": {
                "routerType": "Ensemble",
                "steps": [{"serviceName": "a"}, {"serviceUrl": "http://x.y"}],
            },
        }
    )
    assert graph_services(nested) == ["detector", "a"]


def test_a_graph_waits_for_the_services_that_do_not_exist_yet() -> None:
    chainer = sample_graph("sequence.yaml")
    assert graph_wait_reason(chainer, {"sklearn-iris", "xgboost-iris", "other"}) is None
    assert graph_wait_reason(chainer, ["sklearn-iris"]) == (
        "waiting for InferenceService xgboost-iris (not found in namespace default)"
    )
    reason = graph_wait_reason(chainer, ())
    assert reason == (
        "waiting for InferenceServices sklearn-iris, xgboost-iris (not found in namespace default)"
    )
    # Waiting is not invalid: the graph validates without its services.
    assert refusals(chainer) == {}


def test_the_status_reads_leniently_and_keeps_kserves_fields() -> None:
    document = yaml.safe_load((SAMPLES / "ensemble.yaml").read_text())
    document["status"] = {
        "url": "http://ensemble-model.default.example.com",
        "deploymentMode": "Serverless",
        "observedGeneration": 2,
        "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
        ],
        "somethingNew": {"a": 1},
    }
    parsed = parse_object(document)
    assert isinstance(parsed, InferenceGraph)
    assert parsed.status is not None
    assert parsed.status.url == "http://ensemble-model.default.example.com"
    assert [(c.type, c.status) for c in parsed.status.conditions or ()] == [("Ready", "True")]
    assert to_dict(parsed)["status"]["deploymentMode"] == "Serverless"
