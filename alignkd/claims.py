"""The paper's claims as data: each chapter records the claims it tests, the book gathers them on one page.

A chapter records one row per claim with `record`, after it has computed the number that tests it:

    from alignkd import claims

    verdict, reason = claims.verdict_from_interval(low, high, claimed="> 0")
    claims.record(
        store,                                   # the chapter's ResultStore (or just the profile name)
        chapter="03_mog_alignment",
        claim_id="ppo-reward",                   # unique within the chapter; re-recording replaces the row
        claim="PPO: A-K reaches a higher final reward than K-A",
        paper_value="A-K > K-A (Figure 3)",      # what the paper reports, as the paper says it
        ours=diff, low=low, high=high,           # our estimate and its 95 % interval
        verdict=verdict, reason=reason,
        figure="fig-03-ppo",                     # the `mystnb: figure: name` of the figure that shows it
    )

A claim this book cannot test still gets a row, with `verdict="not testable here"`, `ours=None` and the reason.
Every verdict but "holds" needs a reason. Rows land in `results/<profile>/claims/<chapter>.csv` (written
atomically); the book clears a chapter's file before it executes the chapter, so the file always holds exactly
what the last execution recorded. `load` gathers every chapter's rows; the "Claims at a glance" page and
`results/<profile>/claims.csv` are made from it at build time.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .cache import ResultStore, results_root, write_atomic

VERDICTS = ("holds", "partly", "does not hold", "not testable here")
COLUMNS = ["chapter", "claim_id", "claim", "paper_value", "ours", "low", "high", "verdict", "reason", "figure"]
CLAIMS_DIR_ENV = "ALIGNKD_CLAIMS"  # set by `alignkd run`, so a one-off run never overwrites the profile's claims

_CHAPTER = re.compile(r"^\d\d_[a-z0-9_]+$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_FIGURE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*$")


def claims_dir(store_or_profile: ResultStore | str) -> Path:
    """Where a profile's per-chapter claim files live: `results/<profile>/claims/` (or `$ALIGNKD_CLAIMS`)."""
    if os.environ.get(CLAIMS_DIR_ENV):
        return Path(os.environ[CLAIMS_DIR_ENV])
    if isinstance(store_or_profile, ResultStore):
        return store_or_profile.root / "claims"
    if isinstance(store_or_profile, str) and store_or_profile:
        return results_root() / store_or_profile / "claims"
    raise TypeError(f"claims: expected a ResultStore or a profile name, got {store_or_profile!r}")


def _number(name: str, value: Any) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isinf(value):
        raise ValueError(f"claims.record: {name} = {value!r}: must be a finite number or None")
    return float(value)


def _text(name: str, value: Any, required: bool = True) -> str:
    if not isinstance(value, str):
        raise ValueError(f"claims.record: {name} = {value!r}: must be a string")
    if required and not value.strip():
        raise ValueError(f"claims.record: {name} must not be empty")
    return " ".join(value.split())  # one line: the row is a CSV line and a table cell


def make_row(chapter: str, claim_id: str, claim: str, paper_value: str | float, ours: float | None,
             low: float | None, high: float | None, verdict: str, reason: str = "", figure: str = "") -> dict:
    """Check one claim row and return it as a dict of `COLUMNS`; raises ValueError naming the bad field."""
    if not isinstance(chapter, str) or not _CHAPTER.match(chapter):
        raise ValueError(f"claims.record: chapter = {chapter!r}: must be a chapter stem like '03_mog_alignment'")
    if not isinstance(claim_id, str) or not _ID.match(claim_id):
        raise ValueError(f"claims.record: claim_id = {claim_id!r}: must be letters, digits, '_', '-', '.'")
    if verdict not in VERDICTS:
        raise ValueError(f"claims.record: verdict = {verdict!r}: must be one of {', '.join(VERDICTS)}")
    reason = _text("reason", reason, required=verdict != "holds")
    if isinstance(paper_value, (int, float)) and not isinstance(paper_value, bool):
        paper_value = f"{paper_value:g}"
    paper_value = _text("paper_value", paper_value)
    ours, low, high = _number("ours", ours), _number("low", low), _number("high", high)
    if math.isnan(low) != math.isnan(high):
        raise ValueError(f"claims.record: low = {low!r}, high = {high!r}: give both ends of the interval or neither")
    if not math.isnan(low):
        if math.isnan(ours):
            raise ValueError("claims.record: an interval (low, high) needs the estimate `ours`")
        if not low <= ours <= high:
            raise ValueError(f"claims.record: need low <= ours <= high, got {low!r} <= {ours!r} <= {high!r}")
    if math.isnan(ours) and verdict != "not testable here":
        raise ValueError(f"claims.record: ours = None is allowed only with verdict 'not testable here', not {verdict!r}")
    if figure and (not isinstance(figure, str) or not _FIGURE.match(figure)):
        raise ValueError(f"claims.record: figure = {figure!r}: must be a figure name like 'fig-03-ppo' or ''")
    return {"chapter": chapter, "claim_id": claim_id, "claim": _text("claim", claim), "paper_value": paper_value,
            "ours": ours, "low": low, "high": high, "verdict": verdict, "reason": reason, "figure": figure or ""}


