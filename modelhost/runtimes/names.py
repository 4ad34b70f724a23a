"""The runtimes' names, for what lists them without loading them (the CLI's help).

:mod:`modelhost.runtimes.detect` registers the runtimes themselves, and with them numpy and
the model layer; the command line imports this instead, so that ``modelhost apply`` and the
other commands that serve no model start without those.
"""

__all__ = ["RUNTIME_NAMES"]

# In detect's order of registration (a test keeps the two equal).
RUNTIME_NAMES = (
    *("sklearn", "xgboost", "lightgbm", "onnx", "pytorch", "huggingface"),
    *("mlflow", "catboost", "custom", "llm", "vllm"),
)
