"""Schemathesis over ``/openapi.json`` of a running server: no request it makes is a 5xx.

A few hundred requests generated from the document (issue 14): conforming ones
(positive) and ones that break it (negative), about a random model name and about
the served iris model. The only 5xx allowed is a 501 the operation documents (an
explain without an explainer, load parameters).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from serving import RunningServer, start_server, stop_server

EXAMPLES = 300


@pytest.fixture(scope="module")
def iris_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from modelhost.runtimes.sklearn import SKLearnModel

    folder: Path = tmp_path_factory.mktemp("iris")
    x, y = load_iris(return_X_y=True)
    joblib.dump(LogisticRegression(max_iter=1000).fit(x, y), folder / "model.joblib")
    model = SKLearnModel("iris", folder)
    model.load()
    running = start_server([model], enable_grpc=False)
    yield running
    stop_server(running)


def case_strategies(running: RunningServer) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{running.http_url}/openapi.json")
    strategies = []
    for result in schema.get_all_operations():
        operation = result.ok()
        named = {"model_name": "iris"} if "{model_name}" in operation.path else None
        strategies.append(operation.as_strategy())
        strategies.append(operation.as_strategy(path_parameters=named))
        strategies.append(operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=named))
    return strategies


# v1 rows given as objects reach scikit-learn as a DataFrame, which it warns about.
@pytest.mark.filterwarnings("ignore:X has feature names:UserWarning")
def test_no_generated_request_is_a_server_error(iris_server: RunningServer) -> None:
    strategies = case_strategies(iris_server)
    statuses: dict[int, int] = {}

    @given(st.data())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same requests on every run: a failure reproduces
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    def run(data: st.DataObject) -> None:
        case = data.draw(st.one_of(strategies))
        response = case.call(base_url=iris_server.http_url, timeout=30)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        documented = case.operation.definition.raw["responses"]
        if response.status_code == 501 and "501" in documented:
            return
        case.validate_response(response, checks=[not_a_server_error])

    run()
    # The requests reached the model, not only the 404 of an unknown name.
    assert statuses.get(200, 0) > 10, statuses
    assert statuses.get(400, 0) > 10, statuses