def record(store_or_profile: ResultStore | str, chapter: str, claim_id: str, claim: str, paper_value: str | float,
           ours: float | None, low: float | None = None, high: float | None = None, verdict: str = "holds",
           reason: str = "", figure: str = "") -> Path:
    """Record (or replace) one tested claim of the paper in the chapter's claim file; returns that file.

    Args:
        store_or_profile: the chapter's `ResultStore`, or a profile name (`"quick"`, ...).
        chapter: the chapter's notebook stem, e.g. `"03_mog_alignment"`.
        claim_id: a short id unique within the chapter; recording the same id again replaces the row.
        claim: the claim in one sentence, as a reader would check it.
        paper_value: what the paper reports (a number, or text such as `"A-K > K-A (Figure 3)"`).
        ours: our estimate (None only when the verdict is "not testable here").
        low, high: the 95 % interval of `ours` (both or neither).
        verdict: one of `VERDICTS`; `verdict_from_interval` derives one from an interval.
        reason: why the verdict is what it is; required for every verdict but "holds".
        figure: the name of the figure showing it (`mystnb: figure: name`), linked from the claims page.
    """
    row = make_row(chapter, claim_id, claim, paper_value, ours, low, high, verdict, reason, figure)
    path = claims_dir(store_or_profile) / f"{chapter}.csv"
    table = _read(path)
    table = table[table.claim_id != claim_id]
    table = pd.concat([table, pd.DataFrame([row], columns=COLUMNS)], ignore_index=True) if len(table) else \
        pd.DataFrame([row], columns=COLUMNS)
    _write_atomic(table, path)
    return path


def _read(path: Path) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    numbers = {"ours": float, "low": float, "high": float}
    table = pd.read_csv(path, keep_default_na=False, na_values={k: [""] for k in numbers},
                        dtype={c: numbers.get(c, str) for c in COLUMNS})
    return table[COLUMNS]


def _write_atomic(table: pd.DataFrame, path: Path) -> None:
    write_atomic(path, lambda tmp: table.to_csv(tmp, index=False))


def record_rows(store_or_profile: ResultStore | str, rows: pd.DataFrame) -> None:
    """`record` every row of a table of claim rows (the chapters' `*_claim_rows` functions make them)."""
    for row in rows.to_dict("records"):
        record(store_or_profile, **{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()})


def clear(store_or_profile: ResultStore | str, chapter: str) -> None:
    """Forget a chapter's recorded claims (the book does this before it executes the chapter)."""
    (claims_dir(store_or_profile) / f"{chapter}.csv").unlink(missing_ok=True)


