"""The router's node rules (Sequence, Switch, Ensemble, Splitter, nested nodes), Hard and Soft
steps, errors that name the node and step, headers, timeouts and URLs, through the
``StepCaller`` seam (graph_support.ScriptedSteps)."""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from typing import Any

import orjson
import pytest
from graph_support import Call, ScriptedSteps, answer, make_graph, service_url, tagged
from prometheus_client import CollectorRegistry

from modelhost.graph import (
    GatewayResolver,
    GraphMetrics,
    GraphRouter,
    GraphSpecError,
    RouterSettings,
    StepAnswer,
    StepTimedOut,
    StepUnreachable,
)

A, B, C, D = (service_url(name) for name in "abcd")
INPUT = {"instances": [[6.8, 2.8, 4.8, 1.4]]}


def step(service: str, **fields: Any) -> dict[str, Any]:
    return {"serviceName": service, **fields}


async def route(router: GraphRouter, document: Any = INPUT, **kwargs: Any) -> Any:
    response = await router.route(orjson.dumps(document), {}, **kwargs)
    return response.status, orjson.loads(response.body)


# -- Sequence --------------------------------------------------------------------------------


async def test_sequence_sends_the_previous_response_only_where_data_says_response() -> None:
    steps = ScriptedSteps({A: tagged("a"), B: tagged("b"), C: tagged("c"), D: tagged("d")})
    graph = make_graph(
        {
            "root": {
                "routerType": "Sequence",
                "steps": [
                    step("a"),
                    step("b", data="$response"),
                    step("c", data="$request"),
                    step("d"),
                ],
            }
        }
    )
    status, body = await route(GraphRouter(graph, steps))
    assert [call.url for call in steps.calls] == [A, B, C, D]
    assert steps.calls[0].json == INPUT
    assert steps.calls[1].json == {"from": "a", "got": INPUT}
    assert steps.calls[2].json == INPUT
    # No data: KServe's router sends the node's input, not the previous response.
    assert steps.calls[3].json == INPUT
    assert (status, body) == (200, {"from": "d", "got": INPUT})


async def test_a_sequence_step_whose_condition_does_not_match_is_skipped() -> None:
    steps = ScriptedSteps()
    steps.answers(A, {"predictions": [{"label": "cat"}]})
    steps.on(B, tagged("dog-breeds"))
    steps.on(C, tagged("cat-breeds"))
    graph = make_graph(
        {
            "root": {
                "routerType": "Sequence",
                "steps": [
                    step("a"),
                    step("b", data="$response", condition='predictions.#(label=="dog")'),
                    step("c", data="$response", condition='predictions.#(label=="cat")'),
                ],
            }
        }
    )
    status, body = await route(GraphRouter(graph, steps))
    assert steps.calls_to(B) == []
    assert status == 200
    assert body == {"from": "cat-breeds", "got": {"predictions": [{"label": "cat"}]}}


async def test_a_sequence_whose_steps_are_all_skipped_answers_its_input_unchanged() -> None:
    steps = ScriptedSteps({A: tagged("a")})
    graph = make_graph(
        {"root": {"routerType": "Sequence", "steps": [step("a", condition="nothing.here")]}}
    )
    body = b'{"instances": [1.50]}'
    response = await GraphRouter(graph, steps).route(body, {"content-type": "application/json"})
    assert (response.status, response.body) == (200, body)
    assert steps.calls == []


async def test_a_hard_step_that_fails_stops_the_sequence_with_its_status_and_name() -> None:
    steps = ScriptedSteps({B: tagged("b")})
    steps.answers(A, {"error": "Model with name a is not ready."}, status=503)
    graph = make_graph(
        {
            "root": {
                "routerType": "Sequence",
                "steps": [step("a", name="sklearn-iris", dependency="Hard"), step("b")],
            }
        }
    )
    status, body = await route(GraphRouter(graph, steps))
    assert steps.calls_to(B) == []
    assert status == 503
    assert body == {
        "error": "node root, step 1 (sklearn-iris): 503 Model with name a is not ready."
    }


