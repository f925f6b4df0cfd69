"""`egate ops report --since 7d`: in-service biometric monitoring from the collected outcomes.

What operators are asked to watch (BSI TR-03121, FRONTEX best practice for ABC systems), per gate,
site and day: transactions; accept and referral rates, referrals by reason; failure to acquire (no
usable face: NO_FACE, LOW_QUALITY, CAPTURE_TIMEOUT, MULTIPLE_FACES); time to decision; the
distribution of accepted match scores and its drift against the gate's own baseline (the same gate in
the `--baseline` period before the report window); tailgating and other alarms.

Alerts (printed, and at the top of the HTML):
- a gate whose referral rate, failure-to-acquire rate or median accepted score lies far from the
  fleet's (robust z-score |x - median| / (1.4826 MAD) above `--z`, with enough transactions);
- a gate whose accepted-score distribution moved against its own baseline (median shift beyond
  `--drift` and a two-sample Kolmogorov-Smirnov distance above 0.2): a degrading camera or lighting
  shows here first;
- alarm events (tailgate, forced door, device faults) above zero.

The HTML is one self-contained file (plots as inline PNGs, made with matplotlib's Agg backend).
"""

from __future__ import annotations

import base64
import html
import io
import json
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import typer

from egate.tools.ops.store import Store, StoreError

ALARM_TYPES = ("tailgate", "forced_door", "emergency", "device_fault", "outbox_full", "outbox_dropped")
MIN_TRANSACTIONS = 30


@dataclass
class GateStats:
    site: str
    gate: str
    transactions: int = 0
    accepted: int = 0
    referred: int = 0
    fta: int = 0
    referral_reasons: Counter[str] = field(default_factory=Counter)
    decision_ms: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    baseline_scores: list[float] = field(default_factory=list)
    alarms: Counter[str] = field(default_factory=Counter)

    @property
    def referral_rate(self) -> float:
        return self.referred / self.transactions if self.transactions else 0.0

    @property
    def fta_rate(self) -> float:
        return self.fta / self.transactions if self.transactions else 0.0

    @property
    def median_score(self) -> float | None:
        return statistics.median(self.scores) if self.scores else None

    def drift(self) -> tuple[float | None, float | None]:
        """(median shift, KS distance) of accepted scores against the gate's baseline."""
        if len(self.scores) < 10 or len(self.baseline_scores) < 10:
            return None, None
        shift = statistics.median(self.scores) - statistics.median(self.baseline_scores)
        return shift, ks_distance(self.scores, self.baseline_scores)


def ks_distance(a: list[float], b: list[float]) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    xa, xb = np.sort(np.asarray(a)), np.sort(np.asarray(b))
    grid = np.concatenate([xa, xb])
    cdf_a = np.searchsorted(xa, grid, side="right") / len(xa)
    cdf_b = np.searchsorted(xb, grid, side="right") / len(xb)
    return float(np.max(np.abs(cdf_a - cdf_b)))


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def robust_outliers(values: dict[Any, float], z: float) -> dict[Any, float]:
    """Keys whose value is more than `z` robust standard deviations from the median of all values."""
    if len(values) < 4:
        return {}
    arr = np.asarray(list(values.values()))
    med = float(np.median(arr))
    mad = float(np.median(np.abs(arr - med))) * 1.4826
    if mad == 0:
        mad = max(1e-3, float(np.std(arr)))
    return {k: (v - med) / mad for k, v in values.items() if abs(v - med) / mad > z}


@dataclass
class Report:
    since: float
    until: float
    gates: dict[tuple[str, str], GateStats]
    daily: dict[tuple[str, str], dict[str, Any]]  # (site, day) -> counters
    alerts: list[dict[str, Any]]


