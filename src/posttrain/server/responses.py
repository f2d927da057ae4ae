"""The JSON response class every route uses: orjson bytes, naive datetimes taken as UTC."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse as _StarletteJSON


class JSONResponse(_StarletteJSON):  # a JSONResponse subclass, so OpenAPI documents JSON bodies
    """Render content with orjson: datetimes as ISO 8601, naive ones taken as UTC."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NAIVE_UTC | orjson.OPT_SERIALIZE_NUMPY)