async def test_a_soft_step_that_fails_passes_its_answer_on() -> None:
    steps = ScriptedSteps({B: tagged("b")})
    steps.answers(A, {"error": "boom"}, status=500)
    graph = make_graph(
        {
            "root": {
                "routerType": "Sequence",
                "steps": [step("a", dependency="Soft"), step("b", data="$response")],
            }
        }
    )
    status, body = await route(GraphRouter(graph, steps))
    assert (status, body) == (200, {"from": "b", "got": {"error": "boom"}})


@pytest.mark.parametrize(
    ("answer_body", "detail"),
    [
        (b'{"error": "xgboost says no"}', "503 xgboost says no"),
        (b"upstream connect error", "503 upstream connect error"),
        (b"", "503 Service Unavailable"),
        (b"x" * 400, "503 " + "x" * 300 + "..."),
    ],
)
async def test_the_graphs_error_names_the_node_and_step_that_failed(
    answer_body: bytes, detail: str
) -> None:
    steps = ScriptedSteps({A: tagged("a")})
    steps.on(B, lambda call: StepAnswer(503, {"content-type": "text/plain"}, answer_body))
    graph = make_graph(
        {"root": {"routerType": "Sequence", "steps": [step("a"), step("b", name="xgboost-iris")]}}
    )
    response = await GraphRouter(graph, steps).route(orjson.dumps(INPUT), {})
    assert response.status == 503
    assert response.headers["content-type"] == "application/json"
    assert orjson.loads(response.body) == {"error": f"node root, step 2 (xgboost-iris): {detail}"}


# -- Switch ----------------------------------------------------------------------------------

SWITCH_INPUT = {
    "instances": [
        {"name": "blue", "intval": 0, "strval": "kserve"},
        {"name": "red", "intval": 1, "strval": "1red-server1"},
    ]
}


@pytest.mark.parametrize(
    ("conditions", "chosen"),
    [
        # KServe's sample Switch: an array query, then a pattern.
        (["instances.#(intval>5)", "instances.#(strval%*red-server*)"], "b"),
        (['instances.#(name=="blue")', "instances.#(strval%*red-server*)"], "a"),  # first wins
        (["instances.0.name", "instances.1"], "a"),  # object paths
        # A field of the request object itself, KServe users' [@this] idiom.
        (['[@this].#(model=="sklearn")', "instances.#(intval==1)"], "b"),
        (["instances.#(intval>5)", "instances.#(name%*green*)"], None),
    ],
)
async def test_switch_sends_the_input_to_the_first_step_whose_condition_matches(
    conditions: list[str], chosen: str | None
) -> None:
    steps = ScriptedSteps({A: tagged("a"), B: tagged("b")})
    graph = make_graph(
        {
            "root": {
                "routerType": "Switch",
                "steps": [step("a", condition=conditions[0]), step("b", condition=conditions[1])],
            }
        }
    )
    raw = orjson.dumps(SWITCH_INPUT)
    response = await GraphRouter(graph, steps).route(raw, {"content-type": "application/json"})
    assert response.status == 200
    if chosen is None:
        assert steps.calls == []
        assert response.body == raw  # no match: the input, unchanged
    else:
        assert [call.url for call in steps.calls] == [service_url(chosen)]
        assert orjson.loads(response.body) == {"from": chosen, "got": SWITCH_INPUT}


async def test_switch_on_a_body_that_is_not_json_matches_nothing() -> None:
    steps = ScriptedSteps({A: tagged("a")})
    graph = make_graph({"root": {"routerType": "Switch", "steps": [step("a", condition="x")]}})
    response = await GraphRouter(graph, steps).route(b"x=1", {"content-type": "text/plain"})
    assert (response.status, response.body) == (200, b"x=1")
    assert response.headers["content-type"] == "text/plain"


