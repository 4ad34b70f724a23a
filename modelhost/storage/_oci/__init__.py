"""Models shipped in OCI registries: ``oci://`` images (KServe's modelcars) and ORAS artifacts.

The source itself is :class:`~modelhost.storage._oci.source.OciSource`; the other modules are
its parts: the URI (``reference``), the registry credentials (``credentials``), the registry
protocol (``client``) and the confined unpacking of layers (``unpack``).
"""

from __future__ import annotations

from .source import OciSource

__all__ = ["OciSource"]
