"""The voice catalog: which `voice_id`s a call may name, and the language and style of each.

Read from `config/voices.json` (package data of the `config` package) on first use and kept.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from batchcalls.domain.errors import ConfigurationError

CATALOG_PACKAGE = "config"
CATALOG_FILE = "voices.json"


@functools.cache
def voice_catalog() -> dict[str, dict[str, Any]]:
    """`{voice_id: {"language": ..., "style": ..., "description": ...}}`, loaded once.

    The same dict is returned on every call: treat it as read-only.
    """
    text = resources.files(CATALOG_PACKAGE).joinpath(CATALOG_FILE).read_text(encoding="utf-8")
    try:
        catalog = json.loads(text)
    except ValueError as e:
        raise ConfigurationError(f"{CATALOG_PACKAGE}/{CATALOG_FILE} is not valid JSON: {e}") from e
    if not isinstance(catalog, dict) or not all(isinstance(voice, dict) for voice in catalog.values()):
        raise ConfigurationError(f"{CATALOG_PACKAGE}/{CATALOG_FILE} must map each voice_id to an object")
    return catalog
