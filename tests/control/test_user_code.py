"""Which objects run code of the user's choosing (only an admin may apply them)."""

from __future__ import annotations

import pytest

from modelhost import control


def parse(text: str) -> object:
    [obj] = control.parse_documents(text)
    return obj


ISVC = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: s
spec:
  predictor:
"""


def test_a_built_in_runtime_with_data_flags_runs_no_user_code() -> None:
    obj = parse(
        ISVC
        + """    minReplicas: 0
    model:
      modelFormat: {name: sklearn}
      storageUri: gs://bucket/model
      args: ["--max_batch_size", "32", "--model_name=iris", "--max_latency_ms", "-1", "--no-distil"]
      env: [{name: OMP_NUM_THREADS, value: "1"}]
"""
    )
    assert control.user_code(obj) == []


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (
            "    containers: [{name: c, image: x, command: [python3, app.py]}]\n",
            "spec.predictor.containers",
        ),
        (
            "    sklearn: {storageUri: gs://b/m, command: [sh, -c, id]}\n",
            "spec.predictor.sklearn.command",
        ),
        (
            "    sklearn: {storageUri: gs://b/m, args: [--model_class, evil:Model]}\n",
            "--model_class",
        ),
        (
            "    sklearn: {storageUri: gs://b/m, args: ['--option=trust_remote_code=true']}\n",
            "--option",
        ),
        (
            "    sklearn: {storageUri: gs://b/m, env: [{name: PYTHONPATH, value: /tmp}]}\n",
            "PYTHONPATH",
        ),
        (
            "    sklearn: {storageUri: gs://b/m, env: [{name: LD_PRELOAD, value: /x.so}]}\n",
            "LD_PRELOAD",
        ),
        (
            "    initContainers: [{name: i, image: x}]\n    sklearn: {storageUri: gs://b/m}\n",
            "initContainers",
        ),
    ],
)
def test_fields_that_run_code_are_named(spec: str, field: str) -> None:
    found = control.user_code(parse(ISVC + spec))
    assert found, spec
    assert any(field in reason for reason in found), found


def test_a_transformer_and_a_canary_are_checked_too() -> None:
    obj = parse(
        ISVC
        + """    sklearn: {storageUri: gs://b/m}
  transformer:
    containers: [{name: t, image: x}]
"""
    )
    assert any(r.startswith("spec.transformer.containers") for r in control.user_code(obj))


def test_a_serving_runtime_always_needs_an_admin() -> None:
    runtime = parse(
        """
apiVersion: serving.kserve.io/v1alpha1
kind: ClusterServingRuntime
metadata: {name: r}
spec:
  supportedModelFormats: [{name: x}]
  containers: [{name: c, image: x}]
"""
    )
    assert control.user_code(runtime)
