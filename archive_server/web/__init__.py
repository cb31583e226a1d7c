"""The archive's HTTPS endpoint (``serve --http HOST:PORT``): logins, the JSON
API under ``/api/v1/`` and, growing here, the web client's pages.

Starlette (ASGI) served by uvicorn in a thread of the archive process, beside
gRPC, on the same :class:`~archive_server.db.Database`. The rooms:

    app.py        create_app(): routes, error handlers, the middleware
    context.py    WebContext: what every endpoint may use (db, config, logins, oidc, blobs)
    auth.py       the session cookie and bearer tokens; authenticated() for every endpoint
    errors.py     the one place archive errors become HTTP statuses and JSON
    server.py     HttpServer: uvicorn in a thread, TLS, the bound port
    api/          JSON endpoints (/api/v1/…): one module per area, each with ROUTES
    pages/        browser pages (HTML from templates/) and the OIDC redirect flow
    templates/    Jinja2 templates of the pages

A new page or API endpoint calls the same domain functions as the command
line and the gRPC services, with the principal from :func:`auth.authenticated`,
so the same ``authorize()`` and audit writer decide and record (ARCHITECTURE.md).
"""
from archive_server.web.app import create_app

__all__ = ["create_app"]
