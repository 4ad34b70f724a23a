"""The public API is one sorted ``__all__``, complete, and light to import."""

from __future__ import annotations

import subprocess
import sys

import modelhost


def test_all_is_sorted_and_complete() -> None:
    assert modelhost.__all__ == sorted(modelhost.__all__)
    # dir(): the names imported on first use are there before anything uses them.
    public = {name for name in dir(modelhost) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(modelhost, name)).__name__ == "module"}
    assert set(modelhost.__all__) - {"__version__"} == public - modules


def test_every_exported_name_resolves() -> None:
    for name in modelhost.__all__:
        assert getattr(modelhost, name) is not None


def test_import_reads_no_argv_and_loads_no_framework() -> None:
    code = (
        "import sys; sys.argv = ['x', '--http_port', 'not-a-number'];"
        "import modelhost, modelhost.runtimes.detect;"
        "assert not {'sklearn', 'xgboost', 'lightgbm', 'torch'} & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
