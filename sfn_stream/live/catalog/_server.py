"""An embedded Tiled server: SQL catalog, SQL tabular store and file storage under one folder.

    with TiledService("sfn-data") as service:
        client = service.client()

The catalog is SQLite by default (``catalog.db``); pass ``catalog_uri="postgresql://..."``
for PostgreSQL (its tabular store then defaults to the same database). Event tables go to
the SQL tabular store (a writable Tiled catalog needs one besides the file store); arrays
go to ``data/`` as Zarr. Runs serve their Bluesky documents (``client[uid].documents()``, the
exporter of ``bluesky_tiled_plugins``), so stored runs can be replayed. A URI's password never
appears in a message: ``TiledService.masked(uri)`` shows it as ``***``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import socket
import threading
import time
from pathlib import Path

import httpx
import uvicorn

logger = logging.getLogger(__name__)
STARTUP_TIMEOUT = 300  # seconds; start-up takes minutes on a loaded 2-core machine
CLIENT_TIMEOUT = 120.0  # seconds per request


class TiledServiceError(RuntimeError):
    """The embedded Tiled server could not start."""


# scheme://user:password@rest; the password runs to the last "@" (an unencoded "@" in it is common)
_URI_WITH_PASSWORD = re.compile(r"^(?P<head>[^:/?#]+://[^:/?#@]*:)(?P<password>.*)@(?P<tail>[^@]*)$")
# Tiled refuses a single-user API key that is not alphanumeric (it would be ambiguous in ?api_key=),
# and an HTTP header carries ASCII only.
_API_KEY = re.compile(r"[A-Za-z0-9]+")


def _masked_uri(uri: str) -> str:
    match = _URI_WITH_PASSWORD.match(uri)
    return f"{match['head']}***@{match['tail']}" if match and match["password"] else uri


def _without_password(text: str, *uris: str) -> str:
    """``text`` with the URIs' passwords (as written, and percent-decoded) replaced by ``***``."""
    from urllib.parse import unquote

    for uri in map(str, uris):
        match = _URI_WITH_PASSWORD.match(uri)
        text = text.replace(uri, _masked_uri(uri))
        if match and match["password"]:
            for secret in {match["password"], unquote(match["password"])}:
                text = text.replace(secret, "***")
    return text


def _check_api_key(api_key: str) -> None:
    if _API_KEY.fullmatch(api_key):
        return
    refused = ", ".join(repr(c) for c in sorted({c for c in api_key if not _API_KEY.fullmatch(c)}))
    raise TiledServiceError(
        f"the API key holds characters Tiled does not accept ({refused}): use ASCII letters and digits only, "
        "e.g. the output of `openssl rand -hex 32`"
    )


def _error_summary(err: Exception) -> str:
    """One line for an error; Tiled's catalog initialisation reports a whole traceback, whose last line says why."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return lines[-1] if len(lines) > 1 and "Traceback" in lines[0] else " ".join(lines)


def _serialization_registry():
    """Tiled's default formats plus Bluesky documents (JSON-Seq) for runs with the BlueskyRun spec."""
    import copy

    from bluesky_tiled_plugins.exporters import json_seq_exporter
    from tiled.media_type_registration import default_serialization_registry

    registry = copy.deepcopy(default_serialization_registry)
    registry.register("BlueskyRun", "application/json-seq", json_seq_exporter)
    return registry


class _ThreadedServer(uvicorn.Server):
    def install_signal_handlers(self):  # the main thread owns signals
        pass


def _sqlite_uri(path: Path) -> str:
    return f"sqlite:///{path}"


class TiledService:
    """A Tiled server on a background thread of this process (``close()`` stops it)."""

    def __init__(self, directory: str | Path, *, api_key: str | None = None, host: str = "127.0.0.1",
                 port: int = 0, catalog_uri: str | None = None, tabular_uri: str | None = None):
        if api_key:  # checked before anything starts: Tiled itself would only fail in the server's thread
            _check_api_key(api_key)
        from tiled.catalog import from_uri as catalog_from_uri
        from tiled.config import Authentication
        from tiled.server.app import build_app

        self.directory = Path(directory).resolve()
        (self.directory / "data").mkdir(parents=True, exist_ok=True)
        self.api_key = api_key or secrets.token_hex(16)
        self.catalog_uri = catalog_uri or _sqlite_uri(self.directory / "catalog.db")
        if tabular_uri is None:
            tabular_uri = (self.catalog_uri if self.catalog_uri.startswith("postgres")
                           else _sqlite_uri(self.directory / "tabular.db"))
        self.tabular_uri = tabular_uri
        try:
            catalog = catalog_from_uri(self.catalog_uri,
                                       writable_storage=[self.directory / "data", tabular_uri],
                                       init_if_not_exists=True)
        except Exception as err:
            uris = (self.catalog_uri, tabular_uri)
            logger.debug("opening the Tiled catalog failed: %s", _without_password(str(err), *uris))
            reason = _without_password(_error_summary(err), *uris)
            # No exception chaining: the cause's message may carry the password.
            raise TiledServiceError(f"cannot open the Tiled catalog {self.masked(self.catalog_uri)}: {reason}") from None
        app = build_app(catalog, authentication=Authentication(single_user_api_key=self.api_key),
                        serialization_registry=_serialization_registry())
        _own_settings(app)
        logging.getLogger("tiled.server.app").propagate = False  # tiled prints its own lines; no second copy
        port = port or _free_port(host)
        config = uvicorn.Config(app, host=host, port=port, loop="asyncio", log_level="warning",
                                access_log=False)
        self._server = _ThreadedServer(config)
        self._thread = threading.Thread(target=self._server.run, name="tiled-server", daemon=True)
        self._thread.start()
        self.base_url = f"http://{host}:{port}"
        self._wait_until_ready()

    @staticmethod
    def masked(uri: str) -> str:
        """``uri`` with its password shown as ``***`` (``postgresql://user:***@host/db``), for printing."""
        return _masked_uri(uri)

    @property
    def uri(self) -> str:
        return f"{self.base_url}/api/v1"

    def client(self, timeout: float = CLIENT_TIMEOUT):
        """A Tiled client authenticated with the server's API key.

        The server shares this process (and its GIL) with the RunEngine and the plugin's worker,
        so a read may wait while they compute: the timeout is generous, not httpx's 5 s.
        """
        from tiled.client import from_uri

        return from_uri(self.uri, api_key=self.api_key, timeout=httpx.Timeout(timeout))

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        with httpx.Client(trust_env=False) as http:
            while time.monotonic() < deadline:
                if not self._thread.is_alive():
                    raise TiledServiceError("the Tiled server thread exited during start-up (see the log above)")
                with contextlib.suppress(httpx.RequestError):
                    if http.get(f"{self.base_url}/healthz", timeout=1.0).status_code == 200:
                        return
                time.sleep(0.05)
        self.close()
        raise TiledServiceError(f"the Tiled server did not answer on {self.base_url} in {STARTUP_TIMEOUT} s")

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _own_settings(app) -> None:
    """Give the app a settings object of its own.

    Tiled's apps share one cached ``Settings`` and each ``build_app`` writes its API key into it, so with
    two servers in one process the first would then refuse its own key (401 "Invalid API key").
    """
    from tiled.server.settings import get_settings

    settings = app.dependency_overrides[get_settings]().model_copy()
    app.dependency_overrides[get_settings] = lambda: settings


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
