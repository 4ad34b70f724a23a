"""The operator tests' cluster: kmock's Kubernetes API emulator, the operator in-process, time.

No kube-apiserver runs here, so the API is kmock's emulator (kopf's own test server: discovery,
create/patch/delete/list/watch kept in memory), extended with what an API server adds to
every object (uid, resourceVersion, generation, creationTimestamp); the Deployment
controller, the kubelet and the garbage collector are not there, so a test writes a
Deployment's or pod's status itself. The operator runs in the test's event loop with
looptime's fake clock, so its back-offs and resyncs pass in no real time.

Imported by the ``test_operator*.py`` modules (no tests here).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import kmock
import pytest
import pytest_asyncio

from modelhost.kube.client import Connection, KubeClient, Resource, resource_for
from modelhost.kube.operator import Operator, OperatorSettings

__all__ = [
    "ApiServer",
    "Cluster",
    "cluster",
    "deployment_available",
    "graph_document",
    "isvc_document",
    "no_leaked_tasks",
    "running_operator",
    "until",
]

# Every kind the emulator serves: the built-in ones the operator (and kopf) use, KServe's,
# KEDA's, Gateway API's and kopf's peering.
_VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}
RESOURCES: dict[str, kmock.ResourceInfo] = {
    "v1/namespaces": kmock.ResourceInfo(kind="Namespace", namespaced=False, verbs=_VERBS),
    "v1/events": kmock.ResourceInfo(kind="Event", namespaced=True, verbs=_VERBS),
    "v1/pods": kmock.ResourceInfo(
        kind="Pod", namespaced=True, subresources={"status"}, verbs=_VERBS
    ),
    "v1/services": kmock.ResourceInfo(
        kind="Service", namespaced=True, subresources={"status"}, verbs=_VERBS
    ),
    "apps/v1/deployments": kmock.ResourceInfo(
        kind="Deployment", namespaced=True, subresources={"status", "scale"}, verbs=_VERBS
    ),
    "autoscaling/v2/horizontalpodautoscalers": kmock.ResourceInfo(
        kind="HorizontalPodAutoscaler", namespaced=True, subresources={"status"}, verbs=_VERBS
    ),
    "policy/v1/poddisruptionbudgets": kmock.ResourceInfo(
        kind="PodDisruptionBudget", namespaced=True, subresources={"status"}, verbs=_VERBS
    ),
    "apiextensions.k8s.io/v1/customresourcedefinitions": kmock.ResourceInfo(
        kind="CustomResourceDefinition", namespaced=False, verbs=_VERBS
    ),
    "serving.kserve.io/v1beta1/inferenceservices": kmock.ResourceInfo(
        kind="InferenceService",
        singular="inferenceservice",
        shortnames={"isvc"},
        namespaced=True,
        subresources={"status"},
        verbs=_VERBS,
    ),
    "serving.kserve.io/v1alpha1/inferencegraphs": kmock.ResourceInfo(
        kind="InferenceGraph",
        singular="inferencegraph",
        shortnames={"ig"},
        namespaced=True,
        subresources={"status"},
        verbs=_VERBS,
    ),
    "serving.kserve.io/v1alpha1/servingruntimes": kmock.ResourceInfo(
        kind="ServingRuntime",
        singular="servingruntime",
        namespaced=True,
        verbs=_VERBS,
    ),
    "serving.kserve.io/v1alpha1/clusterservingruntimes": kmock.ResourceInfo(
        kind="ClusterServingRuntime",
        singular="clusterservingruntime",
        namespaced=False,
        verbs=_VERBS,
    ),
    "keda.sh/v1alpha1/scaledobjects": kmock.ResourceInfo(
        kind="ScaledObject",
        singular="scaledobject",
        namespaced=True,
        subresources={"status"},
        verbs=_VERBS,
    ),
    "gateway.networking.k8s.io/v1/httproutes": kmock.ResourceInfo(
        kind="HTTPRoute",
        singular="httproute",
        namespaced=True,
        subresources={"status"},
        verbs=_VERBS,
    ),
    "kopf.dev/v1/clusterkopfpeerings": kmock.ResourceInfo(
        kind="ClusterKopfPeering", singular="clusterkopfpeering", namespaced=False, verbs=_VERBS
    ),
    "kopf.dev/v1/kopfpeerings": kmock.ResourceInfo(
        kind="KopfPeering", singular="kopfpeering", namespaced=True, verbs=_VERBS
    ),
}


class ApiServer(kmock.KubernetesEmulator):
    """kmock's emulator, plus what a real API server writes into every object it stores.

    A create gets a uid, ``resourceVersion``, ``generation`` 1 and a creation time; every
    change gets the next ``resourceVersion``, and a change of ``spec`` the next generation
    (kopf patches with a ``test`` of the resourceVersion it saw, and reads the new one).
    """

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.versions = itertools.count(1)

    async def _handle(self, request: kmock.Request) -> Any:
        if request.resource is not None and isinstance(request.data, (dict, list)):
            if request.action == kmock.action.CREATE and isinstance(request.data, dict):
                meta = request.data.setdefault("metadata", {})
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("generation", 1)
                meta.setdefault("creationTimestamp", _now())
                meta["resourceVersion"] = str(next(self.versions))
            elif request.action == kmock.action.UPDATE and request.name is not None:
                self._versioned(request)
        return await super()._handle(request)

    def _versioned(self, request: kmock.Request) -> None:
        version = str(next(self.versions))
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return
        stored = self.objects[key]
        meta = stored.get("metadata", {})
        if isinstance(request.data, list):  # a JSON patch (kopf's): one more operation
            for operation in request.data:
                # A failed test is the API server's 422: kopf re-reads and tries again.
                if operation.get("op") == "test" and _pointer(stored.raw, operation["path"]) != (
                    operation.get("value")
                ):
                    raise kmock.KubernetesError(
                        status=422, reason="Invalid", message=f"test of {operation['path']} failed"
                    )
            op = "replace" if "resourceVersion" in meta else "add"
            request.data.append({"op": op, "path": "/metadata/resourceVersion", "value": version})
            return
        changes = request.data.setdefault("metadata", {})
        changes["resourceVersion"] = version
        if request.subresource is None and "spec" in request.data:
            changes["generation"] = int(meta.get("generation") or 1) + 1


def _pointer(document: Any, path: str) -> Any:
    """The value at a JSON pointer (RFC 6901), or None."""
    for part in path.split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(document, Mapping):
            document = document.get(part)
        elif isinstance(document, list) and part.isdigit() and int(part) < len(document):
            document = document[int(part)]
        else:
            return None
    return document


def _now() -> str:
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    return now.isoformat().replace("+00:00", "Z")


class Cluster:
    """The test's side of the API: a client (not the operator's) and the emulator's store."""

    def __init__(self, server: ApiServer, client: KubeClient) -> None:
        self.server = server
        self.client = client

    @property
    def url(self) -> str:
        return str(self.server.url)

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Any:
        """The stored object as a dict, or None."""
        resource = resource_for(api_version, kind)
        key = (_kmock_resource(resource), namespace, name)
        if key not in self.server.objects or self.server.objects[key].deleted:
            return None
        return json.loads(json.dumps(dict(self.server.objects[key].raw)))

    def all(self, kind: str, namespace: str = "ns") -> list[dict[str, Any]]:
        """Every stored object of ``kind`` in ``namespace``."""
        found = []
        for (_, ns, _), obj in self.server.objects.items():
            if ns == namespace and not obj.deleted and obj.get("kind") == kind:
                found.append(json.loads(json.dumps(dict(obj.raw))))
        return sorted(found, key=lambda o: o["metadata"]["name"])

    async def create(self, document: Mapping[str, Any]) -> dict[str, Any]:
        resource = resource_for(document["apiVersion"], document["kind"])
        namespace = document.get("metadata", {}).get("namespace")
        return await self.client._call(
            "POST",
            resource.path(namespace),
            data=json.dumps(document),
            content_type="application/json",
        )

    async def patch(
        self, api_version: str, kind: str, namespace: str | None, name: str, patch: Any, **kw: Any
    ) -> dict[str, Any]:
        return await self.client.merge_patch(
            resource_for(api_version, kind), namespace, name, patch, **kw
        )

    async def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        return await self.client.delete(resource_for(api_version, kind), namespace, name)

    async def make_available(self, revision: str, replicas: int = 1, namespace: str = "ns") -> None:
        """Be the Deployment controller: the revision's replicas are up."""
        await self.patch(
            "apps/v1",
            "Deployment",
            namespace,
            revision,
            {"status": deployment_available(replicas)},
            subresource="status",
        )