async def test_a_v2_binary_body_passes_through_and_conditions_read_its_json_header() -> None:
    header = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4]}]})
    body = header + bytes(range(16))
    v2_b = service_url("b", "v2")
    steps = ScriptedSteps()
    steps.on(v2_b, lambda call: StepAnswer(200, dict(call.headers), call.body))
    graph = make_graph(
        {
            "root": {
                "routerType": "Switch",
                "steps": [
                    step("a", condition='inputs.#(name=="y")'),
                    step("b", condition="inputs"),
                ],
            }
        }
    )
    headers = {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }
    response = await GraphRouter(graph, steps).route(body, headers, path="/v2/models/g/infer")
    (call,) = steps.calls
    assert call.url == v2_b
    assert call.body == body
    assert call.headers["inference-header-content-length"] == str(len(header))
    assert call.headers["content-type"] == "application/octet-stream"
    assert response.body == body
    assert response.headers["inference-header-content-length"] == str(len(header))


# -- Ensemble --------------------------------------------------------------------------------


async def test_ensemble_merges_the_answers_by_step_name_or_index_keeping_their_bytes() -> None:
    steps = ScriptedSteps()
    steps.on(A, lambda call: StepAnswer(200, {}, b'{"predictions": [1.50, 2e3]}'))
    steps.on(B, lambda call: StepAnswer(200, {}, b' {"predictions": [0]}\n'))
    graph = make_graph(
        {"root": {"routerType": "Ensemble", "steps": [step("a", name="sklearn"), step("b")]}}
    )
    response = await GraphRouter(graph, steps).route(orjson.dumps(INPUT), {})
    assert response.status == 200
    assert response.body == b'{"sklearn":{"predictions": [1.50, 2e3]},"1":{"predictions": [0]}}'
    assert all(call.json == INPUT for call in steps.calls)


async def test_ensemble_steps_run_at_the_same_time() -> None:
    started: list[str] = []
    everyone_in = asyncio.Event()

    def meet(tag: str) -> Any:
        async def handler(call: Call) -> StepAnswer:
            started.append(tag)
            if len(started) == 3:
                everyone_in.set()
            # Run one after another, the first step would wait here forever.
            await asyncio.wait_for(everyone_in.wait(), 5)
            return answer({"tag": tag})

        return handler

    steps = ScriptedSteps({A: meet("a"), B: meet("b"), C: meet("c")})
    graph = make_graph(
        {"root": {"routerType": "Ensemble", "steps": [step("a"), step("b"), step("c")]}}
    )
    status, body = await route(GraphRouter(graph, steps))
    assert status == 200
    assert body == {"0": {"tag": "a"}, "1": {"tag": "b"}, "2": {"tag": "c"}}


async def test_ensemble_hard_failure_decides_and_soft_failure_is_merged() -> None:
    steps = ScriptedSteps({A: tagged("a")})
    steps.answers(B, {"error": "soft trouble"}, status=500)
    steps.on(C, lambda call: StepAnswer(502, {}, b"bad gateway"))
    soft = make_graph(
        {
            "root": {
                "routerType": "Ensemble",
                "steps": [step("a", name="a"), step("b", name="b"), step("c", name="c")],
            }
        }
    )
    status, body = await route(GraphRouter(soft, steps))
    assert status == 200
    assert body == {
        "a": {"from": "a", "got": INPUT},
        "b": {"error": "soft trouble"},
        "c": {"error": "502 bad gateway"},
    }
    hard = make_graph(
        {
            "root": {
                "routerType": "Ensemble",
                "steps": [step("a"), step("b", name="b", dependency="Hard")],
            }
        }
    )
    status, body = await route(GraphRouter(hard, steps))
    assert (status, body) == (500, {"error": "node root, step 2 (b): 500 soft trouble"})


