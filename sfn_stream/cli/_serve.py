"""``sfn-stream serve``: a local Tiled server for raw runs and predictions."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ._common import CliError, console


def add_parser(sub) -> None:
    parser = sub.add_parser("serve", help="run a local Tiled server (SQLite catalog, SQL tables, file storage)")
    parser.add_argument("--data-dir", type=Path, default=Path("sfn-data"), help="where the catalog and data live")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", default=os.environ.get("SFN_TILED_API_KEY"),
                        help="API key clients must present, ASCII letters and digits only "
                             "(default: $SFN_TILED_API_KEY, else a random one)")
    parser.add_argument("--catalog", help="catalog database URI, e.g. postgresql://user:pass@host/db "
                                          "(default: SQLite in the data directory)")
    parser.set_defaults(run=run)


def run(args) -> int:
    from sfn_stream.live.catalog import TiledService, TiledServiceError

    try:
        service = TiledService(args.data_dir, api_key=args.api_key, host=args.host, port=args.port,
                               catalog_uri=args.catalog)
    except TiledServiceError as err:
        raise CliError(str(err)) from err
    out = console()
    out.print(f"Tiled serving {service.directory} at [bold]{service.uri}[/bold]")
    out.print(f"catalog: {service.masked(service.catalog_uri)}\ntables:  {service.masked(service.tabular_uri)}")
    out.print(f"API key: {service.api_key}   (clients: tiled.client.from_uri(URI, api_key=KEY))")
    out.print("Ctrl-C to stop.")
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        service.close()
    return 0
