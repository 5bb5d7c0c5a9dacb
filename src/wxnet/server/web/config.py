"""Settings of the web side (the ``[web]`` section of the server's TOML config).

Every bound on what a web client (or anyone, before logging in) can make the server hold
is here, with its default; docs/server.md "Limits" lists them with their metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["WebConfig"]


@dataclass(frozen=True, slots=True)
class WebConfig:
    login_hold: float = 25.0  # login poll (< 60 s, as the clients wait); at most synccheck_max_wait
    login_recheck: float = 5.0  # with a bus: a held login poll reads its login again this often
    synccheck_hold: float = 25.0  # synccheck (5.1: <= ~30 s); set from synccheck_max_wait
    qr_ttl: float = 300.0
    session_ttl: float = 7 * 86400.0
    max_polls_per_session: int = 4
    contact_page: int = 500
    history_max_count: int = 100  # messages in one webwxhistory page (more is cut to it)
    history_max_scan: int = 2000  # log items one webwxhistory request reads at most
    # -- before login: /jslogin, /qrcode ------------------------------------------------
    qr_max_pending: int = 10_000  # pending QR logins in total (the oldest of the
    qr_pending_per_address: int = 16  # heaviest address makes room); per address (IPv6 /64)
    jslogin_rate: float = 0.2  # new QR logins per second and address, after a burst of
    jslogin_burst: int = 20
    qrcode_rate: float = 1.0  # QR images per second and address, after a burst of
    qrcode_burst: int = 30
    qrcode_cache: int = 4096  # rendered QR images kept (one per uuid)
    push_login_rate: float = 1 / 60  # push-login prompts per second and account (a phone
    push_login_burst: int = 3  # is not to be flooded), after a burst of
    # -- request bodies --------------------------------------------------------------------
    body_timeout: float = 30.0  # a JSON body must arrive within this
    upload_timeout: float = 120.0  # one webwxuploadmedia request's body, whole
    max_form_bytes: int = 16 << 10  # the non-file fields of one upload request, together
    # -- uploads (spooled to disk under <data>/web-spool) --------------------------------
    max_upload: int = 20 << 20  # one uploaded file
    max_chunk: int = (512 << 10) + (64 << 10)  # one multipart request's file part
    max_pending_uploads: int = 8  # per session: unfinished or not yet sent
    uploads_per_account: int = 16  # the same over all web sessions of an account
    upload_bytes_per_account: int = 64 << 20  # spooled bytes of an account
    upload_ttl: float = 3600.0  # an upload not finished and sent by then is deleted
