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


def sqlalchemy_url(url: str) -> str:
    """A ``postgresql://`` URL with the psycopg2 driver this project installs."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg2://" + url[len("postgresql://") :]
    if url.startswith("postgres://"):
        return "postgresql+psycopg2://" + url[len("postgres://") :]
    return url


def is_sqlite_file(url: str) -> bool:
    """Whether a SQLAlchemy URL names a SQLite database in a file (not in memory)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")