async def test_an_ensemble_answer_that_is_not_a_json_object_is_a_502_naming_the_step() -> None:
    steps = ScriptedSteps({A: tagged("a")})
    steps.answers(B, [1, 2, 3])
    graph = make_graph({"root": {"routerType": "Ensemble", "steps": [step("a"), step("b")]}})
    status, body = await route(GraphRouter(graph, steps))
    assert status == 502
    assert body["error"].startswith("node root, step 2 (b): answered with a body that is not")


async def test_an_ensemble_step_that_cannot_be_reached_cancels_the_others() -> None:
    cancelled = asyncio.Event()

    async def stuck(call: Call) -> StepAnswer:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    def refuse(call: Call) -> StepAnswer:
        raise StepUnreachable(f"{call.url} unreachable: connection refused")

    steps = ScriptedSteps({A: stuck, B: refuse})
    graph = make_graph({"root": {"routerType": "Ensemble", "steps": [step("a"), step("b")]}})
    status, body = await route(GraphRouter(graph, steps))
    assert status == 502
    assert body == {"error": f"node root, step 2 (b): {B} unreachable: connection refused"}
    assert cancelled.is_set()


# -- Splitter --------------------------------------------------------------------------------


async def test_splitter_sends_80_20_over_1000_requests_within_5_points() -> None:
    steps = ScriptedSteps({A: tagged("a"), B: tagged("b")})
    graph = make_graph(
        {
            "root": {
                "routerType": "Splitter",
                "steps": [step("a", weight=80), step("b", weight=20)],
            }
        }
    )
    router = GraphRouter(graph, steps, rng=random.Random(20260612))
    for _ in range(1000):
        assert (await router.route(b"{}", {})).status == 200
    share_a = len(steps.calls_to(A)) / 1000
    assert 0.75 <= share_a <= 0.85
    assert len(steps.calls) == 1000


# -- nested nodes ----------------------------------------------------------------------------


async def test_a_node_step_runs_that_node_and_errors_inside_name_the_inner_node() -> None:
    steps = ScriptedSteps({A: tagged("a"), B: tagged("b")})
    steps.on(C, lambda call: StepAnswer(500, {}, b'{"error": "breed model crashed"}'))
    graph = make_graph(
        {
            "root": {
                "routerType": "Sequence",
                "steps": [
                    step("a"),
                    {"nodeName": "breeds", "data": "$response", "dependency": "Hard"},
                    step("d"),
                ],
            },
            "breeds": {
                "routerType": "Switch",
                "steps": [
                    step("b", condition="got.instances.#(#==1)"),
                    step("c", name="poodle", condition="from"),
                ],
            },
        }
    )
    status, body = await route(GraphRouter(graph, steps))
    assert [call.url for call in steps.calls] == [A, C]
    assert steps.calls[1].json == {"from": "a", "got": INPUT}
    assert status == 500
    assert body == {"error": "node breeds, step 2 (poodle): 500 breed model crashed"}


# -- failures without an answer ----------------------------------------------------------------


async def test_a_step_that_times_out_is_a_504_naming_it_with_the_graphs_timeout() -> None:
    def slow(call: Call) -> StepAnswer:
        raise StepTimedOut(f"no answer from {call.url} within {call.timeout:g}s")

    steps = ScriptedSteps({A: tagged("a"), B: slow})
    graph = make_graph(
        {"root": {"routerType": "Sequence", "steps": [step("a"), step("b", name="xgboost-iris")]}},
        routerTimeouts={"serviceClient": 7},
    )
    status, body = await route(GraphRouter(graph, steps))
    assert [call.timeout for call in steps.calls] == [7.0, 7.0]
    assert status == 504
    assert body == {"error": f"node root, step 2 (xgboost-iris): no answer from {B} within 7s"}


async def test_the_platforms_default_timeout_applies_when_the_graph_sets_none() -> None:
    steps = ScriptedSteps({A: tagged("a")})
    graph = make_graph({"root": {"routerType": "Sequence", "steps": [step("a")]}})
    await route(GraphRouter(graph, steps, settings=RouterSettings(default_step_timeout=2.5)))
    await route(GraphRouter(graph, steps))
    assert [call.timeout for call in steps.calls] == [2.5, None]


