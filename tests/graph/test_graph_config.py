"""The router config ``modelhost graph --spec`` reads, and the service table's resolver."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelhost.control import ParseError
from modelhost.graph import (
    ServiceEntry,
    ServiceTableResolver,
    StepNotDeployed,
    load_router_config,
    parse_router_config,
)

GRAPH = {
    "apiVersion": "serving.kserve.io/v1alpha1",
    "kind": "InferenceGraph",
    "metadata": {"name": "g", "namespace": "team"},
    "spec": {"nodes": {"root": {"routerType": "Sequence", "steps": [{"serviceName": "iris"}]}}},
}
IRIS = {
    "host": "iris.team.example.com",
    "address": "iris.team.svc.cluster.local",
    "protocol": "v1",
    "protocols": ["v1", "v2"],
    "model": "iris",
}


def config(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {"graph": GRAPH, "services": {"iris": IRIS}}
    document.update(changes)
    return document


def refusal(document: Any) -> ParseError:
    with pytest.raises(ParseError) as caught:
        parse_router_config(document)
    return caught.value


def test_a_config_parses_into_the_defaulted_graph_and_frozen_entries() -> None:
    parsed = parse_router_config(config())
    assert parsed.graph.name == "g"
    assert parsed.graph.namespace == "team"
    assert parsed.graph.spec.min_replicas == 1  # apply_graph_defaults ran
    entry = parsed.services["iris"]
    assert entry == ServiceEntry(
        "iris.team.example.com", "iris.team.svc.cluster.local", "v1", "iris", ("v1", "v2")
    )
    with pytest.raises(AttributeError):
        entry.host = "other"  # type: ignore[misc]


def test_spec_is_inline_json_or_a_json_or_yaml_file(tmp_path: Path) -> None:
    inline = load_router_config(json.dumps(config()))
    as_json = tmp_path / "router.json"
    as_json.write_text(json.dumps(config()))
    as_yaml = tmp_path / "router.yaml"
    as_yaml.write_text(yaml.safe_dump(config()))
    assert load_router_config(str(as_json)) == inline
    assert load_router_config(str(as_yaml)) == inline
    with pytest.raises(ParseError, match=r"cannot read .*missing\.yaml"):
        load_router_config(str(tmp_path / "missing.yaml"))
    with pytest.raises(ParseError, match="--spec is not valid JSON"):
        load_router_config('{"graph": ')


@pytest.mark.parametrize(
    ("services", "field", "words"),
    [
        ({"iris": {**IRIS, "protocol": "grpc-v2"}}, "services.iris.protocol", "v1 or v2"),
        ({"iris": {**IRIS, "protocols": ["v1", "v3"]}}, "services.iris.protocols[1]", "v3"),
        ({"iris": {**IRIS, "protocols": ["v2"]}}, "services.iris.protocols", "v1"),
        ({"iris": {k: v for k, v in IRIS.items() if k != "host"}}, "services.iris.host", "miss"),
        ({"iris": {**IRIS, "hots": "x"}}, "services.iris.hots", "unknown field"),
        ({"iris": {**IRIS, "address": 80}}, "services.iris.address", "expected str, got int"),
        ({"iris": {**IRIS, "address": "http://iris/"}}, "services.iris.address", "host[:port]"),
        ({"iris": {**IRIS, "model": ""}}, "services.iris.model", "not a model name"),
        (["iris"], "services", "expected a mapping"),
    ],
)
def test_a_bad_service_entry_names_its_field(services: Any, field: str, words: str) -> None:
    error = refusal(config(services=services))
    assert error.field == field
    assert words in str(error)
    assert str(error).startswith("router config is invalid")


def test_a_bad_graph_names_its_field_inside_the_config() -> None:
    no_root = {**GRAPH, "spec": {"nodes": {"other": {"routerType": "Sequence", "steps": []}}}}
    assert refusal(config(graph=no_root)).field == "graph.spec.nodes"
    typo = {**GRAPH, "spec": {"nodes": {"root": {"routerTyp": "Sequence"}}}}
    assert refusal(config(graph=typo)).field.startswith("graph.spec.nodes.root")
    weights = {
        **GRAPH,
        "spec": {
            "nodes": {
                "root": {
                    "routerType": "Splitter",
                    "steps": [{"serviceName": "a", "weight": 30}, {"serviceName": "b"}],
                }
            }
        },
    }
    assert refusal(config(graph=weights)).field.startswith("graph.spec.nodes.root.steps")
    isvc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService"}
    assert refusal(config(graph=isvc)).field.startswith("graph.")


def test_the_config_itself_is_checked() -> None:
    assert refusal({"services": {}}).field == "graph"
    assert refusal({**config(), "extra": 1}).field == "extra"
    assert refusal([]).field == ""
    assert parse_router_config({"graph": GRAPH}).services == {}


def test_the_table_resolver_picks_the_requests_protocol_when_the_service_speaks_it() -> None:
    both = ServiceEntry(
        "a.team.example.com", "a.team.svc.cluster.local", "v1", "a-model", ("v1", "v2")
    )
    only_v2 = ServiceEntry("b.team.example.com", "b.team.svc.cluster.local:8080", "v2", "b")
    direct = ServiceTableResolver({"a": both, "b": only_v2})
    assert direct("a", None).url == "http://a.team.svc.cluster.local/v1/models/a-model:predict"
    assert direct("a", "v2").url == "http://a.team.svc.cluster.local/v2/models/a-model/infer"
    # b answers v2 only: its own path whatever the request's, and at "/".
    assert direct("b", "v1").url == "http://b.team.svc.cluster.local:8080/v2/models/b/infer"
    assert direct("b", None).url == "http://b.team.svc.cluster.local:8080/v2/models/b/infer"
    assert direct("a", None).host is None
    via = ServiceTableResolver({"a": both}, gateway="127.0.0.1:8081")("a", "v1")
    assert (via.url, via.host) == (
        "http://127.0.0.1:8081/v1/models/a-model:predict",
        "a.team.example.com",
    )


def test_a_service_missing_from_the_table_is_not_deployed() -> None:
    resolver = ServiceTableResolver({}, namespace="team")
    with pytest.raises(
        StepNotDeployed, match="InferenceService gone is not deployed in namespace team"
    ):
        resolver("gone", "v1")
