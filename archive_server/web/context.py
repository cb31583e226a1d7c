"""What every endpoint of the web application may use, held by the app
(``request.app.state.ctx``)."""
from __future__ import annotations

import dataclasses
import pathlib

from archive_server.blobstores import BlobStore
from archive_server.config import ArchiveConfig
from archive_server.db import Database
from archive_server.errors import ConfigError
from archive_server.metrics import Exporter
from archive_server.logins import Logins
from archive_server.oidc import OidcClient
from archive_server.previews import PreviewCache


@dataclasses.dataclass
class WebContext:
    db: Database
    config: ArchiveConfig
    logins: Logins
    oidc: OidcClient | None = None
    blobs: BlobStore | None = None
    # TLS on the endpoint: cookies are Secure either way; HSTS only with TLS.
    tls: bool = False
    # Thumbnails and previews made in this process (previews.py: memory only, bounded).
    previews: PreviewCache = dataclasses.field(default_factory=PreviewCache)
    # GET /metrics: what it answers, and the token scrapers must send (None: loopback only).
    metrics: Exporter | None = None
    metrics_token: str | None = None

    @classmethod
    def for_archive(cls, db: Database, config: ArchiveConfig, logins: Logins | None = None,
                    blobs: BlobStore | None = None) -> "WebContext":
        return cls(db=db, config=config, logins=logins or Logins(db, config.login),
                   oidc=OidcClient(config.oidc) if config.oidc is not None else None,
                   blobs=blobs, tls=config.tls.enabled, metrics=Exporter(db),
                   metrics_token=read_metrics_token(config.metrics_token_file))


def read_metrics_token(path: pathlib.Path | None) -> str | None:
    """The token of ``metrics_token_file`` (None when not set); unreadable or empty is a ConfigError."""
    if path is None:
        return None
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read metrics_token_file {path}: {getattr(e, 'strerror', None) or e}") from None
    if len(token) < 16:
        raise ConfigError(f"metrics_token_file {path} must hold a token of at least 16 characters "
                          "(e.g. `openssl rand -hex 32`)")
    return token
