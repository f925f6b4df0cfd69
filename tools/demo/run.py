"""`egate demo`: the whole lane on this machine, nothing to plug in (what `make run` starts).

A local mosquitto, the OSDP turnstile simulator on a PTY and the real daemon (`egate run`) with a
signed gallery of two expected travellers pushed over MQTT; the lane camera plays frames cut from the
demo clips in tools/demo/media (two expected travellers, a stranger, two people at once). Every
outcome is printed as it arrives over MQTT, as central ops would see it.

    egate demo            # loop the lane until Ctrl-C, then print the summary
    egate demo --once     # play the lane once, print the summary table, exit 0
    egate demo --once --json

Everything lives in a temporary folder (kept with --keep): broker, credentials, the enrolment photos
derived from the clips, the daemon's config and its JSON log.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import typer

from egate.tools.rig.lane import DEMO_PLAN, LaneRig, RigError


def _best(record: dict[str, Any]) -> dict[str, Any] | None:
    comparisons = record.get("comparisons") or []
    return comparisons[0] if comparisons else None


def _score_text(record: dict[str, Any]) -> str:
    best = _best(record)
    if best is None:
        return "-"
    op = ("<=" if best["passed"] else ">") if not best["higher_is_better"] else (">=" if best["passed"] else "<")
    return f"{best['score']:.3f} {op} {best['threshold']:.3f}"


def summarize(rig: LaneRig, record: dict[str, Any]) -> dict[str, Any]:
    """One outcome as the demo shows it: no subject id, no document, nothing personal."""
    span = rig.traveller_of(record)
    best = _best(record)
    return {
        "traveller": span.label if span else "?",
        "expected": span.expect if span else None,
        "decision": str(record["decision"]).upper(),
        "reasons": list(record["reasons"]),
        "score": None if best is None else round(float(best["score"]), 4),
        "threshold": None if best is None else round(float(best["threshold"]), 4),
        "passed": None if best is None else bool(best["passed"]),
        "passage": record.get("passage"),
        "frame_to_open_ms": record["timings_ms"].get("frame_to_open"),
        "capture_ms": record["timings_ms"].get("capture"),
        "quality": record.get("quality"),
        "txn_id": record["txn_id"],
    }


def _table(rows: list[dict[str, Any]], records: list[dict[str, Any]]) -> Any:
    from rich import box
    from rich.table import Table

    table = Table(title="egate demo lane: outcomes as published to central ops", box=box.SIMPLE_HEAD)
    table.add_column("#", justify="right")
    table.add_column("traveller", no_wrap=True)
    table.add_column("decision", no_wrap=True)
    table.add_column("reasons", no_wrap=True)
    table.add_column("score / threshold", justify="right", no_wrap=True)
    table.add_column("frame->open", justify="right", no_wrap=True)
    table.add_column("passage", no_wrap=True)
    for i, (row, record) in enumerate(zip(rows, records, strict=True), 1):
        colour = "green" if row["decision"] == "ACCEPT" else "yellow"
        f2o = row["frame_to_open_ms"]
        table.add_row(
            str(i),
            row["traveller"],
            f"[{colour}]{row['decision']}[/]",
            "\n".join(row["reasons"]),
            _score_text(record),
            "-" if f2o is None else f"{f2o:.0f} ms",
            row["passage"] or "-",
        )
    return table


def _line(i: int, row: dict[str, Any], record: dict[str, Any]) -> str:
    f2o = row["frame_to_open_ms"]
    opened = "" if f2o is None else f"  frame->open {f2o:.0f} ms"
    return (
        f"{i:>3} {row['traveller']:<22} {row['decision']:<6} {', '.join(row['reasons'])}  {_score_text(record)}{opened}"
    )


DEMO_MARKER = ".egate-demo"  # marks a work folder `egate demo` made, so a rerun may reuse it


def prepare_workdir(workdir: Path | None) -> tuple[Path, str]:
    """The work folder and a note on it; refuses (RigError) a folder that is not the demo's own."""
    if workdir is None:
        folder = Path(tempfile.mkdtemp(prefix="egate-demo-"))
        (folder / DEMO_MARKER).touch()
        return folder, f"work folder {folder} (deleted at the end; keep it with --keep)"
    folder = workdir.resolve()
    if folder.exists() and not folder.is_dir():
        raise RigError(f"--workdir {folder} is a file, not a folder", "pass a new or empty folder")
    if folder.exists() and any(folder.iterdir()):
        if not (folder / DEMO_MARKER).exists():
            raise RigError(
                f"--workdir {folder} is not empty and was not made by egate demo: nothing in it is touched",
                "pass a new or empty folder (or one an earlier egate demo used)",
            )
        shutil.rmtree(folder / "lane", ignore_errors=True)  # the previous run's lane: made again below
        return folder, f"work folder {folder} (reused: the previous demo run in it was cleared)"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DEMO_MARKER).touch()
    return folder, f"work folder {folder} (kept)"