def load(store_or_profile: ResultStore | str, chapter_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Every recorded claim, in chapter order then recording order; only `chapter_names` if given."""
    directory = claims_dir(store_or_profile)
    names = chapter_names if chapter_names is not None else sorted(p.stem for p in directory.glob("*.csv"))
    tables = [_read(directory / f"{name}.csv") for name in names if (directory / f"{name}.csv").exists()]
    tables = [t for t in tables if len(t)]
    if not tables:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(tables, ignore_index=True)


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def verdict_from_interval(low: float, high: float, claimed: str = "> 0") -> tuple[str, str]:
    """A verdict for a claim that a quantity is above (`"> c"`) or below (`"< c"`) a bound, from its 95 % interval.

    holds: the whole interval is on the claimed side; does not hold: the whole interval is on the other side;
    partly: the interval contains the bound (the data neither confirm nor refute the claim). Returns
    (verdict, reason); the reason quotes the interval.
    """
    match = re.fullmatch(r"\s*([<>])\s*(-?[\d.eE+-]+)\s*", claimed)
    if not match:
        raise ValueError(f"verdict_from_interval: claimed = {claimed!r}: must look like '> 0' or '< 0.5'")
    side, bound = match.group(1), float(match.group(2))
    if math.isnan(low) or math.isnan(high) or low > high:
        raise ValueError(f"verdict_from_interval: need a finite interval low <= high, got [{low!r}, {high!r}]")
    interval = f"95 % interval [{_fmt(low)}, {_fmt(high)}]"
    above, below = low > bound, high < bound
    if (side == ">" and above) or (side == "<" and below):
        return "holds", f"{interval} lies {'above' if side == '>' else 'below'} {_fmt(bound)}"
    if (side == ">" and below) or (side == "<" and above):
        return "does not hold", f"{interval} lies {'below' if side == '>' else 'above'} {_fmt(bound)}, against the claim"
    return "partly", f"{interval} contains {_fmt(bound)}: the data neither confirm nor refute it"


def verdict_from_settings(verdicts: Sequence[str], what: str = "settings") -> tuple[str, str]:
    """Combine per-setting verdicts (e.g. one per β) into one: holds only if it holds in every setting.

    does not hold: it holds in none and fails outright in at least one; partly: anything in between.
    The reason counts the settings, e.g. "holds in 3 of 4 settings, does not hold in 1".
    """
    if not verdicts:
        raise ValueError("verdict_from_settings: need at least one verdict")
    unknown = sorted(set(verdicts) - set(VERDICTS))
    if unknown:
        raise ValueError(f"verdict_from_settings: unknown verdicts {unknown} (allowed: {', '.join(VERDICTS)})")
    n = len(verdicts)
    counts = {v: sum(1 for x in verdicts if x == v) for v in VERDICTS}
    reason = ", ".join(f"{v} in {k} of {n} {what}" if i == 0 else f"{v} in {k}"
                       for i, (v, k) in enumerate((v, k) for v, k in counts.items() if k))
    if counts["not testable here"] == n:
        return "not testable here", reason
    if counts["holds"] == n:
        return "holds", reason
    if counts["holds"] == 0 and counts["does not hold"] > 0:
        return "does not hold", reason
    return "partly", reason


def write_summary(table: pd.DataFrame, store_or_profile: ResultStore | str) -> Path:
    """Write the gathered claims to `results/<profile>/claims.csv` (beside the per-chapter files)."""
    path = claims_dir(store_or_profile).parent / "claims.csv"
    _write_atomic(table[COLUMNS], path)
    return path


def _estimate(row) -> str:
    if math.isnan(row.ours):
        return "—"
    if math.isnan(row.low):
        return _fmt(row.ours)
    return f"{_fmt(row.ours)} [{_fmt(row.low)}, {_fmt(row.high)}]"


VERDICT_COLOURS = {"holds": "#1b7837", "partly": "#e08214", "does not hold": "#b2182b", "not testable here": "#878787"}
FOREST_FILE = "claims_forest.png"


def forest_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The claims a forest plot can show (an estimate with its 95 % interval), in page order, with the y
    position each takes (chapters stacked top to bottom, a gap between chapters)."""
    rows = table[table["low"].notna() & table["high"].notna()].copy()
    positions, y, previous = [], 0.0, None
    for chapter in rows["chapter"]:
        if previous is not None and chapter != previous:
            y += 1.0  # a blank row between chapters
        positions.append(y)
        y, previous = y + 1.0, chapter
    rows["y"] = positions
    return rows.reset_index(drop=True)


def forest_figure(table: pd.DataFrame):
    """Every claim's estimate and 95 % interval against zero, by chapter, coloured by verdict.

    Claims measure different quantities (rewards, log-likelihoods, shares), so the x axis is symmetric-log:
    what it shows is where each interval lies against zero, which is what every verdict reads."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    rows = forest_rows(table)
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.17 * max(len(rows), 1) + 0.17 * rows["chapter"].nunique()))
    for row in rows.itertuples():
        colour = VERDICT_COLOURS[row.verdict]
        ax.plot([row.low, row.high], [row.y, row.y], color=colour, lw=1.6)
        ax.plot(row.ours, row.y, "o", color=colour, ms=3.5)
    ax.axvline(0, color="0.3", lw=0.8)
    # linear within the typical size of an estimate, logarithmic beyond: small and large claims both readable
    scale = float(rows["ours"].abs().replace(0, math.nan).median()) if len(rows) else 1.0
    ax.set_xscale("symlog", linthresh=scale if math.isfinite(scale) else 1.0, linscale=2.0)
    ax.set_yticks(rows["y"], [f"{row.chapter[:2]} {row.claim_id}" for row in rows.itertuples()], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("our estimate and its 95 % interval (symmetric-log scale; the line is zero)")
    handles = [Line2D([], [], color=c, marker="o", lw=1.6, label=v) for v, c in VERDICT_COLOURS.items()
               if v in set(rows["verdict"])]
    if handles:
        ax.legend(handles=handles, loc="lower right", fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def page(table: pd.DataFrame, titles: dict[str, str], figures: dict[str, str], profile: str,
         forest: str | None = None) -> str:
    """The "Claims at a glance" page (MyST markdown) for the claims in `table`, opening with the forest plot
    `forest` (an image path relative to the page, from `forest_figure`) when given.

    `titles` maps every chapter stem to its title (chapters that recorded nothing are named as such);
    `figures` maps figure names to the chapter showing them, so that each claim links to its figure.
    A claim naming a figure no chapter shows is an error, raised here rather than left as a dead link.
    """
    lines = [
        "# Claims at a glance",
        "",
        "Each of the paper's claims that a chapter tests, with the paper's value, ours with its 95 % interval, "
        f"and a verdict: {', '.join(VERDICTS)}. Everything here is generated when the book is built (profile "
        f"`{profile}`) from what the chapters recorded with `alignkd.claims.record`; the same table is written "
        f"to `results/{profile}/claims.csv`. A verdict's reason says how the interval or the settings decided it.",
        "",
    ]
    if len(table):
        counts = table.verdict.value_counts()
        lines += ["Of {} claims: {}.".format(len(table), ", ".join(
            f"{counts[v]} {v}" for v in VERDICTS if v in counts)), ""]
        shown = len(forest_rows(table))
        if forest:  # an image, not a numbered figure: the book's unnumbered pages share one figure counter
            lines += [f"```{{image}} {forest}", ":alt: forest plot of every claim's 95 % interval, by chapter",
                      "```", "",
                      f"*Above:* the {shown} claims with a 95 % interval: our estimate (dot) and its interval (line) "
                      f"against zero, by chapter (rows labelled with the chapter's number and the claim's id), coloured by "
                      f"verdict; the x axis is symmetric-log because the claims measure different quantities. "
                      + (f"{len(table) - shown} claim{'s have' if len(table) - shown != 1 else ' has'} no interval "
                         f"and appear{'' if len(table) - shown != 1 else 's'} only in the tables below."
                         if len(table) > shown else ""),
                      ""]
    else:
        lines += ["No chapter recorded a claim in this build.", ""]
    for chapter, rows in table.groupby("chapter", sort=False):
        lines += [f"## {titles.get(chapter, chapter)}", "", f"Tested in {{doc}}`../chapters/{chapter}`.", "",
                  "| claim | paper | ours (95 % interval) | verdict |", "|---|---|---|---|"]
        for row in rows.itertuples():
            claim = _cell(row.claim)
            if row.figure:
                if row.figure not in figures:
                    known = ", ".join(sorted(figures)) or "none"
                    raise ValueError(f"claim '{row.claim_id}' of {chapter} names figure '{row.figure}', which no "
                                     f"chapter shows (figures: {known})")
                claim += f" ({{numref}}`{row.figure}`)"
            verdict = f"**{row.verdict}**" + (f": {_cell(row.reason)}" if row.reason else "")
            lines.append(f"| {claim} | {_cell(row.paper_value)} | {_estimate(row)} | {verdict} |")
        lines.append("")
    silent = [name for name in titles if name not in set(table.chapter)]
    if silent:
        lines += ["## Chapters that recorded no claims", "",
                  "These chapters have not recorded any claim with `alignkd.claims.record` in this build:", ""]
        lines += [f"- {{doc}}`../chapters/{name}`" for name in silent]
        lines.append("")
    return "\n".join(lines)
