""""Did it get better?": the held-out numbers per iteration, a one-line verdict, and the sample comparison.

The numbers come from the run's status (each phase's metrics arrive there from its summary,
the termination message on a cluster): the train phase's held-out accuracy of theta_i against
the base and against its training reference, and the annotate phase's judge trust (how often
round i's judge agreed with the held-out human labels before its self-labels were used). The
base is the yardstick: against itself every pair ties, so its row reads "chance" (0.5).

The verdict uses one standard error of a proportion on n pairs, `sqrt(0.25 / n)`, and calls a
difference real only beyond two of them (choice: about 95% for one comparison).

`build_comparison_png` puts the base and every iteration on the same prompts and seeds side by
side, nearest-neighbour upscaled so 32-pixel toy samples are visible. Pure except for Pillow.
"""

from __future__ import annotations

import html
import io
import math
from dataclasses import dataclass

from sail_operator.local.state import LocalState

MIN_TILE = 128  # upscale samples to at least this many pixels per side (nearest neighbour)
MAX_TILE = 256  # and shrink bigger ones to this, so the comparison stays a few MB at most


@dataclass(frozen=True)
class IterationQuality:
    iteration: int
    accuracy_vs_base: float | None = None
    accuracy_vs_reference: float | None = None
    margin_vs_base: float | None = None
    pairs: int = 0
    judge_trust: float | None = None  # of the judge that labelled this round's pairs (rounds only)
    judge_pairs: int = 0


def collect_quality(state: LocalState) -> list[IterationQuality]:
    """One entry per iteration whose train or annotate phase reported held-out numbers."""
    out = []
    for record in sorted(state.status.iterations, key=lambda r: r.iteration):
        phases = {p.phase: p.metrics for p in record.phases if p.result == "Succeeded"}
        train, annotate = phases.get("train", {}), phases.get("annotate", {})
        if "heldout_accuracy" not in train and "judge_trust" not in annotate:
            continue
        out.append(IterationQuality(
            iteration=record.iteration, accuracy_vs_base=train.get("heldout_accuracy_vs_base"),
            accuracy_vs_reference=train.get("heldout_accuracy"), margin_vs_base=train.get("heldout_margin_vs_base"),
            pairs=int(train.get("heldout_pairs", 0)), judge_trust=annotate.get("judge_trust"),
            judge_pairs=int(annotate.get("judge_trust_pairs", 0)),
        ))
    return out


def standard_error(pairs: int) -> float:
    return math.sqrt(0.25 / pairs) if pairs > 0 else float("inf")


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def _name(iteration: int) -> str:
    return "step 0" if iteration == 0 else f"round {iteration}"


def compute_verdict(rows: list[IterationQuality]) -> str:
    """One line: better than the base or not, a regression to the best iteration, self-labels that look like noise."""
    scored = [r for r in rows if r.accuracy_vs_base is not None and r.pairs > 0]
    if not scored:
        return ("No held-out numbers yet: the run holds out no human pairs (sail.validation) or no train "
                "phase has finished, so the report cannot say whether it got better.")
    last, n = scored[-1], scored[-1].pairs
    assert last.accuracy_vs_base is not None
    gap = 2 * standard_error(n)
    if last.accuracy_vs_base - 0.5 > gap:
        text = (f"Better than the base: {_name(last.iteration)} prefers the human-preferred image on "
                f"{_pct(last.accuracy_vs_base)} of {n} held-out pairs (base: 50%, chance; +-{_pct(gap / 2)}).")
    elif 0.5 - last.accuracy_vs_base > gap:
        text = (f"Worse than the base: {_name(last.iteration)} agrees with only {_pct(last.accuracy_vs_base)} of "
                f"{n} held-out human pairs, more than two standard errors ({_pct(gap)}) below chance.")
    else:
        text = (f"Not measurably better than the base: {_name(last.iteration)} agrees with {_pct(last.accuracy_vs_base)} "
                f"of {n} held-out human pairs, within two standard errors ({_pct(gap)}) of chance.")
    best = max(scored, key=lambda r: (r.accuracy_vs_base or 0.0, -r.iteration))
    if best is not last and (best.accuracy_vs_base or 0.0) - last.accuracy_vs_base > gap:
        text += (f" {_name(last.iteration).capitalize()} regressed from {_name(best.iteration)} "
                 f"({_pct(best.accuracy_vs_base or 0.0)}): `sail export --iteration best` exports that one.")
    noisy = [r for r in rows if r.judge_trust is not None and r.judge_pairs > 0
             and r.judge_trust - 0.5 <= 2 * standard_error(r.judge_pairs)]
    if noisy:
        text += (" Self-labels indistinguishable from noise in " + ", ".join(_name(r.iteration) for r in noisy)
                 + " (judge trust near 50%).")
    return text


def _cell(value: float | None, percent: bool = True) -> str:
    if value is None:
        return "-"
    return _pct(value) if percent else f"{value:.4g}"


