"""The WSGI entry for production servers, configured by the environment (see README, "Use it in Label Studio").

    MINIGPT_MODEL=weights/model gunicorn --workers 1 --threads 8 --timeout 0 --bind 0.0.0.0:9090 ml_backend.wsgi:app

Each worker process loads the model once, when gunicorn imports this module.
"""

from __future__ import annotations

from .server import create_app
from .settings import BackendSettings, build_backend, configure_logging

configure_logging()

_settings = BackendSettings.from_env()
app = create_app(build_backend(_settings), basic_auth=_settings.basic_auth)
