"""The console's jobs page(s); being built."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/jobs")
