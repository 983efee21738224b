"""Database and cache URLs as the project's users write them, turned into what each client needs."""

from __future__ import annotations

from urllib.parse import unquote, urlparse


def redis_connection_string(url: str) -> str:
    """A ``redis://[user:password@]host:port/db`` URL as Feast's ``host:port,db=N,…`` form."""
    parsed = urlparse(url)
    parts = [f"{parsed.hostname or '127.0.0.1'}:{parsed.port or 6379}"]
    database = parsed.path.strip("/")
    if database:
        parts.append(f"db={int(database)}")
    if parsed.username:
        parts.append(f"username={unquote(parsed.username)}")
    if parsed.password:
        parts.append(f"password={unquote(parsed.password)}")
    if parsed.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


# The PostgreSQL URLs users may write, and what SQLAlchemy is given for each: psycopg 3, the
# driver this project installs. psycopg2 URLs from before are taken as they were meant.
POSTGRES_DRIVER_URL = "postgresql+psycopg://"
POSTGRES_URL_PREFIXES = ("postgresql://", "postgres://", "postgresql+psycopg2://")


def sqlalchemy_url(url: str) -> str:
    """A PostgreSQL URL with the psycopg (3) driver: ``postgresql://``, ``postgres://`` and
    ``postgresql+psycopg2://`` are rewritten to ``postgresql+psycopg://``; any other URL is
    returned as it is."""
    for prefix in POSTGRES_URL_PREFIXES:
        if url.startswith(prefix):
            return POSTGRES_DRIVER_URL + url[len(prefix) :]
    return url


def is_sqlite_file(url: str) -> bool:
    """Whether a SQLAlchemy URL names a SQLite database in a file (not in memory)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")
