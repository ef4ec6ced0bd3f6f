"""``sfn-stream bench faults``: does any document of a beamtime get lost or written twice when Tiled or
the acquisition process fails?

Each scenario runs real XANES scans (RunEngine, simulated beamline, the plugin with its spool, a real
Tiled server restarted on the same port and folder), injects one fault, lets the plugin recover on its
own and then compares what the RunEngine emitted with what Tiled holds: runs complete (start, every
event row, the derived stream, the stop with its summary), documents lost, rows duplicated, and the
seconds from the end of the fault to the last run complete.

Scenarios: Tiled down before the runs, down in the middle of a run, restarted between runs; the
acquisition process killed (SIGKILL) with runs undelivered, then a new session on the same spool;
a session ended without ``flush()``; many runs back to back.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

SCENARIOS = ("down_before_run", "down_mid_run", "restart_between_runs", "process_killed",
             "exit_without_flush", "back_to_back")


@dataclass
class ScenarioResult:
    scenario: str
    runs: int
    complete: int
    documents_emitted: int
    documents_lost: int
    rows_duplicated: int
    recover_seconds: float | None
    notes: list[str] = field(default_factory=list)


class FaultLab:
    """A Tiled server that can be stopped and started again on the same port and folder, and a spool."""

    def __init__(self, workdir: str | os.PathLike, *, outage_seconds: float = 5.0):
        self.workdir = Path(workdir)
        self.spool_dir = self.workdir / "spool"
        self.api_key = secrets.token_hex(16)
        self.port = _free_port()
        self.outage_seconds = outage_seconds
        self.service = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def start_tiled(self) -> None:
        from sfn_stream.live.catalog import TiledService

        self.service = TiledService(self.workdir / "tiled", api_key=self.api_key, port=self.port)

    def stop_tiled(self) -> None:
        if self.service is not None:
            self.service.close()
            self.service = None

    def client(self):
        return self.service.client()

    def plugin(self, client, **options):
        from sfn_stream.live.plugin import SfnPlugin, make_tiled_writer

        return SfnPlugin(make_tiled_writer(client), spool=self.spool_dir, **options)

    def close(self) -> None:
        self.stop_tiled()


def run_scans(RE, beamline, sample, count: int, recorder: dict, *, during=None) -> list[str]:
    """``count`` XANES scans; every emitted document lands in ``recorder[run uid]``; ``during(i, point)``
    is called at each point of scan ``i`` (to inject a fault mid-run)."""
    from bluesky import plan_stubs as bps

    from sfn_stream.simulated_beamline import xanes_scan

    mono, xas, _ = beamline

    def record(name, doc):
        run_uid = doc["uid"] if name == "start" else doc.get("run_start") or recorder["_descriptors"].get(
            doc.get("descriptor"))
        if name == "descriptor":
            recorder["_descriptors"][doc["uid"]] = doc["run_start"]
        recorder.setdefault(run_uid, []).append((name, doc))

    recorder.setdefault("_descriptors", {})
    token = RE.subscribe(record)
    uids = []
    try:
        for i in range(count):
            plan = xanes_scan(xas, mono, sample.absorber, composition=sample.formula, sample=f"fault-{i}")
            if during is not None:
                plan = _with_hook(plan, lambda point, i=i: during(i, point), bps)
            RE(plan)
            uids.append(next(uid for uid in recorder if uid != "_descriptors" and uid not in uids))
    finally:
        RE.unsubscribe(token)
    return uids


def _with_hook(plan, hook, bps):
    """Call ``hook(point)`` after each 'save' message of ``plan`` (inside the RunEngine's loop)."""
    point = 0
    message = None
    response = None
    while True:
        try:
            message = plan.send(response)
        except StopIteration as stop:
            return stop.value
        response = yield message
        if message.command == "save":
            point += 1
            hook(point)


def audit(client, recorder: dict, *, derived_stream: str | None = None) -> tuple[int, int, int, int]:
    """(complete runs, documents emitted, documents lost, rows duplicated) of the recorded runs in Tiled."""
    from sfn_stream.live.plugin import XANES_STREAM

    derived_stream = derived_stream or XANES_STREAM
    complete = emitted = lost = duplicated = 0
    for run_uid, docs in recorder.items():
        if run_uid == "_descriptors":
            continue
        emitted += len(docs)
        if run_uid not in client:
            lost += len(docs)
            continue
        run = client[run_uid]
        expected = _expected_rows(docs)
        run_lost = 0 if run.metadata.get("stop") else 1
        for stream, rows in expected.items():
            stored = _rows(run, stream)
            run_lost += max(0, rows - stored)
            duplicated += max(0, stored - rows)
        summary = (run.metadata.get("stop") or {}).get("sfn")
        has_derived = derived_stream in run and _rows(run, derived_stream) == 1 and summary is not None
        lost += run_lost
        complete += run_lost == 0 and has_derived
    return complete, emitted, lost, duplicated


def _expected_rows(docs) -> dict[str, int]:
    names = {doc["uid"]: doc["name"] for name, doc in docs if name == "descriptor"}
    rows: dict[str, int] = {}
    for name, doc in docs:
        if name in ("event", "event_page"):
            stream = names[doc["descriptor"]]
            rows[stream] = rows.get(stream, 0) + (1 if name == "event" else len(doc["seq_num"]))
    return rows


def _rows(run, stream: str) -> int:
    if stream not in run:
        return 0
    return int(run[stream].read().sizes.get("time", 0))


# -- scenarios ----------------------------------------------------------------------------------------
def _in_process(lab: FaultLab, name: str, runs: int, inject, *, sample, beamline) -> ScenarioResult:
    from bluesky import RunEngine

    lab.start_tiled()
    client = lab.client()
    plugin = lab.plugin(client, analysis_wait=60.0)
    RE = RunEngine({}, call_returns_result=False)
    RE.subscribe(plugin)
    recorder: dict = {}
    fault_end = inject(lab, RE, beamline, sample, recorder, runs)
    ok = plugin.flush(timeout=600)
    recovered = time.monotonic() - fault_end if fault_end is not None else None
    plugin.close()
    result = ScenarioResult(name, runs, *audit(client, recorder), round(recovered, 2) if recovered else None)
    if not ok:
        result.notes.append("not drained within 600 s")
    lab.stop_tiled()
    return result


def _down_before_run(lab, RE, beamline, sample, recorder, runs):
    lab.stop_tiled()
    run_scans(RE, beamline, sample, runs, recorder)
    time.sleep(lab.outage_seconds)
    lab.start_tiled()
    return time.monotonic()


def _down_mid_run(lab, RE, beamline, sample, recorder, runs):
    def during(i, point):
        if i == 0 and point == 20:
            lab.stop_tiled()

    run_scans(RE, beamline, sample, runs, recorder, during=during)
    time.sleep(lab.outage_seconds)
    lab.start_tiled()
    return time.monotonic()


def _restart_between_runs(lab, RE, beamline, sample, recorder, runs):
    run_scans(RE, beamline, sample, 1, recorder)
    lab.stop_tiled()
    time.sleep(lab.outage_seconds)
    lab.start_tiled()
    restarted = time.monotonic()
    run_scans(RE, beamline, sample, max(runs - 1, 0), recorder)
    return restarted


def _back_to_back(lab, RE, beamline, sample, recorder, runs):
    run_scans(RE, beamline, sample, runs, recorder)
    return time.monotonic()  # "recover" = from the last stop to the last run complete


_CHILD = textwrap.dedent("""
    import json, os, signal, sys
    from bluesky import RunEngine
    from tiled.client import from_uri
    from sfn_stream.live.plugin import SfnPlugin, make_tiled_writer
    from sfn_stream.offline.evaluation.fault_benchmark import run_scans
    from sfn_stream.simulated_beamline import load_demo_sample, simulated_beamline

    uri, api_key, spool, runs, mode, record_path = sys.argv[1:7]
    client = from_uri(uri, api_key=api_key)
    plugin = SfnPlugin(make_tiled_writer(client), spool=spool, exit_drain_seconds=120)
    RE = RunEngine({}, call_returns_result=False)
    RE.subscribe(plugin)
    print("ready", flush=True)
    if mode == "kill":
        sys.stdin.readline()  # the parent stops Tiled first
    sample = load_demo_sample()
    recorder = {}
    run_scans(RE, simulated_beamline(sample, seed=1), sample, int(runs), recorder)
    recorder.pop("_descriptors")
    with open(record_path, "w") as handle:
        json.dump(recorder, handle, default=lambda value: value.tolist())
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    # mode "exit": leave without flush() or close(); the exit hook must deliver
""")


def _child_scenario(lab: FaultLab, name: str, runs: int, mode: str) -> ScenarioResult:
    from sfn_stream.live.plugin import SfnPlugin, make_tiled_writer

    lab.start_tiled()
    record_path = lab.workdir / f"{name}-emitted.json"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, lab.uri, lab.api_key, str(lab.spool_dir), str(runs),
                              mode, str(record_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    if mode == "kill":
        lab.stop_tiled()
        child.stdin.write("go\n")
        child.stdin.flush()
    child.wait(timeout=1200)
    notes = [f"child exit code {child.returncode}"]
    if mode == "kill":
        lab.start_tiled()
    fault_end = time.monotonic()
    client = lab.client()
    drained = True
    if mode == "kill":  # a new session on the same spool adopts and delivers what the killed one left
        plugin = SfnPlugin(make_tiled_writer(client), spool=lab.spool_dir)
        drained = plugin.flush(timeout=600)
        plugin.close()
    recovered = time.monotonic() - fault_end
    recorder = json.loads(record_path.read_text()) if record_path.exists() else {}
    if not drained:
        notes.append("not drained within 600 s")
    result = ScenarioResult(name, runs, *audit(client, recorder), round(recovered, 2), notes)
    lab.stop_tiled()
    return result


def run_scenarios(names=SCENARIOS, *, runs: int = 3, back_to_back_runs: int = 500, outage_seconds: float = 5.0,
                  workdir: str | None = None, progress=None) -> list[ScenarioResult]:
    from sfn_stream.simulated_beamline import load_demo_sample, simulated_beamline

    progress = progress or (lambda line: None)
    sample = load_demo_sample()
    in_process = {"down_before_run": _down_before_run, "down_mid_run": _down_mid_run,
                  "restart_between_runs": _restart_between_runs, "back_to_back": _back_to_back}
    results = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for name in names:
            progress(f"scenario {name}")
            lab = FaultLab(Path(tmp) / name, outage_seconds=outage_seconds)
            try:
                if name in in_process:
                    count = back_to_back_runs if name == "back_to_back" else runs
                    results.append(_in_process(lab, name, count, in_process[name], sample=sample,
                                               beamline=simulated_beamline(sample, seed=5)))
                else:
                    results.append(_child_scenario(lab, name, runs, "kill" if name == "process_killed" else "exit"))
            finally:
                lab.close()
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="sfn-stream bench faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", action="append", choices=SCENARIOS, help="run only these (repeatable)")
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario (default 3)")
    parser.add_argument("--back-to-back", type=int, default=500, help="runs of the back-to-back scenario")
    parser.add_argument("--outage", type=float, default=5.0, help="seconds Tiled stays down (default 5)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = run_scenarios(args.scenario or SCENARIOS, runs=args.runs, back_to_back_runs=args.back_to_back,
                            outage_seconds=args.outage,
                            progress=lambda line: print(line, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps([asdict(result) for result in results], indent=2))
        return 0
    print(f"{'scenario':<22}{'runs':>6}{'complete':>10}{'docs':>8}{'lost':>6}{'dups':>6}{'recover s':>11}")
    for r in results:
        recover = f"{r.recover_seconds:.1f}" if r.recover_seconds is not None else "-"
        print(f"{r.scenario:<22}{r.runs:>6}{r.complete:>10}{r.documents_emitted:>8}{r.documents_lost:>6}"
              f"{r.rows_duplicated:>6}{recover:>11}  {'; '.join(r.notes)}")
    return 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    raise SystemExit(main())
