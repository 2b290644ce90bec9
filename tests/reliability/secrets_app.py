"""An app for ``litestar --app tests.reliability.secrets_app:app obs ...`` in tests/reliability/test_secrets_printed.py.

Its configuration is what the environment says (``ObservabilityConfig.from_env()``, as in a real service).
With ``SECRETS_APP_CODE_VALUES`` set to a JSON object of dotted field names and values, those fields are
set in code on top of it, the way a service that builds part of its config itself would.
"""

from __future__ import annotations

import json
import os
from typing import Any

import msgspec
from litestar import Litestar, get

from litestar_omnii_obs import ObservabilityConfig, ObservabilityPlugin


@get("/")
async def index() -> str:
    return "ok"


def _config() -> ObservabilityConfig:
    config = ObservabilityConfig.from_env()
    overrides: dict[str, Any] = json.loads(os.environ.get("SECRETS_APP_CODE_VALUES", "{}"))
    if not overrides:
        return config
    data = msgspec.to_builtins(config)
    for field, value in overrides.items():
        section, _, name = field.rpartition(".")
        (data[section] if section else data)[name] = value
    return msgspec.convert(data, ObservabilityConfig)


app = Litestar(route_handlers=[index], plugins=[ObservabilityPlugin(_config())])