def build_report(store: Store, *, since: float, baseline_s: float, z: float, drift: float, site: str | None) -> Report:
    until = time.time()
    gates: dict[tuple[str, str], GateStats] = {}
    daily: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {"transactions": 0, "accepted": 0, "referred": 0, "fta": 0, "decision_ms": [], "alarms": 0}
    )

    def gate_of(s: str, g: str) -> GateStats:
        return gates.setdefault((s, g), GateStats(s, g))

    for row in store.outcomes(since=since - baseline_s, site=site):
        st = gate_of(row["site"], row["gate"])
        accepted = row["decision"] == "accept"
        if row["ts"] < since:
            if accepted and row["score"] is not None:
                st.baseline_scores.append(float(row["score"]))
            continue
        st.transactions += 1
        day = daily[(row["site"], datetime.fromtimestamp(row["ts"], timezone.utc).strftime("%Y-%m-%d"))]
        day["transactions"] += 1
        if accepted:
            st.accepted += 1
            day["accepted"] += 1
            if row["score"] is not None:
                st.scores.append(float(row["score"]))
        else:
            st.referred += 1
            day["referred"] += 1
            for reason in (row["reasons"] or "UNKNOWN").split(","):
                st.referral_reasons[reason] += 1
        if row["fta"]:
            st.fta += 1
            day["fta"] += 1
        if row["decision_ms"] is not None:
            st.decision_ms.append(float(row["decision_ms"]))
            day["decision_ms"].append(float(row["decision_ms"]))
    for ev in store.events(since=since, site=site):
        if ev["type"] in ALARM_TYPES:
            gate_of(ev["site"], ev["gate"]).alarms[ev["type"]] += 1
            daily[(ev["site"], datetime.fromtimestamp(ev["ts"], timezone.utc).strftime("%Y-%m-%d"))]["alarms"] += 1

    alerts: list[dict[str, Any]] = []
    busy = {k: g for k, g in gates.items() if g.transactions >= MIN_TRANSACTIONS}
    metrics: list[tuple[str, dict[tuple[str, str], float]]] = [
        ("referral_rate", {k: g.referral_rate for k, g in busy.items()}),
        ("fta_rate", {k: g.fta_rate for k, g in busy.items()}),
        ("median_score", {k: float(g.median_score) for k, g in busy.items() if g.median_score is not None}),
    ]
    for metric, values in metrics:
        fleet = float(np.median(list(values.values()))) if values else None
        for key, score in robust_outliers(values, z).items():
            alerts.append(
                {
                    "site": key[0],
                    "gate": key[1],
                    "alert": f"{metric}_far_from_fleet",
                    "value": round(float(values[key]), 4),
                    "fleet_median": round(fleet, 4) if fleet is not None else None,
                    "robust_z": round(score, 1),
                }
            )
    for key, g in gates.items():
        shift, ks = g.drift()
        if shift is not None and ks is not None and abs(shift) > drift and ks > 0.2:
            alerts.append(
                {
                    "site": key[0],
                    "gate": key[1],
                    "alert": "score_drift_vs_baseline",
                    "median_shift": round(shift, 4),
                    "ks": round(ks, 3),
                }
            )
        for kind, n in sorted(g.alarms.items()):
            alerts.append({"site": key[0], "gate": key[1], "alert": f"alarm_{kind}", "count": n})
    return Report(since, until, gates, dict(daily), alerts)


