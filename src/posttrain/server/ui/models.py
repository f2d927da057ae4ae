"""The console's models page(s); being built."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/models")
