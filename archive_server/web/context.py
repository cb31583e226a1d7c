"""What every endpoint of the web application may use, held by the app
(``request.app.state.ctx``)."""
from __future__ import annotations

import dataclasses

from archive_server.blobstores import BlobStore
from archive_server.config import ArchiveConfig
from archive_server.db import Database
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

    @classmethod
    def for_archive(cls, db: Database, config: ArchiveConfig, logins: Logins | None = None,
                    blobs: BlobStore | None = None) -> "WebContext":
        return cls(db=db, config=config, logins=logins or Logins(db, config.login),
                   oidc=OidcClient(config.oidc) if config.oidc is not None else None,
                   blobs=blobs, tls=config.tls.enabled)