def deployment_available(replicas: int = 1) -> dict[str, Any]:
    """A Deployment's status once ``replicas`` are available (what its controller writes)."""
    return {
        "observedGeneration": 99,
        "replicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "updatedReplicas": replicas,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
        ],
    }


def isvc_document(
    predictor: Mapping[str, Any], *, name: str = "iris", namespace: str = "ns", **metadata: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace, **metadata},
        "spec": {"predictor": dict(predictor)},
    }


def graph_document(
    nodes: Mapping[str, Any], *, name: str = "chain", namespace: str = "ns", **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "InferenceGraph",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"nodes": dict(nodes), **spec},
    }


def _kmock_resource(resource: Resource) -> kmock.resource:
    return kmock.resource(resource.group, resource.version, resource.plural)


@pytest.fixture
def no_leaked_tasks() -> Any:
    """Fail the test if it leaves tasks behind (the operator must stop everything it starts)."""

    async def check(before: set[asyncio.Task[Any]]) -> None:
        current = asyncio.current_task()
        left = {t for t in asyncio.all_tasks() - before if t is not current and not t.done()}
        if left:
            await asyncio.wait(left, timeout=5)
        leaked = [t for t in left if not t.done()]
        assert not leaked, f"tasks left running: {leaked}"

    return check


@pytest_asyncio.fixture
async def cluster(kmock: ApiServer, no_leaked_tasks: Any) -> AsyncIterator[Cluster]:
    """The emulated API with every kind the operator uses, and a client for the test."""
    before = set(asyncio.all_tasks())
    for key, info in RESOURCES.items():
        kmock.resources[key] = info
    async with aiohttp.ClientSession() as session:
        yield Cluster(kmock, KubeClient(session, Connection(server=str(kmock.url))))
    await no_leaked_tasks(before)


@contextlib.asynccontextmanager
async def running_operator(cluster: Cluster, **settings: Any) -> AsyncIterator[Operator]:
    """An operator against ``cluster`` from start (ready) to a clean stop."""
    settings.setdefault("standalone", True)
    operator = Operator(OperatorSettings(api_server=cluster.url, **settings))
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(operator.run(stop_flag=stop, ready_flag=ready))
    waiter = asyncio.create_task(ready.wait())
    done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        waiter.cancel()
        await task  # it failed to start: raise why
    try:
        yield operator
    finally:
        stop.set()
        await task


async def until(
    check: Callable[[], Any] | Callable[[], Awaitable[Any]],
    *,
    timeout: float = 60.0,
    what: str = "the condition",
) -> Any:
    """Poll ``check`` until it returns something truthy (loop time: looptime makes it fast)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)
