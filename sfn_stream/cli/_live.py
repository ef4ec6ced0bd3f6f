"""Live console output for the demo: scan progress and predictions as their derived events arrive."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sfn_stream.live.plugin import XANES_STREAM, XRD_STREAM


class ScanProgress:
    """A progress bar fed by a RunEngine subscription (counts primary events)."""

    def __init__(self, console, total: int):
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=console, transient=False)
        self._task = self._progress.add_task("scanning", total=total)

    def __enter__(self):
        self._progress.start()
        return self

    def __exit__(self, *exc):
        self._progress.stop()

    def __call__(self, name, doc):
        if name == "event":
            self._progress.advance(self._task)
        elif name == "event_page":
            self._progress.advance(self._task, len(doc["seq_num"]))


class LiveDisplay:
    """Prints each derived-stream row as the plugin emits it."""

    def __init__(self, console):
        self.console = console
        self._streams: dict[str, str] = {}

    def __call__(self, name, doc):
        if name == "descriptor" and doc["name"] in (XANES_STREAM, XRD_STREAM):
            self._streams[doc["uid"]] = doc["name"]
        elif name == "event" and doc["descriptor"] in self._streams:
            self._show(self._streams[doc["descriptor"]], doc["data"])

    def _show(self, stream: str, row: dict) -> None:
        status = row["status"]
        if status not in ("ok", "flagged"):
            self.console.print(f"[red]{stream}: {status}[/red] - {row['reason']}")
            return
        if stream == XRD_STREAM:
            text = f"frame {row['frame']}: crystal system [bold]{row['crystal_system']}[/bold] " \
                   f"({row['crystal_system_confidence']:.0%})" + _lattice_text(row)
        else:
            text = (f"{row['absorber']}: oxidation state [bold]{row['oxidation_state']}[/bold] "
                    f"({row['oxidation_state_confidence']:.0%}), CN [bold]{row['coordination_number']}[/bold] "
                    f"({row['coordination_number_confidence']:.0%}), density {row['density']:.2f} "
                    f"± {row['density_std']:.2f} g/cm3; E0 {row['e0']:.1f} eV ({row['e0_shift']:+.1f} eV)")
        flags = row.get("quality_flags")
        self.console.print(f"[green]prediction[/green] {text}" + (f"  [yellow]flags: {flags}[/yellow]" if flags else ""))


def _lattice_text(row: dict) -> str:
    """'; indexing (cubic to orthorhombic tried): tetragonal I (a 3.784, b 3.784, c 9.504 A, merit 0.91)' when
    the bundle indexes, else ''."""
    if not row.get("lattice"):
        return ""
    edges = ", ".join(f"{axis} {row[f'cell_{axis}']:.3f}" for axis in "abc")
    return f"; indexing (cubic to orthorhombic tried): {row['lattice']} ({edges} A, merit {row['lattice_merit']:.2f})"
