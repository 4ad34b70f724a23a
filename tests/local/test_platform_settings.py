"""The embedded platform's settings refuse what the platform cannot carry out."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelhost import errors
from modelhost.control import PlatformConfig
from modelhost.local.settings import PlatformSettings


def test_a_storage_spec_secret_is_refused_with_the_setting_named(tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidInput, match="storage_spec_secret"):
        PlatformSettings(home=tmp_path, config=PlatformConfig(storage_spec_secret="storage-config"))


def test_the_default_config_is_accepted(tmp_path: Path) -> None:
    assert PlatformSettings(home=tmp_path).config.storage_spec_secret is None
