"""The HTML report: one self-contained file of plots and a summary built from the datasets.

:func:`build_report` reads the committed files through the same DuckDB views as
``driftline query`` (live files from each manifest, so a compaction in progress never
counts a row twice), aggregates with SQL, draws each plot with matplotlib into inline
SVG, and returns one HTML page with no script, font or image fetched at view time.

Why matplotlib SVG: the page must open anywhere without a network (mail attachments,
air-gapped hosts, CI artifacts).  Plotly or Vega would inline 1-5 MB of JavaScript per
report and draw only where scripts run; static SVG needs no script at all, is a few
hundred kB, scales without blur, prints, and its text is selectable.  matplotlib is the
most widely kept plotting library of the Python ecosystem and runs headless through its
object API (no pyplot global state).

Plots: events and refusals by reason over time, PII findings by type, model latency
percentiles over time, calls/errors/fallbacks by tier, cost by model and source with
budget events, drift (PSI per feature) per window, alerts on a timeline, and a summary
table.  A plot with nothing to show says so instead of disappearing.
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import duckdb
import polars as pl

from driftline import __version__

TIME_COLUMNS = {"enriched": "event_time", "rejected": "src_timestamp", "audit": "processed_at", "metrics": "window_start", "alerts": "window_start"}
BUCKETS = [1, 5, 10, 30, 60, 300, 600, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400]
MAX_BUCKETS = 120
TOP_REASONS = 7
PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974", "#64B5CD"]


@dataclass
class Plot:
    """One figure of the report: an inline SVG, and whether it had data to draw."""

    name: str
    title: str
    caption: str
    svg: str
    empty: bool


class Data:
    """The datasets as DuckDB views, filtered to ``[since, until)`` on each one's time column."""

    def __init__(self, con: duckdb.DuckDBPyConnection, views: list[str], since: datetime | None, until: datetime | None) -> None:
        self.con = con
        self.views = set(views)
        self.since = since
        self.until = until

    def has(self, view: str, *columns: str) -> bool:
        if view not in self.views:
            return False
        have = set(self.con.sql(f'SELECT * FROM "{view}" LIMIT 0').to_arrow_table().column_names)
        return all(c in have for c in columns)

    def where(self, view: str, extra: str = "", *, column: str | None = None) -> str:
        col = column or TIME_COLUMNS.get(view)
        conds = [extra] if extra else []
        if col is not None and self.since is not None:
            conds.append(f"{col} >= TIMESTAMPTZ '{self.since.isoformat()}'")
        if col is not None and self.until is not None:
            conds.append(f"{col} < TIMESTAMPTZ '{self.until.isoformat()}'")
        return ("WHERE " + " AND ".join(conds)) if conds else ""

    def frame(self, sql: str) -> pl.DataFrame:
        df = pl.from_arrow(self.con.sql(sql).to_arrow_table())
        assert isinstance(df, pl.DataFrame)
        return df


# -- drawing -----------------------------------------------------------------------


def _figure(height: float = 3.2) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(9.6, height), layout="constrained")


def _svg(fig: Any) -> str:
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "driftline", "svg.fonttype": "path", "font.size": 9}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _style(ax: Any) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)


def _time_axis(ax: Any) -> None:
    import matplotlib.dates as mdates

    loc = mdates.AutoDateLocator(minticks=3, maxticks=7)
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc, tz=timezone.utc))


def _empty(name: str, title: str, why: str) -> Plot:
    fig = _figure(1.4)
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, why, ha="center", va="center", color="#777777", fontsize=11)
    return Plot(name, title, why, _svg(fig), True)


def _bucket_seconds(span: timedelta) -> int:
    for b in BUCKETS:
        if span.total_seconds() / b <= MAX_BUCKETS:
            return b
    return BUCKETS[-1]


