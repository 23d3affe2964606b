"""Figure structure (traces, axes, reference lines, error bars) on synthetic inputs, and loader errors."""

from __future__ import annotations

import json

import plotly.graph_objects as go
import pytest

from steerlab.plots import (
    KNOWN_ARM_COLORS,
    PlotDataError,
    arm_colors,
    arms_figure,
    drift_figure,
    layer_separation_figure,
    load_arm_results,
    load_monitor,
    load_screening,
    load_sweep,
    load_vector_stats,
    projection_figure,
    screening_figure,
    steering_sweep_figure,
)
from steerlab.plots import synthetic as syn

EIGHT = list(syn.EIGHT_ARMS)


def _runs(arms, **kw):
    return {arm: syn.monitor_rows(arm, **kw) for arm in arms}


def _hlines(fig: go.Figure) -> list[float]:
    return [s.y0 for s in fig.layout.shapes if s.y0 == s.y1 and s.yref.startswith("y")]


def _texts(fig: go.Figure) -> str:
    return " | ".join(a.text or "" for a in fig.layout.annotations)


# ---- colours -------------------------------------------------------------------------------------------


def test_arm_colors_fixed_for_known_arms_and_distinct_for_eight():
    colors = arm_colors(EIGHT)
    assert colors["sft"] == KNOWN_ARM_COLORS["sft"] and colors["steer"] == KNOWN_ARM_COLORS["steer"]
    assert len(set(colors.values())) == 8
    assert arm_colors(reversed(EIGHT)) == colors  # order of discovery does not matter


# ---- persona projection --------------------------------------------------------------------------------


def test_projection_one_arm_has_base_line_at_step0_and_axis_titles():
    rows = syn.monitor_rows("sft", base=1.5)
    fig = projection_figure({"run1": rows})
    assert len(fig.data) == 1 and fig.data[0].name == "sft"
    assert list(fig.data[0].x) == [r["step"] for r in rows]
    assert _hlines(fig) == [pytest.approx(1.5)]
    assert "base model (step 0): 1.50" in _texts(fig)
    assert "training step" in fig.layout.xaxis.title.text
    assert "layer 2" in fig.layout.yaxis.title.text and "units" in fig.layout.yaxis.title.text
    assert "step %{x}" in fig.data[0].hovertemplate
    assert fig.layout.showlegend is True  # the arm is named even with one line


def test_projection_prompted_level_and_eight_arms_share_colours_with_drift():
    runs = _runs(EIGHT)
    fig = projection_figure(runs, prompted_level=6.0, trait="evil")
    assert sorted(t.name for t in fig.data) == sorted(EIGHT)
    assert sorted(_hlines(fig)) == [pytest.approx(1.0), pytest.approx(6.0)]
    assert "evil system prompt: 6.00" in _texts(fig)
    colors = arm_colors(EIGHT)
    assert {t.name: t.line.color for t in fig.data} == colors
    drift = drift_figure(runs)
    assert {t.name: t.line.color for t in drift.data} == colors


def test_projection_explicit_base_and_same_arm_in_two_runs():
    fig = projection_figure(
        {"seed0": syn.monitor_rows("sft"), "seed1": syn.monitor_rows("sft", seed=1)}, base_level=0.25
    )
    assert sorted(t.name for t in fig.data) == ["sft (seed0)", "sft (seed1)"]
    assert {t.line.dash for t in fig.data} == {"solid", "dash"}
    assert _hlines(fig) == [0.25]


def test_projection_draws_the_steering_coefficient_under_the_chart():
    sft = syn.monitor_rows("sft")
    hold = [
        {**r, "arm": "steer_hold"} | ({"steer_alpha": 0.5 * i} if r["step"] else {})
        for i, r in enumerate(sft)
    ]
    fig = projection_figure({"a": sft, "b": hold}, prompted_level=6.0)
    alpha = [t for t in fig.data if t.name.endswith("alpha")]
    assert [t.name for t in alpha] == ["steer_hold alpha"] and alpha[0].yaxis == "y2"
    assert list(alpha[0].y) == [0.5 * i for i in range(1, len(sft))]  # step 0 carries none
    assert (
        fig.layout.yaxis2.title.text == "steering alpha" and "training step" in fig.layout.xaxis2.title.text
    )
    assert sorted(_hlines(fig)) == [pytest.approx(1.0), pytest.approx(6.0)]  # levels on the projection panel
    assert len(projection_figure({"a": sft}).data) == 1  # no coefficient logged: no panel
    with pytest.raises(PlotDataError, match="'steer_alpha' must be a number"):
        projection_figure([{**hold[1], "steer_alpha": "four"}])


