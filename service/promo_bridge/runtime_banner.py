"""The effective configuration, as the `service_config` start-up line shows it.

Secrets never appear: a SecretStr shows only whether it is set, and the Capillary base URL
keeps its scheme, host, port and path (the settings refuse anything else in it, and this
holds should that ever change).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from pydantic import SecretStr

from promo_bridge.settings import Settings

REDACTED: Final = "***"


def safe_url(url: str) -> str:
    """Scheme, host, port and path of `url`: whatever else it carries may be a secret."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def effective_config(settings: Settings) -> dict[str, Any]:
    """Every setting's value, by field name, with secrets redacted (see the module docstring)."""
    shown: dict[str, Any] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            shown[name] = REDACTED
        elif isinstance(value, Path):
            shown[name] = str(value)
        elif isinstance(value, Enum):
            # As the variables spell them.
            shown[name] = value.value
        else:
            shown[name] = value
    shown["capillary_base_url"] = safe_url(settings.capillary_base_url)
    return shown