def _bucket_label(seconds: int) -> str:
    if seconds % 86400 == 0:
        return f"{seconds // 86400} d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def _bucket(col: str, seconds: int) -> str:
    return f"time_bucket(INTERVAL '{seconds} seconds', {col}, TIMESTAMPTZ '2000-01-01 00:00:00+00')"


def events_over_time(d: Data, seconds: int) -> Plot:
    """Accepted and refused events per bucket of event time, and refusals by first reason code
    (a refusal without a readable event time, e.g. bad JSON, is counted on the right only)."""
    name, title = "events", "Events and refusals over time"
    if not d.has("enriched", "event_time") and not d.has("rejected", "event_time"):
        return _empty(name, title, "no enriched or rejected rows")
    parts = []
    if d.has("enriched", "event_time"):
        parts.append(f"SELECT {_bucket('event_time', seconds)} AS t, 'accepted' AS series, count(*) AS n FROM enriched {d.where('enriched')} GROUP BY ALL")
    if d.has("rejected", "event_time", "reason_codes", "stage"):
        parts.append(
            f"SELECT {_bucket('event_time', seconds)} AS t, coalesce(reason_codes[1], stage, 'unknown') AS series, count(*) AS n "
            f"FROM rejected {d.where('rejected', column='coalesce(event_time, src_timestamp)')} GROUP BY ALL"
        )
    df = d.frame(" UNION ALL ".join(parts))
    if df.height == 0:
        return _empty(name, title, "no events in the selected range")
    refused = df.filter(pl.col("series") != "accepted").group_by("series").agg(pl.col("n").sum()).sort("n")
    keep = refused.sort("n", descending=True)["series"].head(TOP_REASONS).to_list()
    timed = df.filter(pl.col("t").is_not_null()).with_columns(
        pl.when((pl.col("series") == "accepted") | pl.col("series").is_in(keep)).then(pl.col("series")).otherwise(pl.lit("other reasons")).alias("series")
    )
    wide = timed.group_by("t", "series").agg(pl.col("n").sum()).pivot(on="series", index="t", values="n").sort("t").fill_null(0)
    fig = _figure(4.2)
    axes = fig.subplot_mosaic([["acc", "why"], ["ref", "why"]], width_ratios=[3, 2], height_ratios=[3, 2])
    ax, axr, ax2 = axes["acc"], axes["ref"], axes["why"]
    t = wide["t"].to_list()
    width = timedelta(seconds=seconds * 0.9)
    if "accepted" in wide.columns:
        ax.bar(t, wide["accepted"].to_list(), width=width, align="edge", color=PALETTE[0], label="accepted")
    ax.set_ylabel(f"accepted / {_bucket_label(seconds)}")
    bottom = [0] * wide.height
    reasons = [r for r in keep if r in wide.columns] + (["other reasons"] if "other reasons" in wide.columns else [])
    for i, r in enumerate(reasons):
        vals = wide[r].to_list()
        axr.bar(t, vals, width=width, bottom=bottom, align="edge", color=PALETTE[(i + 1) % len(PALETTE)], label=r)
        bottom = [a + b for a, b in zip(bottom, vals)]
    axr.set_ylabel(f"refused / {_bucket_label(seconds)}")
    if reasons:
        axr.legend(fontsize=6.5, ncols=2, frameon=False, loc="upper left", bbox_to_anchor=(0, -0.35))
    for a in (ax, axr):
        _time_axis(a)
        _style(a)
    axr.sharex(ax)
    if refused.height:
        ax2.barh(refused["series"].to_list(), refused["n"].to_list(), color=PALETTE[3])
        for y, v in enumerate(refused["n"].to_list()):
            ax2.text(v, y, f" {v:,}", va="center", fontsize=7)
    else:
        ax2.text(0.5, 0.5, "no refusals", ha="center", va="center", transform=ax2.transAxes, color="#777777")
    ax2.set_xlabel("refused events by first reason code")
    _style(ax2)
    accepted = int(df.filter(pl.col("series") == "accepted")["n"].sum())
    n_refused = int(refused["n"].sum()) if refused.height else 0
    untimed = int(df.filter(pl.col("t").is_null() & (pl.col("series") != "accepted"))["n"].sum())
    caption = f"{accepted:,} accepted and {n_refused:,} refused events (bars: {_bucket_label(seconds)} of event time)"
    caption += f"; {untimed:,} refusals without a readable event time are counted on the right only." if untimed else "."
    return Plot(name, title, caption, _svg(fig), False)