async def test_a_service_that_is_not_deployed_is_a_503_naming_the_step() -> None:
    steps = ScriptedSteps({A: tagged("a")})
    resolver = GatewayResolver(namespace="default", services={"a"})
    graph = make_graph(
        {"root": {"routerType": "Sequence", "steps": [step("a"), step("xgboost-iris")]}}
    )
    status, body = await route(GraphRouter(graph, steps, resolver))
    assert status == 503
    assert body == {
        "error": "node root, step 2 (xgboost-iris): InferenceService xgboost-iris is not "
        "deployed in namespace default"
    }


# -- headers and URLs ------------------------------------------------------------------------


async def test_propagated_headers_and_one_request_id_reach_every_step() -> None:
    steps = ScriptedSteps({A: tagged("a"), B: tagged("b")})
    graph = make_graph({"root": {"routerType": "Ensemble", "steps": [step("a"), step("b")]}})
    settings = RouterSettings(propagate_headers=("^authorization$", "x-tenant-.*", "content-.*"))
    router = GraphRouter(graph, steps, settings=settings)
    headers = {
        "Authorization": "Bearer t",
        "X-Tenant-Id": "7",
        "Cookie": "secret",
        "Content-Length": "999",
        "Content-Type": "application/json",
    }
    response = await router.route(orjson.dumps(INPUT), headers)
    request_id = response.headers["x-request-id"]
    assert uuid.UUID(request_id)
    for call in steps.calls:
        assert call.headers == {
            "authorization": "Bearer t",
            "x-tenant-id": "7",
            "x-request-id": request_id,
            "content-type": "application/json",
        }
    response = await router.route(b"{}", {"X-Request-ID": "abc"})
    assert response.headers["x-request-id"] == "abc"
    assert {call.headers["x-request-id"] for call in steps.calls[2:]} == {"abc"}


async def test_service_steps_go_to_the_predict_path_of_the_requests_protocol() -> None:
    steps = ScriptedSteps()
    url = "http://127.0.0.1:9/custom/endpoint"
    for target in (service_url("a"), service_url("a", "v2"), url):
        steps.on(target, tagged(target))
    graph = make_graph(
        {"root": {"routerType": "Sequence", "steps": [step("a"), {"serviceUrl": url}]}}
    )
    router = GraphRouter(graph, steps)
    await router.route(b"{}", {}, path="/")
    await router.route(b"{}", {}, path="/v1/models/g:predict")
    await router.route(b"{}", {}, path="/v2/models/g/infer")
    assert [call.url for call in steps.calls] == [
        "http://a.default.svc.cluster.local/v1/models/a:predict",
        url,
        "http://a.default.svc.cluster.local/v1/models/a:predict",
        url,
        "http://a.default.svc.cluster.local/v2/models/a/infer",
        url,
    ]


def test_the_gateway_resolver_sends_to_the_gateway_with_the_services_host() -> None:
    resolver = GatewayResolver(
        namespace="team",
        domain="example.com",
        gateway="127.0.0.1:8080",
        protocols={"xgb": "v2"},
        model_names={"xgb": "xgboost"},
    )
    target = resolver("xgb", "v1")
    assert target.url == "http://127.0.0.1:8080/v2/models/xgboost/infer"
    assert target.host == "xgb.team.example.com"
    plain = GatewayResolver(namespace="team", domain="example.com")("iris", "v2")
    assert (plain.url, plain.host) == ("http://iris.team.example.com/v2/models/iris/infer", None)


async def test_the_gateway_host_goes_in_the_host_header() -> None:
    steps = ScriptedSteps({"http://gw:80/v1/models/a:predict": tagged("a")})
    resolver = GatewayResolver(namespace="default", domain="example.com", gateway="gw:80")
    graph = make_graph({"root": {"routerType": "Sequence", "steps": [step("a")]}})
    await route(GraphRouter(graph, steps, resolver))
    assert steps.calls[0].headers["host"] == "a.default.example.com"