def build_quality_table(rows: list[IterationQuality]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows (base first) of the per-iteration table shared by `sail status` and the report."""
    headers = ["model", "held-out acc. vs base", "vs its reference", "margin vs base", "judge trust", "pairs"]
    table = [["base", "50% (chance)", "-", "0", "-", str(max((r.pairs for r in rows), default=0))]]
    for r in rows:
        table.append([_name(r.iteration), _cell(r.accuracy_vs_base), _cell(r.accuracy_vs_reference),
                      _cell(r.margin_vs_base, percent=False), _cell(r.judge_trust), str(r.pairs or r.judge_pairs)])
    return headers, table


def render_quality_text(state: LocalState) -> str:
    """`sail status` lines: the verdict and the per-iteration table; empty when nothing is measured yet."""
    from sail_operator.report.scorers import render_scorer_text

    rows = collect_quality(state)
    if not rows:
        return render_scorer_text(state)
    headers, table = build_quality_table(rows)
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(headers)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in [headers, *table]]
    return "\n".join([compute_verdict(rows), *lines, *filter(None, [describe_best(state), render_scorer_text(state)])])


def describe_best(state: LocalState) -> str:
    """The round gate's best checkpoint (spec.roundGate), or "" without one."""
    best = state.status.best_checkpoint
    if best is None:
        return ""
    return f"best checkpoint by {best.metric} ({best.value:.4g}): iteration {best.iteration}, {best.uri}"


def render_quality_html(state: LocalState, comparison: bytes | None) -> str:
    """The report's top section: verdict, table, and the side-by-side samples (when there are grids)."""
    from sail_operator.report.html import data_uri  # here: html imports this module at its top
    from sail_operator.report.scorers import render_scorer_html

    rows = collect_quality(state)
    esc = html.escape
    parts = [f"<section id=quality><h2>Did it get better?</h2><p id=verdict><b>{esc(compute_verdict(rows))}</b></p>"]
    if rows:
        headers, table = build_quality_table(rows)
        parts.append("<table id=heldout><tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr>"
                     + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in line) + "</tr>" for line in table)
                     + "</table><p>Held-out accuracy: share of human pairs never trained on whose preferred image "
                     "the model's implicit reward ranks higher. Judge trust: the same for the judge that labelled "
                     "the round's pairs, measured before they were used.</p>")
    if describe_best(state):
        parts.append(f"<p id=best>{esc(describe_best(state))}</p>")
    parts.append(render_scorer_html(state))
    if comparison:
        parts.append("<figure id=comparison><img style='width:auto;max-width:100%' alt='samples side by side' "
                     f"src='{data_uri(comparison)}'><figcaption>Same prompts (columns) and seeds, every model "
                     "(rows, grouped by seed); nearest-neighbour upscaled.</figcaption></figure>")
    parts.append("</section>")
    return "\n".join(parts)


def add_quality_section(parts: list[str], state: LocalState, artifacts: list) -> list[str]:
    """The report's parts with the quality section inserted before the sample grids (the top of the body)."""
    at = next((i for i, part in enumerate(parts) if part.startswith("<h2>")), len(parts))
    section = render_quality_html(state, build_comparison_png(comparison_grids(artifacts)))
    return [*parts[:at], section, *parts[at:]]


def comparison_grids(artifacts: list) -> list[tuple[str, bytes]]:
    """(label, PNG) of the base grid and every iteration's grid, in order (report.artifacts.IterationArtifacts)."""
    grids = [("base", a.base_samples) for a in artifacts if a.base_samples][:1]
    return grids + [(_name(a.iteration), a.samples) for a in artifacts if a.samples]


def build_comparison_png(grids: list[tuple[str, bytes]], seeds: int = 2) -> bytes | None:
    """Rows grouped by seed: for each seed row of the sample grids, one row per model, labelled.

    `grids` are (label, PNG) of equal-size sample grids with `seeds` rows of square tiles (the
    train phase's samples.png). None without Pillow or without two grids to compare.
    """
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        return None
    images = [(label, Image.open(io.BytesIO(png)).convert("RGB")) for label, png in grids]
    images = [(label, im) for label, im in images if im.size == images[0][1].size]
    if len(images) < 2:
        return None
    width, height = images[0][1].size
    tile = height // seeds
    scale_to = min(MAX_TILE, max(MIN_TILE, tile))
    columns = width // tile
    label_width = 90
    out = Image.new("RGB", (label_width + columns * scale_to, seeds * len(images) * scale_to), "white")
    draw = ImageDraw.Draw(out)
    for s in range(seeds):
        for m, (label, im) in enumerate(images):
            strip = im.crop((0, s * tile, columns * tile, (s + 1) * tile))
            resample = Image.Resampling.NEAREST if scale_to >= tile else Image.Resampling.LANCZOS
            y = (s * len(images) + m) * scale_to
            out.paste(strip.resize((columns * scale_to, scale_to), resample), (label_width, y))
            draw.text((4, y + scale_to // 2 - 10), f"{label}\nseed {s + 1}", fill="black")
    buffer = io.BytesIO()
    out.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