def test_projection_rejects_duplicate_steps_and_bad_rows():
    rows = syn.monitor_rows("sft")
    with pytest.raises(PlotDataError, match=r"step\(s\) \[10\]"):
        projection_figure({"r": rows + [rows[1]]})
    with pytest.raises(PlotDataError, match="row 0: key 'projection' must be a number"):
        projection_figure([{**rows[0], "projection": "high"}])


def test_load_monitor_errors_name_file_and_line(tmp_path):
    good = json.dumps(syn.monitor_rows("sft")[0])
    path = tmp_path / "run" / "monitor.jsonl"
    path.parent.mkdir()
    path.write_text(good + "\n" + good.replace('"step": 0', '"step": 1') + "\n{not json\n")
    with pytest.raises(PlotDataError, match=r"monitor\.jsonl:3: not valid JSON"):
        load_monitor(path.parent)
    row = json.loads(good)
    del row["arm"]
    path.write_text(good + "\n\n" + json.dumps(row) + "\n")
    with pytest.raises(PlotDataError, match=r"monitor\.jsonl:3: missing key\(s\) 'arm'"):
        load_monitor(path)
    path.write_text(json.dumps({**json.loads(good), "ldifs_per_layer": {"two": 0.1}}) + "\n")
    with pytest.raises(
        PlotDataError, match=r"monitor\.jsonl:1: key 'ldifs_per_layer' has a non-integer layer"
    ):
        load_monitor(path)
    path.write_text(good + "\n")
    assert load_monitor(path)[0]["arm"] == "sft"


# ---- per-layer separation ------------------------------------------------------------------------------


def test_layer_separation_two_aurocs_effect_and_chosen_layer(tmp_path):
    stats = syn.vector_stats(n_layers=6, chosen=3)
    fig = layer_separation_figure(stats, chosen_layer=3, trait="evil")
    names = [t.name for t in fig.data]
    assert names == ["AUROC, with system prompt", "AUROC, text only (no system prompt)", "steering effect"]
    assert list(fig.data[0].x) == list(range(6)) and fig.data[2].type == "bar"
    vlines = [s for s in fig.layout.shapes if s.x0 == s.x1]
    assert vlines and all(s.x0 == 3 for s in vlines)
    assert _hlines(fig) == [0.5]  # chance
    assert "chosen layer 3" in _texts(fig)
    assert fig.layout.yaxis.title.text == "held-out AUROC" and "Δ trait score" in fig.layout.yaxis2.title.text
    sidecar = tmp_path / "evil.json"
    sidecar.write_text(
        json.dumps({"trait": "evil", "chosen_layer": 4, "layer_convention": "block_output", "stats": stats})
    )
    vec = load_vector_stats(sidecar)
    assert (vec.name, vec.trait, vec.chosen_layer) == ("evil", "evil", 4)


def test_layer_separation_tolerates_missing_curves_but_not_malformed_ones():
    fig = layer_separation_figure({"auroc_eval": {"0": 0.6, "1": 0.9}})
    assert len(fig.data) == 1 and not [s for s in fig.layout.shapes if s.x0 == s.x1]
    with pytest.raises(PlotDataError, match="key 'steer_effect' must be an object"):
        layer_separation_figure({"auroc_eval": {"0": 0.6}, "steer_effect": [1, 2]}, source="evil.json")
    with pytest.raises(PlotDataError, match=r"evil.json: key 'auroc_eval\[1\]' must be a number"):
        layer_separation_figure({"auroc_eval": {"0": 0.6, "1": "x"}}, source="evil.json")
    with pytest.raises(PlotDataError, match="outside \\[0, 1\\] at layers \\[1\\]"):
        layer_separation_figure({"auroc_eval_text_only": {"0": 0.6, "1": 1.4}})
    with pytest.raises(PlotDataError, match="none of the per-layer curves"):
        layer_separation_figure({"chosen_layer": 2})


