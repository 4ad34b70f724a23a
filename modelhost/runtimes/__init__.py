"""Framework runtimes: a ``Model`` per format, and the detection that picks one for a folder."""

from modelhost.runtimes.detect import RUNTIMES, build_model, detect_runtime

__all__ = ["RUNTIMES", "build_model", "detect_runtime"]
