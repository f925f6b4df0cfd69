"""`egate diag reader` and `egate bench mrz` through typer, registered into local groups."""

from __future__ import annotations

import json
import threading

import cv2
import typer
from typer.testing import CliRunner

from egate.tools.bench import mrz as bench_mrz
from egate.tools.diag import reader as diag_reader
from egate.tools.sim.reader import ReaderSimulator
from tests.shared_data import shared_data
from tests.support.reader_fixtures import BCBP_ONE_LEG, UTOPIA_TD3, render_ocrb_page


def _app() -> typer.Typer:
    app = typer.Typer()
    diag, bench = typer.Typer(), typer.Typer()
    app.add_typer(diag, name="diag")
    app.add_typer(bench, name="bench")
    diag_reader.register(diag)
    bench_mrz.register(bench)
    return app


def _last_json(output: str) -> dict:
    # Log lines may share stdout until the CLI routes structlog to stderr; the JSON is the last line.
    return json.loads([ln for ln in output.splitlines() if ln.startswith("{")][-1])


def test_diag_reader_image_mrz_json(tmp_path) -> None:
    path = tmp_path / "page.png"
    cv2.imwrite(str(path), render_ocrb_page(UTOPIA_TD3))
    result = CliRunner().invoke(_app(), ["diag", "reader", "--image", str(path), "--json"])
    out = _last_json(result.output)
    assert set(out) == {"kind", "format", "lines", "valid", "fields", "errors"}
    assert (out["kind"], out["format"], out["lines"]) == ("mrz", "TD3", UTOPIA_TD3)
    assert out["fields"]["number"] == "L898902C3"
    # The Utopia specimen expired in 2012: invalid today, and the error names the field.
    assert out["valid"] is False and [e["field"] for e in out["errors"]] == ["expiry_date"]
    assert result.exit_code == 1


def test_diag_reader_image_bcbp_json() -> None:
    path = shared_data("bcbp/go_bcbp/fixtures/barcodes/20250216-UAL61-aztec.png")
    result = CliRunner().invoke(_app(), ["diag", "reader", "--image", str(path), "--json"])
    assert result.exit_code == 0, result.output
    out = _last_json(result.output)
    assert out["kind"] == "bcbp" and out["raw"].startswith("M1DOE/JOHN")
    assert out["fields"]["name"] == "DOE/JOHN" and out["fields"]["pnr"] == "XYZ123"
    assert out["fields"]["legs"][0] | {} == {
        "from": "MEL", "to": "SFO", "carrier": "UA", "flight": "61", "date": 47, "seat": "012D",
        "sequence": "0001", "compartment": "C", "status": "1",
    }  # fmt: skip


def test_diag_reader_missing_image_is_a_clear_error(tmp_path) -> None:
    result = CliRunner().invoke(_app(), ["diag", "reader", "--image", str(tmp_path / "none.jpg"), "--json"])
    out = _last_json(result.output)
    assert out["kind"] == "error" and "cannot read image" in out["errors"][0]
    assert result.exit_code == 1


def test_diag_reader_serial_json() -> None:
    with ReaderSimulator() as sim:
        # pyserial flushes input when the command opens the port, and the test cannot see that moment:
        # a scanner that repeats its read every 0.2 s until the command has returned.
        done = threading.Event()

        def scanner() -> None:
            while not done.wait(0.2):
                sim.send_bcbp(BCBP_ONE_LEG)

        thread = threading.Thread(target=scanner)
        thread.start()
        try:
            result = CliRunner().invoke(
                _app(), ["diag", "reader", "--serial", sim.port_path, "--timeout", "10", "--json"]
            )
        finally:
            done.set()
            thread.join()
    assert result.exit_code == 0, result.output
    out = _last_json(result.output)
    assert out["kind"] == "bcbp" and out["fields"]["legs"][0]["seat"] == "001A"


def test_diag_reader_needs_exactly_one_source() -> None:
    result = CliRunner().invoke(_app(), ["diag", "reader", "--json"])
    assert result.exit_code == 2


def test_bench_mrz_json_on_two_synthetic_passports() -> None:
    root = shared_data("mrz/tony_xlh_synthetic")
    result = CliRunner().invoke(_app(), ["bench", "mrz", "--dir", str(root), "--limit", "2", "--json"])
    assert result.exit_code == 0, result.output
    out = _last_json(result.output)
    assert out["images"] == 2 and out["with_truth"] == 2
    assert 0 <= out["fully_right"] <= 2 and out["seconds_per_image_mean"] > 0
    assert {"fully_right_share", "seconds_per_image_median", "load_avg_1m_before", "not_fully_right"} <= set(out)
