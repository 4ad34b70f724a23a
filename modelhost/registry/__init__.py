"""The model registry: Kubeflow Model Registry's REST API over SQLite or PostgreSQL."""

from modelhost.registry.app import API_PREFIXES, RegistryApp, RegistrySettings
from modelhost.registry.service import RegistryService
from modelhost.registry.store import RegistryConflict, RegistryStore, ResourceNotFound

__all__ = [
    "API_PREFIXES",
    "RegistryApp",
    "RegistryConflict",
    "RegistryService",
    "RegistrySettings",
    "RegistryStore",
    "ResourceNotFound",
]
