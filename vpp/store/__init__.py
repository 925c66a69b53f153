"""Persistent state: the ``Store`` interface, its SQLite and Redis backends, and ``open_store``.

Importing this package does no I/O; ``open_store`` only builds a store and
the caller connects with ``await store.open()`` (or ``async with store``).
"""

from __future__ import annotations

import pathlib
import urllib.parse

from vpp.store.base import Store
from vpp.store.redis import RedisStore
from vpp.store.redis import _redacted as _redacted_url
from vpp.store.sqlite import SqliteStore

__all__ = ["Store", "open_store", "SqliteStore", "RedisStore", "DEFAULT_SQLITE_NAME"]

DEFAULT_SQLITE_NAME = "vpp.sqlite3"
"""File name of the embedded store inside the data directory."""


def open_store(url: str | None, data_dir: pathlib.Path) -> Store:
    """Build (without connecting) the store a URL names.

    * ``None``, ``""``, ``sqlite:`` or ``sqlite://`` -> SQLite at ``data_dir / "vpp.sqlite3"``;
    * ``sqlite:///abs/path.db`` -> SQLite at that absolute path,
      ``sqlite:relative/path.db`` -> relative to ``data_dir``;
    * ``redis://...``, ``rediss://...`` or ``unix://...`` -> Redis (namespace from
      a ``namespace`` query parameter, default ``vpp``).

    Raises ``ValueError`` naming the url for any other scheme.
    """
    if not url:
        return SqliteStore(pathlib.Path(data_dir) / DEFAULT_SQLITE_NAME)
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        return SqliteStore(_sqlite_path(url, pathlib.Path(data_dir)))
    if scheme in ("redis", "rediss", "unix"):
        return _redis_store(url)
    raise ValueError(f"store url {_redacted_url(url)!r}: unknown scheme; use sqlite:///path/to/file.db or redis://host:port/db")


def _sqlite_path(url: str, data_dir: pathlib.Path) -> pathlib.Path:
    # "sqlite:///abs" has path "/abs"; "sqlite:rel" has path "rel"; "sqlite:" and "sqlite://" have none.
    parts = urllib.parse.urlsplit(url)
    if parts.netloc:
        raise ValueError(f"store url {_redacted_url(url)!r}: a SQLite url has no host; use sqlite:///abs/path.db or sqlite:rel/path.db")
    path = urllib.parse.unquote(parts.path)
    if not path:
        return data_dir / DEFAULT_SQLITE_NAME
    return data_dir / path if not path.startswith("/") else pathlib.Path(path)


def _redis_store(url: str) -> RedisStore:
    # The namespace is ours, not redis-py's: take it out of the query so the
    # client does not reject an unknown option.
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    namespaces = [v for k, v in query if k == "namespace"]
    rest = urllib.parse.urlencode([(k, v) for k, v in query if k != "namespace"])
    client_url = urllib.parse.urlunsplit(parts._replace(query=rest))
    return RedisStore(client_url, namespace=namespaces[-1]) if namespaces else RedisStore(client_url)
