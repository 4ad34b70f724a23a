"""One settings object for the server, built from defaults, the environment and CLI flags.

This package is the only place that reads the environment, and only when asked to
(:meth:`ServerSettings.from_env`, :meth:`StorageSettings.from_env`); every other component
gets its settings passed in. Flag names follow KServe's model server (``--http_port``),
with dashed aliases (``flags``); the listeners' limits have their own module (``limits``).
"""

from __future__ import annotations

from modelhost.settings.flags import (
    add_server_arguments,
    parse_known_server_args,
    settings_from_args,
)
from modelhost.settings.limits import Http1Limits, Http2Limits
from modelhost.settings.server import BatchSettings, ServerSettings, default_home
from modelhost.settings.storage import StorageSettings
from modelhost.settings.values import ENV_PREFIX, parse_size

__all__ = [
    "ENV_PREFIX",
    "BatchSettings",
    "Http1Limits",
    "Http2Limits",
    "ServerSettings",
    "StorageSettings",
    "add_server_arguments",
    "default_home",
    "parse_known_server_args",
    "parse_size",
    "settings_from_args",
]