async def test_map_predictions_to_instances_renames_the_key_for_that_step() -> None:
    steps = ScriptedSteps({B: tagged("b")})
    steps.answers(A, {"predictions": [1, 0], "model_name": "a"})
    graph = make_graph(
        {
            "root": {
                "routerType": "Sequence",
                "steps": [
                    step("a"),
                    step("b", data="$response", mapPredictionsToInstances=True),
                ],
            }
        }
    )
    status, body = await route(GraphRouter(graph, steps))
    assert status == 200
    assert body["got"] == {"instances": [1, 0], "model_name": "a"}


# -- graphs the router refuses ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ({"first": {"routerType": "Sequence", "steps": [step("a")]}}, "no 'root' node"),
        ({"root": {"routerType": "Sequence", "steps": [{"nodeName": "nope"}]}}, "no node 'nope'"),
        (
            {
                "root": {"routerType": "Sequence", "steps": [{"nodeName": "x"}]},
                "x": {"routerType": "Switch", "steps": [{"nodeName": "root", "condition": "a"}]},
            },
            "cycle: root -> x -> root",
        ),
        (
            {"root": {"routerType": "Switch", "steps": [step("a", condition="a.@keys")]}},
            r"spec.nodes.root.steps\[0\].condition: condition 'a.@keys'",
        ),
        ({"root": {"routerType": "Splitter", "steps": [step("a")]}}, "positive weights"),
        ({"root": {"routerType": "Fanout", "steps": []}}, "routerType"),
    ],
)
def test_graphs_the_router_cannot_run_are_refused_at_construction(
    nodes: dict[str, Any], message: str
) -> None:
    with pytest.raises(GraphSpecError, match=message):
        GraphRouter(make_graph(nodes), ScriptedSteps())


def test_a_propagate_pattern_that_is_not_a_regex_is_refused() -> None:
    graph = make_graph({"root": {"routerType": "Sequence", "steps": [step("a")]}})
    with pytest.raises(GraphSpecError, match="not a regular expression"):
        GraphRouter(graph, ScriptedSteps(), settings=RouterSettings(propagate_headers=("(",)))


# -- metrics ---------------------------------------------------------------------------------


async def test_metrics_count_and_time_every_node_and_step() -> None:
    registry = CollectorRegistry()
    steps = ScriptedSteps({A: tagged("a")})
    steps.answers(B, {"error": "down"}, status=503)
    graph = make_graph(
        {
            "root": {
                "routerType": "Sequence",
                "steps": [step("a", name="first"), {"nodeName": "inner"}],
            },
            "inner": {"routerType": "Sequence", "steps": [step("b")]},
        },
        name="iris-chain",
    )
    ticks = itertools.count()
    router = GraphRouter(
        graph, steps, metrics=GraphMetrics(registry), clock=lambda: float(next(ticks))
    )
    for _ in range(3):
        await route(router)

    def value(metric: str, **labels: str) -> float | None:
        return registry.get_sample_value(metric, {"graph": "iris-chain", **labels})

    assert value("modelhost_graph_node_requests_total", node="root") == 3
    assert value("modelhost_graph_node_requests_total", node="inner") == 3
    assert value("modelhost_graph_node_errors_total", node="root", code="503") == 3
    first = {"node": "root", "step": "1", "name": "first"}
    assert value("modelhost_graph_step_requests_total", **first) == 3
    assert value("modelhost_graph_step_errors_total", **first, code="503") is None
    assert value("modelhost_graph_step_duration_seconds_count", **first) == 3
    assert value("modelhost_graph_step_duration_seconds_sum", **first) == 3.0  # one tick each
    inner = {"node": "inner", "step": "1", "name": "b"}
    assert value("modelhost_graph_step_errors_total", **inner, code="503") == 3
    nested = {"node": "root", "step": "2", "name": "inner"}
    assert value("modelhost_graph_step_errors_total", **nested, code="503") == 3