def pii_by_type(d: Data) -> Plot:
    name, title = "pii", "PII findings by type"
    view = "audit" if d.has("audit", "pii_total") else "enriched" if d.has("enriched", "pii_total") else None
    if view is None:
        return _empty(name, title, "no audit or enriched rows with PII counts")
    cols = [c for c in d.frame(f'SELECT * FROM "{view}" LIMIT 0').columns if c.startswith("pii_") and c not in ("pii_total", "pii_findings")]
    sums = d.frame(f"SELECT {', '.join(f'sum({c})::BIGINT AS {c}' for c in cols)}, count_if(pii_total > 0) AS with_pii, count(*) AS n FROM {view} {d.where(view)}")
    row = sums.row(0, named=True)
    counts = sorted(((c[4:].upper(), int(row[c] or 0)) for c in cols), key=lambda kv: kv[1])
    if not row["n"] or not any(v for _, v in counts):
        return _empty(name, title, "no PII found in the selected range")
    fig = _figure(3.0)
    ax = fig.add_subplot()
    ax.barh([k for k, _ in counts], [v for _, v in counts], color=PALETTE[4])
    for y, (_, v) in enumerate(counts):
        ax.text(v, y, f" {v:,}", va="center", fontsize=7)
    ax.set_xlabel("findings (masked before any model or file saw them)")
    _style(ax)
    total = sum(v for _, v in counts)
    return Plot(name, title, f"{total:,} findings in {int(row['with_pii'] or 0):,} of {int(row['n']):,} events ({view} dataset).", _svg(fig), False)


def latency_percentiles(d: Data, seconds: int) -> Plot:
    name, title = "latency", "Model latency percentiles"
    if not d.has("enriched", "event_time", "model_latency_ms"):
        return _empty(name, title, "no model latency recorded")
    df = d.frame(
        f"SELECT {_bucket('event_time', seconds)} AS t, quantile_cont(model_latency_ms, 0.5) AS p50, quantile_cont(model_latency_ms, 0.95) AS p95, "
        f"quantile_cont(model_latency_ms, 0.99) AS p99, count(*) AS n FROM enriched {d.where('enriched', 'model_latency_ms IS NOT NULL AND event_time IS NOT NULL')} GROUP BY ALL ORDER BY t"
    )
    if df.height == 0:
        return _empty(name, title, "no model calls in the selected range")
    fig = _figure()
    ax = fig.add_subplot()
    for i, q in enumerate(("p50", "p95", "p99")):
        ax.plot(df["t"].to_list(), df[q].to_list(), marker="o", markersize=2.5, linewidth=1.3, color=PALETTE[i], label=q)
    ax.set_ylabel("latency (ms)")
    ax.legend(frameon=False, fontsize=8)
    _time_axis(ax)
    _style(ax)
    overall = d.frame(f"SELECT quantile_cont(model_latency_ms, [0.5, 0.95, 0.99]) AS q FROM enriched {d.where('enriched', 'model_latency_ms IS NOT NULL')}")["q"][0]
    return Plot(name, title, f"Per {_bucket_label(seconds)} of event time; over the whole range p50 {overall[0]:.1f} ms, p95 {overall[1]:.1f} ms, p99 {overall[2]:.1f} ms.", _svg(fig), False)


