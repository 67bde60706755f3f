"""The nixjail HTTP API: a falcon app over the spool, served by waitress."""

from nixjail.api.app import create_app

__all__ = ["create_app"]
