"""The backend as a WSGI app configured by the environment, for a WSGI server of your own choosing.

The documented deployment is `minigpt-annotate serve` (README, Production): it runs this same app on waitress with
the request limits and server settings of `ml_backend.settings`. Another server must read each request whole before
giving it to a thread (or sit behind a proxy that does, such as nginx), or a few slow clients can starve it; and it
must bound bodies to `RequestLimits.largest_body`. Each process loads the model once, when it imports this module.
"""

from __future__ import annotations

from .server import create_app
from .settings import BackendSettings, RequestLimits, build_backend, configure_logging

configure_logging()

_settings = BackendSettings.from_env()
_limits = RequestLimits.from_env()
app = create_app(build_backend(_settings, limits=_limits), basic_auth=_settings.basic_auth, limits=_limits)
