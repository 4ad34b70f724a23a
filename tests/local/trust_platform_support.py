"""The logged InferenceService that the trust tests on the embedded platform deploy."""

from __future__ import annotations

# The iris logistic regression from the GCS emulator (v2), its traffic logged into the
# platform's built-in trust sink; named "credit" as the trust tests read it.
SERVICE = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: credit
spec:
  predictor:
    logger:
      mode: all
      url: modelhost://trust
    model:
      modelFormat: {name: sklearn}
      protocolVersion: v2
      storageUri: gs://kfserving-examples/models/sklearn/1.0/model
"""
