"""The numbers of each notebook's "what we learned", rendered from the summaries: the figures and the words follow the data."""

from __future__ import annotations

from yourai.notebook import findings


def _rows(plain: dict, weighted: dict, seeds=(0, 1)) -> list[dict]:
    return [{"seed": s, "objective": name, **values} for s in seeds for name, values in
            (("plain", plain), ("weighted", weighted))]


def test_training_states_the_direction_the_numbers_show():
    rows = _rows({"val_loss_primary": 4.48, "val_loss_consensus": 4.77, "val_loss": 4.64},
                 {"val_loss_primary": 4.37, "val_loss_consensus": 5.28, "val_loss": 4.91})
    summary = {"steps": 60, "seeds": [0, 1], "faithful_bit_identical_to_plain": True, "gap_plain_mean": -0.29,
               "gap_weighted_mean": -0.91, "gap_change_weighted_minus_plain_mean": -0.62,
               "gap_change_weighted_minus_plain_ci95": 0.08}
    text = findings.training(summary, rows)
    assert "60 steps, 2 seed(s)" in text and "bit-identical to plain CE: **True**" in text
    assert "primary-tier validation loss lower: 4.37 vs 4.48" in text
    assert "consensus-tier validation loss higher: 5.28 vs 4.77" in text
    assert "changed by -0.62 ± 0.08" in text and "weighting widened it." in text
    flipped = findings.training({**summary, "gap_weighted_mean": -0.1, "gap_change_weighted_minus_plain_mean": 0.19,
                                 "gap_change_weighted_minus_plain_ci95": 0.3}, rows)
    assert "weighting narrowed it — within noise." in flipped


def test_scoring_compares_with_the_reference_either_way():
    aucs = {"with metadata": {"authority_auc": [0.99, 0.97, 1.0], "entropy_auc": [0.95, 0.9, 0.99],
                              "n_primary": 10, "n_consensus": 5}, "text only": None}
    text = findings.scoring(aucs)
    assert "authority AUC 0.990 [0.970, 1.000] (above the reference's 0.787)" in text
    assert "entropy AUC 0.950 [0.900, 0.990] (below the reference's 0.999)" in text
    assert "**text only**: no primary/consensus pair" in text


def test_loss_exploration_reports_the_ratio_and_whether_faithful_is_inert():
    summary = {"reference_values": [{"w_auth": 0.99, "H_bits": 0.0, "L_emp (alpha=2.7)": 57.26},
                                    {"w_auth": 0.9, "H_bits": 1.0, "L_emp (alpha=2.7)": 4.581}],
               "anchor_30x": {"ratio": 32.7, "patent_term": 149.8, "wiki_term": 4.581},
               "gradient_check": {"max_abs_dgrad_faithful": 0.0, "max_abs_dgrad_weighted": 1e-3,
                                  "max_abs_dgrad_weighted_vs_uniform": 5e-4, "max_abs_grad_plain": 0.1}}
    text = findings.loss_exploration(summary)
    assert "32.7×" in text and "scores 57.3 while `(0.9, 1.0)` scores 4.6" in text and "identical bit for bit" in text
    summary["gradient_check"]["max_abs_dgrad_faithful"] = 1e-7
    assert "NOT identical" in findings.loss_exploration(summary)


def test_memory_and_truthfulqa_render_their_numbers():
    memory = {"monitor_overhead": {"monitor_ms_per_step": 0.2, "overhead_fraction": 0.004, "step_ms": 50.0},
              "leak": {"slope_mb_per_step": 0.01, "low": -0.02, "high": 0.03, "leaking": False}}
    text = findings.memory(memory, [{"saved_fraction": 0.4}, {"saved_fraction": 0.47}])
    assert "0.200 ms per step, 0.40 % of a 50.0 ms step" in text and "by 40–47 %" in text
    tqa = {"n": 100, "benchmark": True, "base": {"mc1": {"mean": 0.23, "ci": [0.15, 0.32]}},
           "delta": {"mc1": {"delta": 0.01, "ci": [-0.02, 0.04], "p_value": 0.5}}}
    text = findings.truthfulqa(tqa)
    assert "base mc1: 0.230 [0.150, 0.320] (an interval ±0.085 wide" in text
    assert "the interval includes 0: no detectable change" in text


def test_a_mean_without_an_interval_says_why():
    assert findings.mean_with_interval(-0.25, 0.031) == "-0.2500 ± 0.0310"
    assert findings.mean_with_interval(-0.25, float("nan")) == "-0.2500 (one seed: no interval)"
