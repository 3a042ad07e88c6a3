"""The front-desk HTTP gateway: window terminals report events over authenticated HTTP.

``hallstats gateway`` serves :func:`create_app`; ``hallstats terminals`` manages the
credentials (:mod:`gateway.auth`). Same event contract and exactness as the worker:
validation by :mod:`schemas.events`, answers only after Kafka acknowledged.
"""

from gateway.app import create_app, serve
from gateway.auth import TokenStore

__all__ = ["TokenStore", "create_app", "serve"]