# ---- steering sweep ------------------------------------------------------------------------------------


def test_sweep_has_ci_band_and_coherence_panel(tmp_path):
    rows = syn.sweep_rows()
    fig = steering_sweep_figure(rows, trait="evil")
    band = [t for t in fig.data if t.fill == "toself"]
    assert len(band) == 1 and max(band[0].y) == pytest.approx(max(r["trait_score_ci"][1] for r in rows))
    score = next(t for t in fig.data if t.name == "trait score")
    assert list(score.x) == sorted(r["alpha"] for r in rows)
    coherence = next(t for t in fig.data if t.name == "coherence")
    assert coherence.yaxis == "y2" and "coherence" in fig.layout.yaxis2.title.text
    assert "alpha" in fig.layout.xaxis3.title.text  # perplexity panel is the third
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"rows": [rows[0], {**rows[1], "trait_score_ci": [3, 1]}]}))
    with pytest.raises(PlotDataError, match=r"sweep.json: row 1: key 'trait_score_ci' has lo > hi"):
        load_sweep(path)


def test_sweep_without_ci_or_coherence_and_duplicate_alpha():
    fig = steering_sweep_figure([{"alpha": 0, "trait_score": 10}, {"alpha": 2, "trait_score": 30}])
    assert [t.name for t in fig.data] == ["trait score"] and not any(t.fill for t in fig.data)
    with pytest.raises(PlotDataError, match=r"alpha \[2.0\] appears twice"):
        steering_sweep_figure([{"alpha": 2, "trait_score": 10}, {"alpha": 2, "trait_score": 30}])


# ---- arms compared -------------------------------------------------------------------------------------


def test_arms_points_have_two_way_error_bars_and_facets():
    rows = syn.arm_result_rows(EIGHT, ("medical", "financial"))
    fig = arms_figure(rows)
    assert len(fig.data) == 16 and sum(bool(t.showlegend) for t in fig.data) == 8
    sft = next(
        t for t in fig.data if t.name == "sft" and t.xaxis == "x2"
    )  # domains sorted: financial, medical
    row = next(r for r in rows if r["arm"] == "sft" and r["domain"] == "medical")
    assert sft.x[0] == row["in_domain"] and sft.y[0] == row["general_misalignment"]
    assert sft.error_y.array[0] == pytest.approx(
        row["general_misalignment_ci"][1] - row["general_misalignment"]
    )
    assert sft.error_y.arrayminus[0] == pytest.approx(
        row["general_misalignment"] - row["general_misalignment_ci"][0]
    )
    assert sft.error_x.array[0] == pytest.approx(row["in_domain_ci"][1] - row["in_domain"])
    assert "in-domain" in fig.layout.xaxis.title.text and "misaligned" in fig.layout.yaxis.title.text
    assert [a.text for a in fig.layout.annotations][:2] == ["domain: financial", "domain: medical"]


def test_arms_single_arm_without_ci_and_csv_errors(tmp_path):
    fig = arms_figure([{"arm": "sft", "domain": "medical", "general_misalignment": 0.3, "in_domain": 0.8}])
    assert len(fig.data) == 1 and fig.data[0].error_x.visible is False
    path = tmp_path / "results.csv"
    path.write_text(
        'arm,domain,general_misalignment,in_domain,in_domain_ci\nsft,med,0.3,0.8,"[0.7, 0.9]"\nsteer,med,lots,0.5,\n'
    )
    with pytest.raises(PlotDataError, match=r"results.csv:3: column 'general_misalignment' must be a number"):
        load_arm_results(path)
    path.write_text('arm,domain,general_misalignment,in_domain,in_domain_ci\nsft,med,0.3,0.8,"[0.7, 0.9]"\n')
    assert load_arm_results(path)[0]["in_domain_ci"] == (0.7, 0.9)
    with pytest.raises(PlotDataError, match="arm 'sft' in domain 'med' appears twice"):
        arms_figure(load_arm_results(path) * 2)