# ---------------------------------------------------------------- plots and HTML


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _plots(report: Report) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots: dict[str, str] = {}
    gates = sorted(report.gates.values(), key=lambda g: (g.site, g.gate))
    if report.daily:
        days = sorted({d for _, d in report.daily})
        sites = sorted({s for s, _ in report.daily})
        fig, ax = plt.subplots(figsize=(8, 3))
        bottom = np.zeros(len(days))
        for s in sites:
            vals = np.array([report.daily.get((s, d), {}).get("transactions", 0) for d in days], dtype=float)
            ax.bar(days, vals, bottom=bottom, label=s)
            bottom += vals
        ax.set_ylabel("transactions")
        ax.set_title("Transactions per day and site")
        ax.legend(fontsize=7)
        ax.tick_params(axis="x", rotation=45, labelsize=7)
        plots["transactions per day"] = _png(fig)
    shown = [g for g in gates if g.transactions][:60]
    if shown:
        fig, ax = plt.subplots(figsize=(max(6, len(shown) * 0.2), 3))
        labels = [f"{g.site}/{g.gate}" for g in shown]
        ax.bar(labels, [g.referral_rate * 100 for g in shown], color="tab:orange", label="referral %")
        ax.bar(labels, [g.fta_rate * 100 for g in shown], color="tab:red", label="failure to acquire %")
        ax.axhline(
            float(np.median([g.referral_rate * 100 for g in shown])),
            color="k",
            lw=1,
            ls="--",
            label="fleet median referral",
        )
        ax.set_ylabel("% of transactions")
        ax.set_title("Referral and failure-to-acquire rates per gate")
        ax.tick_params(axis="x", rotation=90, labelsize=6)
        ax.legend(fontsize=7)
        plots["referral rates"] = _png(fig)
    scored = [g for g in gates if g.scores][:40]
    if scored:
        fig, ax = plt.subplots(figsize=(max(6, len(scored) * 0.25), 3.5))
        data = []
        labels = []
        for g in scored:
            data.append(g.scores)
            labels.append(f"{g.gate}")
        ax.boxplot(data, showfliers=False)
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=90, fontsize=6)
        base = [statistics.median(g.baseline_scores) if len(g.baseline_scores) >= 10 else np.nan for g in scored]
        ax.plot(range(1, len(scored) + 1), base, "rx", label="baseline median")
        ax.set_ylabel("accepted match score")
        ax.set_title("Accepted score distribution per gate (x: the gate's own baseline)")
        ax.legend(fontsize=7)
        plots["accepted scores"] = _png(fig)
    times = [t for g in gates for t in g.decision_ms]
    if times:
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.hist(np.asarray(times) / 1000.0, bins=40, color="tab:blue")
        ax.set_xlabel("time to decision (s)")
        ax.set_ylabel("transactions")
        ax.set_title("Time to decision, whole fleet")
        plots["time to decision"] = _png(fig)
    return plots


def _fmt(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def render_html(report: Report) -> str:
    esc = html.escape
    span = (
        f"{datetime.fromtimestamp(report.since, timezone.utc):%Y-%m-%d %H:%M} to "
        f"{datetime.fromtimestamp(report.until, timezone.utc):%Y-%m-%d %H:%M} UTC"
    )
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>egate fleet report</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#eee}"
        ".alert{color:#a00}</style></head><body>",
        f"<h1>egate fleet report</h1><p>{esc(span)}; {len(report.gates)} gates</p>",
        "<h2>Alerts</h2>",
    ]
    if report.alerts:
        parts.append("<ul>")
        for a in report.alerts:
            parts.append(f"<li class='alert'>{esc(json.dumps(a))}</li>")
        parts.append("</ul>")
    else:
        parts.append("<p>none</p>")
    for title, png in _plots(report).items():
        parts.append(f"<h2>{esc(title.capitalize())}</h2><img src='data:image/png;base64,{png}'>")
    parts.append("<h2>Per gate</h2><table><tr>")
    cols = (
        "site",
        "gate",
        "transactions",
        "accept %",
        "referral %",
        "FTA %",
        "top referral reasons",
        "median score",
        "drift",
        "KS",
        "p50 s",
        "p95 s",
        "alarms",
    )
    parts += [f"<th>{c}</th>" for c in cols]
    parts.append("</tr>")
    for g in sorted(report.gates.values(), key=lambda g: (g.site, g.gate)):
        shift, ks = g.drift()
        reasons = ", ".join(f"{r} {n}" for r, n in g.referral_reasons.most_common(3))
        p50 = _percentile(g.decision_ms, 50)
        p95 = _percentile(g.decision_ms, 95)
        cells = (
            g.site,
            g.gate,
            str(g.transactions),
            _fmt(100 * g.accepted / g.transactions if g.transactions else None, 1),
            _fmt(100 * g.referral_rate, 1),
            _fmt(100 * g.fta_rate, 1),
            reasons,
            _fmt(g.median_score),
            _fmt(shift),
            _fmt(ks, 2),
            _fmt(p50 / 1000 if p50 is not None else None, 2),
            _fmt(p95 / 1000 if p95 is not None else None, 2),
            ", ".join(f"{k} {n}" for k, n in g.alarms.items()),
        )
        parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    parts.append("</table><h2>Per site and day</h2><table><tr>")
    parts += [
        f"<th>{c}</th>" for c in ("site", "day", "transactions", "accept %", "referral %", "FTA %", "p50 s", "alarms")
    ]
    parts.append("</tr>")
    for (s, d), v in sorted(report.daily.items()):
        n = v["transactions"]
        p50 = _percentile(v["decision_ms"], 50)
        day_cells = (
            s,
            d,
            str(n),
            _fmt(100 * v["accepted"] / n if n else None, 1),
            _fmt(100 * v["referred"] / n if n else None, 1),
            _fmt(100 * v["fta"] / n if n else None, 1),
            _fmt(p50 / 1000 if p50 is not None else None, 2),
            str(v["alarms"]),
        )
        parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in day_cells) + "</tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts)


