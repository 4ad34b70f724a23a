"""The OpenAPI document of the REST API and the Swagger UI page that renders it."""

from __future__ import annotations

import functools
from typing import Any

from modelhost._version import __version__

__all__ = ["openapi_document", "swagger_html"]


@functools.cache
def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "modelhost", "version": __version__},
        "paths": {},
    }


def swagger_html() -> str:
    return "<!doctype html><title>modelhost API</title>"
