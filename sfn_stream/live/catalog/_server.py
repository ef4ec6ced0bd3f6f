"""An embedded Tiled server: SQL catalog, SQL tabular store and file storage under one folder.

    with TiledService("sfn-data") as service:
        client = service.client()

The catalog is SQLite by default (``catalog.db``); pass ``catalog_uri="postgresql://..."``
for PostgreSQL (its tabular store then defaults to the same database). Event tables go to
the SQL tabular store (a writable Tiled catalog needs one besides the file store); arrays
go to ``data/`` as Zarr.
"""

from __future__ import annotations

import contextlib
import logging
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


class _ThreadedServer(uvicorn.Server):
    def install_signal_handlers(self):  # the main thread owns signals
        pass


def _sqlite_uri(path: Path) -> str:
    return f"sqlite:///{path}"


class TiledService:
    """A Tiled server on a background thread of this process (``close()`` stops it)."""

    def __init__(self, directory: str | Path, *, api_key: str | None = None, host: str = "127.0.0.1",
                 port: int = 0, catalog_uri: str | None = None, tabular_uri: str | None = None):
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
            raise TiledServiceError(f"cannot open the Tiled catalog {self.catalog_uri}: {err}") from err
        app = build_app(catalog, authentication=Authentication(single_user_api_key=self.api_key))
        logging.getLogger("tiled.server.app").propagate = False  # tiled prints its own lines; no second copy
        port = port or _free_port(host)
        config = uvicorn.Config(app, host=host, port=port, loop="asyncio", log_level="warning",
                                access_log=False)
        self._server = _ThreadedServer(config)
        self._thread = threading.Thread(target=self._server.run, name="tiled-server", daemon=True)
        self._thread.start()
        self.base_url = f"http://{host}:{port}"
        self._wait_until_ready()

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


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