# ---- drift ---------------------------------------------------------------------------------------------


def test_drift_one_panel_per_layer_with_arm_lines():
    fig = drift_figure(_runs(["sft", "steer"], ldifs_layers=(1, 4, 7)))
    assert len(fig.data) == 6 and [a.text for a in fig.layout.annotations] == [
        "layer 1",
        "layer 4",
        "layer 7",
    ]
    assert sum(bool(t.showlegend) for t in fig.data) == 2
    sft7 = [t for t in fig.data if t.name == "sft"][2]
    assert list(sft7.y) == [
        r["ldifs_per_layer"]["7"] for r in syn.monitor_rows("sft", ldifs_layers=(1, 4, 7))
    ]


def test_drift_heatmaps_for_many_layers_and_error_without_ldifs():
    fig = drift_figure(_runs(EIGHT, ldifs_layers=tuple(range(20))))
    assert [t.type for t in fig.data] == ["heatmap"] * 8 and list(fig.data[0].y) == list(range(20))
    rows = [{**r, "ldifs": None, "ldifs_per_layer": None} for r in syn.monitor_rows("sft")]
    with pytest.raises(PlotDataError, match="no monitor row has 'ldifs'"):
        drift_figure({"r": rows})
    totals = drift_figure({"r": [{**r, "ldifs_per_layer": None} for r in syn.monitor_rows("sft")]})
    assert len(totals.data) == 1 and "LDIFS" in totals.layout.yaxis.title.text


# ---- screening -----------------------------------------------------------------------------------------


def test_screening_histogram_marks_flagged_tail_from_csv(tmp_path):
    path = tmp_path / "screen.csv"
    path.write_text(syn.screening_csv(n=200, tail=0.05))
    table = load_screening(path)
    assert table.text_columns == ["prompt", "response"]
    n_flag = sum(table.flagged)
    fig = screening_figure(table.diffs, flagged=table.flagged)
    kept, flagged = fig.data
    assert len(flagged.x) == n_flag and len(kept.x) == len(table.diffs) - n_flag
    assert kept.xbins.size == flagged.xbins.size  # one set of bins for both
    threshold = min(d for d, f in zip(table.diffs, table.flagged, strict=True) if f)
    assert any(s.x0 == s.x1 == threshold for s in fig.layout.shapes)
    assert f"{n_flag} of {len(table.diffs)} flagged" in _texts(fig)
    assert "count" in fig.layout.yaxis.title.text and "projection difference" in fig.layout.xaxis.title.text


def test_screening_threshold_only_and_errors(tmp_path):
    fig = screening_figure([0.1, 0.2, 0.3, 2.0], threshold=1.0)
    assert len(fig.data[1].x) == 1 and "1 of 4 flagged (25.0%)" in _texts(fig)
    with pytest.raises(PlotDataError, match="either 'flagged' or 'threshold'"):
        screening_figure([0.1, 0.2])
    path = tmp_path / "screen.csv"
    path.write_text("rank,index,projection_diff,flagged\n1,4,2.5,true\n2,1,0.3,maybe\n")
    with pytest.raises(PlotDataError, match=r"screen.csv:3: column 'flagged' must be true/false"):
        load_screening(path)
    path.write_text("rank,index,flagged\n1,4,true\n")
    with pytest.raises(PlotDataError, match=r"screen.csv:1: missing column\(s\) 'projection_diff'"):
        load_screening(path)


def test_layer_figure_reads_the_shipped_extraction_sidecar():
    import json
    from pathlib import Path

    from steerlab.plots.layers import layer_separation_figure

    sidecar = Path(__file__).resolve().parents[1] / "vectors" / "smollm2-135m-instruct" / "evil.json"
    meta = json.loads(sidecar.read_text())
    fig = layer_separation_figure(meta["stats"], chosen_layer=meta["chosen_layer"], source=str(sidecar))
    names = {trace.name for trace in fig.data}
    assert any("with system prompt" in n for n in names) and any("text only" in n for n in names)
    auroc = next(t for t in fig.data if "with system prompt" in t.name)
    assert len(auroc.x) == meta["n_layers"]
