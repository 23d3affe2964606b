"""The report's takeaway sentences: each defense arm read against the undefended arm of its own domain.

A sentence claims only what its data can carry. Where a grid's results rows hold the paired stance shifts
(`steerlab.experiment.shifts`: ``stance_shift_base``, the shift over the cell's control, ``ends_misaligned``
and ``stance_rise_avoided``, each with a 95% CI over questions), the sentence reads those. Otherwise it can
only state the monitor projection's difference from the baseline's: the monitor logs a mean over its chats
with no spread, so the difference is given as a difference and no effect is claimed. Control arms
(``control_arm`` / ``benign_control`` true: what cells are read against) are never counted as defenses.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from statistics import fmean
from typing import Any

NO_SPREAD = (
    "Monitor projections are means over the monitor's chats with no recorded spread: the projection "
    "differences above are plain differences, not measured effects."
)


def takeaways(
    monitors: Mapping[str, list[dict[str, Any]]],
    results: list[dict[str, Any]] | None = None,
    baseline: str = "sft",
) -> list[str]:
    """Sentences for the report, grouped by domain for a grid's runs (``<domain>__<arm>``).

    ``monitors``: run name -> monitor rows; ``results``: the results rows (or None). Each non-control arm
    other than ``baseline`` gets one sentence: from its results row's paired stance shifts when it has them,
    else from the monitor projection (a plain difference, followed once by `NO_SPREAD`).
    """
    results = results or []
    lines: list[str] = []
    for domain, runs in sorted(_groups(monitors).items()):
        rows = _rows_of(results, domain)
        controls = {arm for arm, r in rows.items() if _is_control(r)}
        if not domain:  # runs not named by domain: an arm is a control if it is one in any domain
            controls |= {r["arm"] for r in results if _is_control(r)}
        prefix = f"{domain}: " if domain else ""
        lines += [prefix + line for line in _domain(runs, rows, controls, baseline)]
    if any("monitor projection minus" in line for line in lines):
        lines.append(NO_SPREAD)
    return lines


def _groups(monitors: Mapping[str, list[dict[str, Any]]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """domain -> arm -> monitor rows of its runs; a grid's ``<domain>__<label>`` runs go under their domain
    and label, other runs under "" and the arm their rows name."""
    names = [name.rsplit("/", 1)[-1] for name in monitors]
    grid = bool(names) and all("__" in n for n in names)
    out: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for name, rows in monitors.items():
        if grid:
            domain, label = name.rsplit("/", 1)[-1].split("__", 1)
            out[domain][label] += rows
        else:
            for row in rows:
                out[""][row["arm"]].append(row)
    return out


def _rows_of(results: list[dict[str, Any]], domain: str) -> dict[str, dict[str, Any]]:
    """arm -> results row of ``domain`` (for runs without a domain: the rows, when they are of one domain)."""
    if domain:
        return {r["arm"]: r for r in results if r["domain"] == domain}
    return {r["arm"]: r for r in results} if len({r["domain"] for r in results}) == 1 else {}


def _is_control(row: dict[str, Any]) -> bool:
    return row.get("control_arm") is True or row.get("benign_control") is True


def _domain(
    runs: dict[str, list[dict[str, Any]]],
    rows: dict[str, dict[str, Any]],
    controls: set[str],
    baseline: str,
) -> list[str]:
    means = {arm: _means(monitor) for arm, monitor in runs.items() if monitor}
    arms = sorted((set(means) | set(rows)) - {baseline, "base"})
    lines = []
    if _has_shifts(rows.get(baseline)) and any(_has_shifts(rows.get(a)) for a in arms if a not in controls):
        lines.append(f"{baseline} (no defense) {_stance(rows[baseline])}.")
    for arm in arms:
        if arm in controls:
            lines.append(
                f"{arm} is a control (what the cells are read against), not a defense: not compared."
            )
        elif _has_shifts(rows.get(arm)):
            lines.append(
                f"{arm} {_stance(rows[arm])}{_avoided(rows[arm], rows[arm].get('undefended') or baseline)}."
            )
        elif arm in means and baseline in means:
            lines.append(_projection(arm, means[arm], baseline, means[baseline]))
    return lines


def _means(monitor: list[dict[str, Any]]) -> dict[int, float]:
    """step -> mean projection over the runs of one arm."""
    values: dict[int, list[float]] = defaultdict(list)
    for row in monitor:
        values[row["step"]].append(row["projection"])
    return {step: fmean(v) for step, v in values.items()}


def _has_shifts(row: dict[str, Any] | None) -> bool:
    return (
        row is not None and row.get("stance_shift_base") is not None and bool(row.get("stance_shift_base_ci"))
    )


def _est(value: float, ci: Any) -> str:
    return f"{value:+.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else " (no CI)")


def _stance(row: dict[str, Any]) -> str:
    """Whether the cell ends misaligned, and the paired general-stance shifts that say so."""
    misaligned = row.get("ends_misaligned")
    verdict = (
        "has no ends-misaligned label"
        if misaligned is None
        else "ends misaligned"
        if misaligned
        else "does not end misaligned"
    )
    shifts = [f"{_est(row['stance_shift_base'], row['stance_shift_base_ci'])} over the base"]
    kind = row.get("read_against_kind")
    key = {"control_arm": "stance_shift_control_arm", "benign": "stance_shift_benign"}.get(kind or "")
    if key and row.get(key) is not None:
        bar = "the benign fine-tune"
        if kind == "control_arm":
            bar = str(row.get("read_against") or "").split("__")[-1] or "the domain's control arm"
        shifts.append(f"{_est(row[key], row.get(f'{key}_ci'))} over {bar}")
    return f"{verdict}: general stance {' and '.join(shifts)} (nats/token, 95% CI over questions)"


def _avoided(row: dict[str, Any], baseline: str) -> str:
    """The share of the baseline's rise the arm avoided, paired by question, and what its CI allows."""
    share, ci = row.get("stance_rise_avoided"), row.get("stance_rise_avoided_ci")
    if share is None or not ci:
        return ""
    reading = (
        f"its general stance below {baseline}'s"
        if ci[0] > 0
        else f"its general stance above {baseline}'s"
        if ci[1] < 0
        else f"not distinguishable from {baseline}'s"
    )
    return (
        f"; it avoided {100 * share:.0f}% [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}] of {baseline}'s rise "
        f"({reading}, paired by question)"
    )


def _projection(arm: str, steps: dict[int, float], baseline: str, base: dict[int, float]) -> str:
    """The monitor projection's difference from the baseline's at the last shared step (no effect claimed)."""
    shared = sorted(s for s in steps if s in base and s > 0)
    if not shared:
        return f"{arm} and {baseline} share no monitored step after step 0, so they cannot be compared."
    last, below = shared[-1], sum(steps[s] < base[s] for s in shared)
    return (
        f"{arm}'s monitor projection minus {baseline}'s at step {last}: {steps[last] - base[last]:+.2f} "
        f"({steps[last]:.2f} vs {base[last]:.2f}); lower at {below} of {len(shared)} monitored steps after "
        "step 0."
    )
