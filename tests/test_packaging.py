"""pyproject.toml says what modelhost needs: floors the code really imports with, and no less.

The generated gRPC code refuses to import under a protobuf or grpcio older than the
``grpcio-tools`` that made it (``ValidateProtobufRuntimeVersion``, ``GRPC_GENERATED_VERSION``),
so those floors must equal the versions it checks: regenerating with a newer grpcio-tools
without raising them fails here, not in a user's ``pip install``. Every third-party module
imported outright must be a declared dependency, not one that happens to arrive with another.

Importing at exactly the floors needs those old wheels, which CI's offline install does not
have: ``MODELHOST_TEST_FLOORS=1`` runs that check where an index can be reached.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ROOT / "modelhost" / "protocol" / "_generated"
# Optional extras a module of modelhost may import from; test and dev tools may not count.
TOOL_EXTRAS = {"test", "dev"}
# The packages `import modelhost` and its servers need at their floors.
IMPORT_FLOOR_PACKAGES = (
    "protobuf",
    "grpcio",
    "grpcio-health-checking",
    "grpcio-reflection",
    "httptools",
)


def project() -> Any:
    with open(ROOT / "pyproject.toml", "rb") as file:
        return tomllib.load(file)["project"]


def requirements(*, extras: bool, include: set[str] | None = None) -> list[Requirement]:
    """The core dependencies, and with ``extras`` those of the extras in ``include`` (all)."""
    table = project()
    raw = list(table["dependencies"])
    if extras:
        for name, group in table["optional-dependencies"].items():
            if include is None or name in include:
                raw += group
    parsed = [Requirement(r) for r in raw]
    return [r for r in parsed if r.name != "modelhost"]  # an extra naming other extras


def floor(name: str) -> Version:
    """The version in ``name``'s ``>=`` specifier among the core dependencies."""
    [requirement] = [r for r in requirements(extras=False) if canonicalize_name(r.name) == name]
    [lower] = [spec.version for spec in requirement.specifier if spec.operator == ">="]
    return Version(lower)


def protobuf_checked_by_generated_code() -> Version:
    versions = set()
    for module in GENERATED.glob("*_pb2.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "ValidateProtobufRuntimeVersion"
            ):
                major, minor, patch, suffix = (ast.literal_eval(a) for a in node.args[1:5])
                versions.add(Version(f"{major}.{minor}.{patch}{suffix}"))
    assert len(versions) == 1, f"the generated modules disagree or check nothing: {versions}"
    return versions.pop()


def grpcio_checked_by_generated_code() -> Version:
    versions = set()
    for module in GENERATED.glob("*_pb2_grpc.py"):
        for node in ast.parse(module.read_text()).body:
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "GRPC_GENERATED_VERSION"
            ):
                versions.add(Version(ast.literal_eval(node.value)))
    assert len(versions) == 1, f"the generated stubs disagree or check nothing: {versions}"
    return versions.pop()


def test_the_protobuf_floor_is_the_version_the_generated_code_checks() -> None:
    assert floor("protobuf") == protobuf_checked_by_generated_code()


def test_the_grpcio_floors_are_the_version_the_generated_stubs_check() -> None:
    generated = grpcio_checked_by_generated_code()
    assert floor("grpcio") == generated
    # Released together with grpcio, and they carry protobuf code of the same age.
    assert floor("grpcio-health-checking") == generated
    assert floor("grpcio-reflection") == generated


def test_every_module_imported_outright_is_a_declared_dependency() -> None:
    runtime_extras = set(project()["optional-dependencies"]) - TOOL_EXTRAS
    declared = {
        canonicalize_name(r.name) for r in requirements(extras=True, include=runtime_extras)
    }
    providers = importlib.metadata.packages_distributions()
    undeclared = {}
    for top, where in _outright_imports().items():
        dists = {canonicalize_name(d) for d in providers.get(top, [top])}
        if not dists & declared:
            undeclared[top] = where
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_installed_versions_are_in_the_declared_ranges() -> None:
    # What CI installs is what the tests ran against: a range that excludes it is untested.
    outside = []
    for requirement in requirements(extras=True):
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            continue  # an extra this environment does not have (vllm)
        if not requirement.specifier.contains(version, prereleases=True):
            outside.append(f"{requirement} (installed: {version})")
    assert not outside


def test_tritonclient_stops_before_the_release_that_changed_bf16() -> None:
    # tritonclient 2.70 (Triton 26.06) sends BF16 only from ml_dtypes.bfloat16 arrays and no
    # longer casts float32; the BF16 tests are written against the releases before it.
    [triton] = [r for r in requirements(extras=True, include={"test"}) if r.name == "tritonclient"]
    assert triton.specifier.contains("2.41.0")
    assert not triton.specifier.contains("2.70.0")


@pytest.mark.skipif(
    os.environ.get("MODELHOST_TEST_FLOORS") != "1",
    reason="installs the floor versions from an index: set MODELHOST_TEST_FLOORS=1",
)
def test_modelhost_imports_with_its_floor_versions(tmp_path: Path) -> None:
    pins = [f"{name}=={floor(name)}" for name in IMPORT_FLOOR_PACKAGES]
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
    subprocess.run([*install, "--target", str(tmp_path), *pins], check=True)
    check = (
        "import google.protobuf, grpc, httptools\n"
        "print(google.protobuf.__version__, grpc.__version__, httptools.__version__)\n"
        "import modelhost.protocol._generated.grpc_predict_v2_pb2_grpc\n"
        "import modelhost.server.model_server, modelhost.transport.http1_proxy\n"
    )
    # Ahead of site-packages on the path, the floor versions shadow the installed ones.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-c", check], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    imported = [Version(v) for v in done.stdout.split()]
    assert imported == [floor(name) for name in ("protobuf", "grpcio", "httptools")]


def _outright_imports() -> dict[str, str]:
    """Each top-level third-party module imported, and a file importing it, leaving out
    imports inside ``try: ... except ImportError`` (optional by design)."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "modelhost").rglob("*.py")):
        if GENERATED in path.parents:
            continue
        tree = ast.parse(path.read_text())
        guarded = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.Try) and _catches_import_error(node)
            for statement in node.body
            for inner in ast.walk(statement)
        }
        for node in ast.walk(tree):
            if id(node) in guarded:
                continue
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("modelhost", "__future__"):
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def _catches_import_error(node: ast.Try) -> bool:
    for handler in node.handlers:
        kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        names = {k.id for k in kinds if isinstance(k, ast.Name)}
        if names & {"ImportError", "ModuleNotFoundError"}:
            return True
    return False