def report_command(
    since: str = typer.Option("7d", "--since", help="Report window: 7d, 24h, or an ISO date."),
    baseline: str = typer.Option("30d", "--baseline", help="Each gate's baseline: this long before the window."),
    site: str | None = typer.Option(None, "--site", help="Only this site."),
    out: Path = typer.Option(Path("egate-report.html"), "--out", help="HTML file to write."),
    z: float = typer.Option(3.5, "--z", help="Robust z-score beyond which a gate is far from the fleet."),
    drift: float = typer.Option(0.05, "--drift", help="Median accepted-score shift that counts as drift."),
    db: str = typer.Option("egate-ops.sqlite", "--db", envvar="EGATE_OPS_DB", help="Ops database."),
    as_json: bool = typer.Option(False, "--json", help="Print alerts and per-gate figures as JSON."),
) -> None:
    """Write the fleet's biometric health report (HTML with plots) and print alerts."""
    from egate.tools.ops.collect import parse_since

    start = parse_since(since)
    baseline_s = start - parse_since(baseline, now=start)
    try:
        store = Store.open(db)
    except (StoreError, OSError) as exc:
        typer.echo(f"egate ops: {exc}", err=True)
        raise typer.Exit(2) from None
    with store:
        report = build_report(store, since=start, baseline_s=baseline_s, z=z, drift=drift, site=site)
    out.write_text(render_html(report))
    if as_json:
        gates = [
            {
                "site": g.site,
                "gate": g.gate,
                "transactions": g.transactions,
                "referral_rate": round(g.referral_rate, 4),
                "fta_rate": round(g.fta_rate, 4),
                "median_score": g.median_score,
                "median_shift": g.drift()[0],
                "ks": g.drift()[1],
                "alarms": dict(g.alarms),
            }
            for g in sorted(report.gates.values(), key=lambda g: (g.site, g.gate))
        ]
        sys.stdout.write(json.dumps({"html": str(out), "alerts": report.alerts, "gates": gates}) + "\n")
    else:
        typer.echo(f"report: {out} ({len(report.gates)} gates)")
        for a in report.alerts:
            typer.echo("ALERT " + " ".join(f"{k}={v}" for k, v in a.items()))
    raise typer.Exit(1 if report.alerts else 0)


def register(app: typer.Typer) -> None:
    """Add `report` to the `ops` group."""
    app.command("report")(report_command)