def errors_by_tier(d: Data) -> Plot:
    name, title = "tiers", "Calls, errors and fallbacks by tier"
    if not d.has("enriched", "model_tier", "model_error_class", "model_tier_index"):
        return _empty(name, title, "no model tier columns")
    df = d.frame(
        "SELECT coalesce(model_tier, 'none') AS tier, min(model_tier_index) AS idx, count(*) AS calls, count(model_error_class) AS errors, "
        "count_if(model_tier_index > 0) AS fallbacks "
        f"FROM enriched {d.where('enriched')} GROUP BY ALL ORDER BY idx NULLS LAST, tier"
    )
    if df.height == 0:
        return _empty(name, title, "no model calls in the selected range")
    fig = _figure()
    ax = fig.add_subplot()
    tiers = df["tier"].to_list()
    x = list(range(len(tiers)))
    w = 0.27
    for i, (col, label) in enumerate((("calls", "answered by this tier"), ("errors", "errors"), ("fallbacks", "fell back to this tier"))):
        vals = df[col].to_list()
        ax.bar([xi + (i - 1) * w for xi in x], vals, width=w, color=PALETTE[[0, 3, 1][i]], label=label)
        for xi, v in zip(x, vals):
            ax.text(xi + (i - 1) * w, v, f"{v:,}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, tiers)
    ax.set_ylabel("events")
    ax.legend(frameon=False, fontsize=8)
    _style(ax)
    fb = int(df["fallbacks"].sum())
    return Plot(name, title, f"{int(df['calls'].sum()):,} events over {len(tiers)} tier(s); {int(df['errors'].sum()):,} errors, {fb:,} answered by a fallback tier.", _svg(fig), False)


def cost_by_model_and_source(d: Data) -> Plot:
    name, title = "cost", "Cost and budget by model and source"
    if not d.has("enriched", "model_cost_usd", "model_name", "source"):
        return _empty(name, title, "no cost columns")
    df = d.frame(
        "SELECT coalesce(model_name, 'none') AS model, coalesce(source, 'unknown') AS source, sum(model_cost_usd) AS cost, count(*) AS calls, "
        "count(model_budget_event) AS budget_events, coalesce(sum(model_cost_saved_usd), 0) AS saved "
        f"FROM enriched {d.where('enriched')} GROUP BY ALL ORDER BY model, source"
    )
    if df.height == 0:
        return _empty(name, title, "no model calls in the selected range")
    fig = _figure(3.4)
    ax, ax2 = fig.subplots(1, 2, width_ratios=[3, 2])
    wide = df.pivot(on="source", index="model", values="cost").fill_null(0).sort("model")
    sources = [c for c in wide.columns if c != "model"]
    left = [0.0] * wide.height
    for i, s in enumerate(sources):
        vals = [float(v or 0) for v in wide[s].to_list()]
        ax.barh(wide["model"].to_list(), vals, left=left, color=PALETTE[i % len(PALETTE)], label=s)
        left = [a + b for a, b in zip(left, vals)]
    for y, v in enumerate(left):
        ax.text(v, y, f" ${v:,.4f}", va="center", fontsize=7)
    ax.set_xlabel("cost (USD), stacked by source")
    ax.legend(frameon=False, fontsize=7, loc="lower right")
    if max(left, default=0) <= 0:
        ax.set_xlim(0, 1)
        ax.text(0.5, 0.5, "no cost: every answer came from a free (local) tier", transform=ax.transAxes, ha="center", color="#777777")
    _style(ax)
    budget = df.group_by("source").agg(pl.col("budget_events").sum(), pl.col("calls").sum()).sort("source")
    ax2.bar(budget["source"].to_list(), budget["budget_events"].to_list(), color=PALETTE[3])
    ax2.set_ylabel("budget events (downgrades, refusals)")
    ax2.tick_params(axis="x", labelrotation=20)
    if int(budget["budget_events"].sum()) == 0:
        ax2.set_ylim(0, 1)
        ax2.text(0.5, 0.5, "no budget events", transform=ax2.transAxes, ha="center", color="#777777")
    _style(ax2)
    total = float(df["cost"].sum() or 0)
    return Plot(
        name, title, f"${total:,.4f} in total over {int(df['calls'].sum()):,} events; {int(df['budget_events'].sum()):,} budget events; ${float(df['saved'].sum()):,.4f} saved by the cache.", _svg(fig), False
    )


def drift_per_window(d: Data) -> Plot:
    name, title = "drift", "Drift (PSI per feature) per window"
    if not d.has("metrics", "window_start", "drift"):
        return _empty(name, title, "no metrics windows with drift")
    df = d.frame(
        "SELECT window_start AS t, f.feature AS feature, max(f.psi) AS psi FROM (SELECT window_start, unnest(drift) AS f FROM metrics "
        f"{d.where('metrics')}) GROUP BY ALL ORDER BY t, feature"
    )
    df = df.filter(pl.col("psi").is_not_null() & pl.col("psi").is_finite())
    if df.height == 0:
        return _empty(name, title, "no drift scores yet (windows need a reference: monitoring.drift)")
    import numpy as np
    from matplotlib.colors import BoundaryNorm, ListedColormap

    times = df["t"].unique().sort().to_list()
    features = df["feature"].unique().sort().to_list()
    grid = np.full((len(features), len(times)), np.nan)
    col, row = {t: i for i, t in enumerate(times)}, {f: i for i, f in enumerate(features)}
    for t, feature, psi in df.iter_rows():
        grid[row[feature], col[t]] = psi
    fig = _figure(max(2.4, 0.22 * len(features) + 1.2))
    ax = fig.add_subplot()
    cmap = ListedColormap(["#eef5ea", "#c7e3b8", "#fdd9a0", "#f4a261", "#d62828"])
    norm = BoundaryNorm([0, 0.05, 0.1, 0.15, 0.25, 10], cmap.N)
    mesh = ax.pcolormesh(range(len(times) + 1), range(len(features) + 1), np.ma.masked_invalid(grid), cmap=cmap, norm=norm, edgecolors="white", linewidth=0.5)
    ax.set_yticks([i + 0.5 for i in range(len(features))], features, fontsize=7)
    ax.invert_yaxis()  # alphabetical from the top
    step = max(1, len(times) // 12)
    fmt = "%H:%M" if times[-1] - times[0] < timedelta(days=1) else "%m-%d %H:%M"
    ax.set_xticks([i + 0.5 for i in range(0, len(times), step)], [times[i].astimezone(timezone.utc).strftime(fmt) for i in range(0, len(times), step)], fontsize=7)
    ax.set_xlabel("window start (UTC)")
    cb = fig.colorbar(mesh, ax=ax, ticks=[0, 0.05, 0.1, 0.15, 0.25], shrink=0.9)
    cb.set_label("PSI (max over keys)")
    drifted = int((df["psi"] >= 0.25).sum())
    return Plot(name, title, f"{len(features)} features over {len(times)} windows; {drifted} feature-window(s) at PSI ≥ 0.25 (significant), 0.1-0.25 moderate.", _svg(fig), False)


def alerts_timeline(d: Data) -> Plot:
    name, title = "alerts", "Alerts"
    if not d.has("alerts", "rule", "state", "window_start"):
        return _empty(name, title, "no alerts dataset (no alert fired)")
    df = d.frame(f"SELECT rule, key, state, window_start AS t, severity FROM alerts {d.where('alerts')} ORDER BY t")
    if df.height == 0:
        return _empty(name, title, "no alerts in the selected range")
    df = df.with_columns((pl.col("rule") + pl.lit(" · ") + pl.col("key")).alias("lane"))
    lanes = sorted(df["lane"].unique().to_list())
    fig = _figure(max(1.8, 0.3 * len(lanes) + 1.0))
    ax = fig.add_subplot()
    for y, lane in enumerate(lanes):
        sub = df.filter(pl.col("lane") == lane).sort("t")
        fired_at = None
        for row in sub.iter_rows(named=True):
            if row["state"] == "firing":
                fired_at = row["t"]
            elif fired_at is not None:
                ax.plot([fired_at, row["t"]], [y, y], color=PALETTE[3], linewidth=4, alpha=0.35, solid_capstyle="butt")
                fired_at = None
        for state, marker, color in (("firing", "v", PALETTE[3]), ("resolved", "o", PALETTE[2])):
            s = sub.filter(pl.col("state") == state)
            if s.height:
                ax.scatter(s["t"].to_list(), [y] * s.height, marker=marker, color=color, s=28, zorder=3)
    ax.set_yticks(range(len(lanes)), [lane if len(lane) < 60 else lane[:57] + "…" for lane in lanes], fontsize=7)
    ax.set_ylim(-0.7, len(lanes) - 0.3)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker=m, color=c, linestyle="", label=lbl) for m, c, lbl in (("v", PALETTE[3], "firing"), ("o", PALETTE[2], "resolved"))]
    ax.legend(handles=handles, frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _time_axis(ax)
    _style(ax)
    fired = int((df["state"] == "firing").sum())
    return Plot(name, title, f"By window start (event time). {fired} firing and {int((df['state'] == 'resolved').sum())} resolved alert event(s) on {len(lanes)} rule·key lane(s).", _svg(fig), False)


# -- summary and page ----------------------------------------------------------------


def summary(d: Data, files: dict[str, tuple[int, int]]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    n_ok = n_bad = 0
    if d.has("enriched", "event_time"):
        r = d.frame(
            "SELECT count(*) AS n, min(event_time) AS lo, max(event_time) AS hi, count(model_label) AS answered, count(model_error_class) AS errors, "
            "count_if(model_tier_index > 0) AS fallbacks, sum(model_cost_usd) AS cost, quantile_cont(model_latency_ms, 0.95) AS p95, count_if(pii_total > 0) AS pii "
            f"FROM enriched {d.where('enriched')}"
        ).row(0, named=True)
        n_ok = _int(r["n"])
        rows += [("event time range", f"{_fmt_time(r['lo'])} — {_fmt_time(r['hi'])}")]
    if d.has("rejected"):
        n_bad = _int(d.frame(f"SELECT count(*) AS n FROM rejected {d.where('rejected')}")["n"][0])
    total = n_ok + n_bad
    rows += [("events", f"{total:,}"), ("accepted (enriched)", f"{n_ok:,}"), ("refused (rejected)", f"{n_bad:,} ({100 * n_bad / total:.1f}%)" if total else "0")]
    if n_ok:
        rows += [
            ("events with PII (masked)", f"{_int(r['pii']):,}"),
            ("model answers / errors / fallbacks", f"{_int(r['answered']):,} / {_int(r['errors']):,} / {_int(r['fallbacks']):,}"),
            ("model cost", f"${float(r['cost'] or 0):,.4f}"),
            ("latency p95", f"{float(r['p95']):.1f} ms" if r["p95"] is not None else "—"),
        ]
    if d.has("metrics", "drifted_features"):
        m = d.frame(f"SELECT count(*) AS n, count_if(drifted_features > 0) AS drifted FROM metrics {d.where('metrics')}").row(0, named=True)
        rows.append(("metric windows (with drifted features)", f"{_int(m['n']):,} ({_int(m['drifted']):,})"))
    if d.has("alerts", "state"):
        a = d.frame(f"SELECT count_if(state = 'firing') AS fired, count_if(state = 'resolved') AS resolved FROM alerts {d.where('alerts')}").row(0, named=True)
        rows.append(("alerts fired / resolved", f"{_int(a['fired'])} / {_int(a['resolved'])}"))
    rows.append(("datasets (rows in files)", ", ".join(f"{k}: {v[0]:,} in {v[1]:,}" for k, v in sorted(files.items())) or "none"))
    return rows


def _int(v: Any) -> int:
    """SQL aggregates over no rows are NULL: count them as 0."""
    return int(v or 0)


def _fmt_time(v: Any) -> str:
    return v.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if isinstance(v, datetime) else "—"


CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#222;margin:0;background:#f6f7f9}
main{max-width:1040px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:0 0 6px}
.meta{color:#666;margin-bottom:18px}
section{background:#fff;border:1px solid #e3e5e8;border-radius:8px;padding:14px 16px;margin:0 0 16px}
figure{margin:0}figure svg{width:100%;height:auto;display:block}
figcaption{color:#555;font-size:13px;margin-top:4px}
table{border-collapse:collapse;width:100%}td{padding:4px 8px;border-bottom:1px solid #eee}td:first-child{color:#555;width:40%}
.empty figcaption{font-style:italic}
"""


def render_html(plots: list[Plot], summary_rows: list[tuple[str, str]], *, root: str, since: datetime | None, until: datetime | None, generated: datetime) -> str:
    rng = f"{since.isoformat() if since else 'beginning'} → {until.isoformat() if until else 'now'}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>driftline report — {html.escape(root)}</title><style>{CSS}</style></head><body><main>",
        "<h1>driftline report</h1>",
        f'<div class="meta">datasets: <code>{html.escape(root)}</code> · range: {html.escape(rng)} · generated {generated.strftime("%Y-%m-%d %H:%M UTC")} by driftline {__version__}</div>',
        '<section id="summary"><h2>Summary</h2><table>',
        *(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in summary_rows),
        "</table></section>",
    ]
    for p in plots:
        cls = "plot empty" if p.empty else "plot"
        parts.append(f'<section id="{p.name}"><h2>{html.escape(p.title)}</h2><figure class="{cls}" data-plot="{p.name}" data-empty="{str(p.empty).lower()}">')
        parts.append(p.svg)
        parts.append(f"<figcaption>{html.escape(p.caption)}</figcaption></figure></section>")
    parts.append("</main></body></html>")
    return "\n".join(parts)


def build_report(
    root: str,
    *,
    storage_options: dict[str, str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    now: datetime | None = None,
    on_step: Callable[[str], None] | None = None,
) -> tuple[str, list[Plot]]:
    """The report's HTML and its plots, from the datasets under ``root``."""
    from driftline.commands.query import connect
    from driftline.sinks.parquet.manifest import load_entries
    from driftline.sinks.parquet.store import open_store

    con, views = connect(root, storage_options)
    d = Data(con, views, since, until)
    step = on_step or (lambda _s: None)
    span = timedelta(hours=1)
    if d.has("enriched", "event_time"):
        lo, hi = d.frame(f"SELECT min(event_time) AS lo, max(event_time) AS hi FROM enriched {d.where('enriched')}").row(0)
        if lo is not None and hi is not None:
            span = max(hi - lo, timedelta(seconds=1))
    seconds = _bucket_seconds(span)
    builders: list[tuple[str, Callable[[], Plot]]] = [
        ("events", lambda: events_over_time(d, seconds)),
        ("pii", lambda: pii_by_type(d)),
        ("latency", lambda: latency_percentiles(d, seconds)),
        ("tiers", lambda: errors_by_tier(d)),
        ("cost", lambda: cost_by_model_and_source(d)),
        ("drift", lambda: drift_per_window(d)),
        ("alerts", lambda: alerts_timeline(d)),
    ]
    plots = []
    for label, build in builders:
        step(label)
        plots.append(build())
    step("summary")
    store = open_store(root, storage_options)
    files = {}
    for v in views:
        entries = load_entries(store, v)
        files[v] = (sum(f.rows for e in entries for f in e.files), sum(len(e.files) for e in entries))
    rows = summary(d, files)
    page = render_html(plots, rows, root=root, since=since, until=until, generated=now or datetime.now(timezone.utc))
    return page, plots
