"""`minigpt-annotate serve`: the backend on a threaded HTTP server, for one machine or a small team.

Production deployments run gunicorn on `ml_backend.wsgi:app` instead (see the Dockerfile).
"""

from __future__ import annotations

import logging
from pathlib import Path

from werkzeug.serving import make_server

from .media import MediaSettings
from .server import create_app
from .settings import BackendSettings, build_backend, configure_logging

log = logging.getLogger("ml_backend")


def serve(
    *,
    model: str | None,
    host: str = "127.0.0.1",
    port: int = 9090,
    corrections_dir: Path | None = None,
    score_threshold: float | None = None,
    model_version: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
) -> int:
    configure_logging()
    settings = BackendSettings.from_env(
        model=model,
        corrections_dir=corrections_dir,
        score_threshold=score_threshold,
        model_version=model_version,
        device=device,
        dtype=dtype,
    )
    media = MediaSettings.from_env()
    backend = build_backend(settings, media)
    app = create_app(backend, basic_auth=settings.basic_auth)
    server = make_server(host, port, app, threaded=True)
    log.info(
        "serving %s (version %s) on http://%s:%d; Label Studio at %s%s",
        settings.model,
        backend.model_version,
        host,
        server.server_port,
        media.label_studio_url or "(LABEL_STUDIO_URL not set: only local files and allowed hosts)",
        f"; corrections in {settings.corrections_dir}" if settings.corrections_dir else "",
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("stopped")
    finally:
        server.server_close()
    return 0
