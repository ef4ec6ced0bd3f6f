"""``sfn-stream serve``: a catalog URI's password is never shown; an API key Tiled refuses is refused up front."""

from __future__ import annotations

import socket

import pytest

from sfn_stream.cli import main
from sfn_stream.live.catalog import TiledService, TiledServiceError

PASSWORD = "s3cretPW"


def _closed_port() -> int:
    with socket.socket() as sock:  # bound, then closed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("uri, shown", [
    ("postgresql://user:secret@host/db", "postgresql://user:***@host/db"),
    ("postgresql+asyncpg://user:p%40ss@host:5432/db", "postgresql+asyncpg://user:***@host:5432/db"),
    ("postgresql://user:p@ss@host/db", "postgresql://user:***@host/db"),
    ("postgresql://user@host/db", "postgresql://user@host/db"),
    ("postgresql://host:5432/db", "postgresql://host:5432/db"),
    ("sqlite:////data/catalog.db", "sqlite:////data/catalog.db"),
])
def test_masked_uri_hides_only_the_password(uri, shown):
    assert TiledService.masked(uri) == shown


def test_an_unreachable_catalog_is_a_one_line_error_without_the_password(tmp_path, capsys):
    uri = f"postgresql://user:{PASSWORD}@127.0.0.1:{_closed_port()}/db"
    status = main(["serve", "--data-dir", str(tmp_path), "--catalog", uri])
    err = capsys.readouterr().err
    assert status == 2
    assert PASSWORD not in err
    assert err.startswith("sfn-stream: cannot open the Tiled catalog postgresql://user:***@127.0.0.1:")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "refused" in err.lower() or "connect" in err.lower()


@pytest.mark.parametrize("api_key, shown", [("abc-def", "'-'"), ("key with space!", "' ', '!'"),
                                            ("cl\u00e91", "'\u00e9'")])
def test_an_api_key_tiled_refuses_exits_2_with_a_clear_message(tmp_path, capsys, api_key, shown):
    status = main(["serve", "--data-dir", str(tmp_path), "--api-key", api_key])
    err = capsys.readouterr().err
    assert status == 2
    assert "API key" in err and "ASCII letters and digits" in err and shown in err
    assert not (tmp_path / "catalog.db").exists()  # refused before anything started
    with pytest.raises(TiledServiceError, match="ASCII letters and digits"):
        TiledService(tmp_path, api_key=api_key)


def test_the_catalog_line_shows_no_password(monkeypatch, capsys, tmp_path):
    class FakeService:
        masked = staticmethod(TiledService.masked)
        directory, uri, api_key = tmp_path, "http://127.0.0.1:1/api/v1", "abc123"
        catalog_uri = tabular_uri = f"postgresql://user:{PASSWORD}@127.0.0.1/db"

        def __init__(self, *args, **kwargs):
            pass

        def close(self):
            pass

    def interrupt(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr("sfn_stream.live.catalog.TiledService", FakeService)
    monkeypatch.setattr("time.sleep", interrupt)
    assert main(["serve", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "catalog: postgresql://user:***@127.0.0.1/db" in out and PASSWORD not in out
