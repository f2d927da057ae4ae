"""The HTTP server: ``create_app(project)`` builds the FastAPI app that ``posttrain serve`` runs."""

from posttrain.server.app import create_app

__all__ = ["create_app"]
