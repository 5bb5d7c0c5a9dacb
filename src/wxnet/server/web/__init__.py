"""Web WeChat: the ``/cgi-bin/mmwebwx-bin/*`` API, QR login and the web client page."""

from wxnet.server.web.api import WebApi, WebConfig, setup_web
from wxnet.server.web.backend import Backend, DeviceSession

__all__ = ["Backend", "DeviceSession", "WebApi", "WebConfig", "setup_web"]