def how_to_reach(rig: LaneRig) -> list[str]:
    """What a person needs to use the tools on the running demo, with commands ready to paste."""
    config = rig.config_path
    broker = f"--host {rig.broker.host} --port {rig.broker.port}"
    ops = rig.ops
    lines = [
        f"config       {config}",
        f"gate         site {rig.site}, gate {rig.gate}, exit mode",
        f"broker       {rig.broker.host}:{rig.broker.port} (plain MQTT, loopback only)",
    ]
    if ops is not None:
        lines.append(f"ops key      {ops.key} (key id {ops.key_id}); gallery bundle {ops.gallery}")
    lines += [
        "try, in another terminal while the demo runs:",
        f"  egate diag status --config {config}",
        f"  egate diag selftest --config {config}",
        f"  egate ops watch --site {rig.site} {broker}",
    ]
    if ops is not None:
        lines += [
            f"  egate ops push {ops.gallery} --gate {rig.gate} --site {rig.site} {broker}",
            f"  egate ops cmd set-mode --mode maintenance --gate {rig.gate} --site {rig.site} "
            f"--signing-key {ops.key} {broker}",
        ]
    return lines


def demo_command(
    once: bool = typer.Option(False, "--once", help="Play the lane once, print the summary and exit."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON (stdout) instead of a table."),
    keep: bool = typer.Option(False, "--keep", help="Keep the work folder (daemon log, config) afterwards."),
    workdir: Path | None = typer.Option(
        None, "--workdir", help="Work folder (default: a new temporary one); an earlier demo's folder is reused."
    ),
    screenshots: Path | None = typer.Option(
        None, "--screenshots", help="Save the traveller's screen of each decision here (headless Chromium)."
    ),
    mirror: bool = typer.Option(
        False, "--mirror", help="Show the live camera mirror with a face guide on the traveller's screen."
    ),
) -> None:
    """Run the demo lane: real daemon, simulated turnstile, local broker, lane camera from the demo clips.

    It prints the config path, the gate's ids, the broker port, the ops key and commands to paste into
    another terminal. Ctrl-C (also through a pipe such as `| tee log`), SIGTERM or a closed terminal
    stop it and its daemon.
    """
    from rich.console import Console

    from egate.engines.models import default_model_dir
    from egate.tools.rig.local_broker import MOSQUITTO

    err = Console(stderr=True, soft_wrap=True, highlight=False)
    out = Console()
    if not out.is_terminal:
        out = Console(width=120)  # a pipe or file: do not squeeze the table into 80 columns
    if shutil.which(MOSQUITTO) is None and not Path(MOSQUITTO).exists():
        err.print("error: mosquitto is not installed\nfix: make setup (or apt-get install mosquitto)")
        raise typer.Exit(2)
    if not (default_model_dir() / "manifest.json").exists():
        err.print(f"error: no face models in {default_model_dir()}\nfix: egate models build (make setup does)")
        raise typer.Exit(2)
    try:
        folder, folder_note = prepare_workdir(workdir)
    except RigError as exc:
        err.print(f"error: {exc.args[0]}\nfix: {exc.args[1]}")
        raise typer.Exit(2) from None

    stop = threading.Event()
    stopped_by: list[str] = []

    def on_signal(signum: int, _frame: Any) -> None:
        stopped_by.append(signal.Signals(signum).name)
        stop.set()

    # SIGHUP: the terminal closed; SIGPIPE does not kill Python (writes raise BrokenPipeError instead).
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    for sig in previous:
        signal.signal(sig, on_signal)
    rig = LaneRig(
        folder / "lane",
        plan=None,
        loop=not once,
        display=True,
        dies_with_rig=True,
        config={"display": {"mirror": {"enabled": True}}} if mirror else None,
    )
    shots: Any = None
    records: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    code = 0
    try:
        err.print("[bold]egate demo[/]: starting mosquitto, the turnstile simulator and the daemon ...")
        began = time.monotonic()
        rig.start()
        gallery = rig.status().get("gallery", {})
        err.print(
            f"lane in service in {time.monotonic() - began:.1f} s; gallery v{gallery.get('version')} "
            f"applied over MQTT ({gallery.get('subjects')} expected travellers); {folder_note}"
        )
        err.print("\n".join(how_to_reach(rig)), markup=False)
        err.print(f"traveller's screen: {rig.display_url} (open it in a browser)", markup=False)
        if screenshots is not None and rig.display_url:
            from egate.tools.demo.display import DecisionScreenshots

            shots = DecisionScreenshots(rig.display_url, screenshots)
            shots.start()
        scene = rig.play(DEMO_PLAN, loop=not once)
        err.print(
            f"camera: {scene.travellers} travellers in a {scene.duration_s:.0f} s lane clip"
            + (" (once)" if once else ", looping: Ctrl-C stops")
        )
        assert rig.played_at is not None
        end = rig.played_at + scene.duration_s
        deadline = end + 60.0

        def take_new() -> None:
            for record in rig.outcomes[len(records) :]:
                records.append(record)
                rows.append(summarize(rig, record))
                if not as_json:
                    err.print(_line(len(records), rows[-1], record))

        def settled() -> bool:
            # The clip has played, the lane is idle and every recorded outcome arrived over MQTT.
            if time.monotonic() < end or rig.status()["state"] != "idle":
                return False
            return len(rig.outcomes) >= len(rig.call("outcomes", n=100)["outcomes"])

        while not stop.is_set():
            take_new()
            if once and settled():
                take_new()
                break
            if once and time.monotonic() > deadline:
                err.print("error: the lane did not settle in time\nfix: read the daemon log (run with --keep)")
                code = 1
                break
            stop.wait(0.2)
    except (RigError, TimeoutError) as exc:
        if not stop.is_set():  # a part failing because we are stopping is not an error
            err.print(f"error: {exc}")
            code = 1
    except BrokenPipeError:
        stopped_by.append("SIGPIPE")  # whoever read our output has gone (`| tee` after Ctrl-C)
    finally:
        _quietly(lambda: err.print("stopping the lane ..."))
        if shots is not None:
            saved = shots.close()
            _quietly(lambda: err.print(f"saved {len(saved)} screenshot(s) of the traveller's screen in {screenshots}"))
        rig.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if rig.daemon_stop_s is None and rig.daemon_exit_code is not None:
            _quietly(lambda: err.print("error: the daemon did not stop within 5 s of SIGTERM"))
            code = code or 1
        if not keep and workdir is None:
            shutil.rmtree(folder, ignore_errors=True)
        elif keep:
            _quietly(lambda: err.print(f"kept {folder} (daemon log: {rig.log_path})"))
    unexpected = [r for r in rows if r["expected"] is not None and r["decision"] != r["expected"]]
    try:
        if as_json:
            summary = {
                "once": once,
                "travellers_planned": len([p for p in DEMO_PLAN if isinstance(p, str)]),
                "outcomes": rows,
                "as_expected": not unexpected and len(rows) >= 1,
                "daemon_stop_s": rig.daemon_stop_s,
                "stopped_by": stopped_by[0] if stopped_by else None,
            }
            sys.stdout.write(json.dumps(summary) + "\n")
            sys.stdout.flush()
        elif rows:
            out.print(_table(rows, records))
            if unexpected:
                err.print(f"note: {len(unexpected)} outcome(s) differ from what the demo expects (see the table)")
        else:
            err.print("no outcome yet")
    except BrokenPipeError:
        _silence_stdout()
    raise typer.Exit(code)


def _quietly(write: Any) -> None:
    """Write progress unless the reader of that stream has gone (the lane is being stopped anyway)."""
    try:
        write()
    except (BrokenPipeError, OSError):
        _silence_stdout()


def _silence_stdout() -> None:
    """Point stdout and stderr at /dev/null, so Python's exit-time flush does not fail on a closed pipe."""
    import contextlib
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        with contextlib.suppress(OSError):
            os.dup2(devnull, fd)
    os.close(devnull)


def register(app: typer.Typer) -> None:
    """Add the top-level `demo` command."""
    app.command("demo")(demo_command)
