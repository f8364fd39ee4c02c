"""End to end with the tiny config: `emem episodic train`, `emem eval episodic`, `emem bench episodic`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emem.cli import main
from emem.episodic_experiment import sat_minus_tfifo_table


@pytest.mark.slow
def test_train_eval_bench_tiny(tmp_path, capsys) -> None:
    w = tmp_path / "weights"
    cache = str(tmp_path / "cache")
    assert main(["episodic", "train", "--config", "tiny", "--out", str(w), "--cache", cache, "--no-progress"]) == 0
    assert (w / "meta.json").is_file() and (w / "policy.safetensors").is_file() and (w / "tfifo.safetensors").is_file()
    # decision offsets of the F1-scored tasks, fitted on validation for every budget, for SAT and T-FIFO
    cal = json.loads((w / "meta.json").read_text())["decision_offsets"]
    assert cal["version"] == 1 and cal["split"] == "val"
    for which in ("reader", "tfifo"):
        assert set(cal[which]) == {"what_was_there", "first_visit"}
        assert all(set(v) == {"16", "32"} and all(o in cal["grid"] for o in v.values()) for v in cal[which].values())
    assert all(r["after"] >= r["before"] for v in cal["val_f1"].values() for r in v.values())
    capsys.readouterr()
    assert main(["eval", "episodic", "--json", "--config", "tiny", "--weights", str(w), "--cache", cache, "--no-progress"]) == 0
    res = json.loads(capsys.readouterr().out)
    for key in ("sat_minus_tfifo_min", "sat_fifo_minus_tfifo_min", "sat_best_minus_tfifo_min",
                "ama_bandit_best_choice_rate", "ama_bandit_regret_points",
                "ama_policy_minus_best_fixed_mixed", "accuracy", "oracle", "strategy_margin"):
        assert key in res
    assert set(res["accuracy"]) == {"what_was_there", "last_seen", "first_visit", "order"}
    assert res["decision_offsets"] == {"reader": cal["reader"], "tfifo": cal["tfifo"]}
    row = res["accuracy"]["order"]["16"]
    assert all(0.0 <= row[s] <= 100.0 for s in ("fifo", "lifo", "mvfo", "lvfo", "sat_pm", "t_fifo"))
    assert 0.0 <= res["ama_bandit_best_choice_rate"] <= 1.0 and res["ama_bandit_regret_points"] >= 0.0
    assert res["ama_bandit_best_choice_rate"] <= res["ama_bandit_choice_within_noise_rate"] <= 1.0
    lo, hi = res["ama_bandit_best_choice_rate_ci90"]
    assert 0.0 <= lo <= hi <= 1.0
    # the headline margin uses the strategy the (validation-trained) bandit chose per (task, budget)
    for task, per_budget in res["sat_minus_tfifo_per_budget"].items():
        for L, margin in per_budget.items():
            chosen = res["ama_bandit_choices"][task][L]
            assert margin == pytest.approx(res["accuracy"][task][L][chosen] - res["accuracy"][task][L]["t_fifo"], abs=0.02)
        assert res["sat_minus_tfifo"][task] == min(per_budget.values())
    assert res["sat_minus_tfifo_min"] == min(res["sat_minus_tfifo"].values())
    orow = res["oracle"]["order"]["16"]
    assert orow["best_strategy"] in ("fifo", "lifo", "mvfo", "lvfo", "sat_pm") and orow["margin"] >= 0.0
    # recalibration alone keeps the reader and both allocators; the bandit can be retrained alone
    before = (w / "reader.safetensors").read_bytes()
    assert main(["episodic", "train-ama", "--kind", "calibrate", "--config", "tiny", "--weights", str(w), "--cache", cache,
                 "--no-progress"]) == 0
    meta = json.loads((w / "meta.json").read_text())
    assert meta["decision_offsets"]["reader"] == cal["reader"] and "bandit" in meta and "policy" in meta
    assert (w / "reader.safetensors").read_bytes() == before and (w / "policy.safetensors").is_file()
    assert meta["refit"]["kind"] == "calibrate" and meta["refit"]["config"]["split"]["val_scenes"] == meta["config"]["split"]["val_scenes"]
    assert main(["episodic", "train-ama", "--kind", "bandit", "--config", "tiny", "--weights", str(w), "--cache", cache,
                 "--no-progress"]) == 0
    assert (w / "policy.safetensors").is_file()
    assert main(["episodic", "train-ama", "--kind", "policy", "--config", "tiny", "--weights", str(w), "--cache", cache,
                 "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["bench", "episodic", "--json", "--weights", str(w), "--writes", "300"]) == 0
    b = json.loads(capsys.readouterr().out)
    assert b["write_worst_mean_ms"] > 0 and b["answer_L64"]["mean_ms"] > 0 and "training_times_s" in b


def test_bad_arguments(tmp_path) -> None:
    assert main(["episodic", "train", "--task", "order", "--config", "tiny"]) == 2  # single task needs --out
    assert main(["episodic", "train", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path)]) == 2
    assert main(["eval", "episodic", "--config", "tiny", "--weights", str(tmp_path / "nothing")]) == 2


def test_headline_margin_uses_the_chosen_strategy_not_the_best() -> None:
    N, budgets = 3, (32, 64)
    S = np.zeros((N, 4, 5, 2))  # [episodes, tasks, strategies (fifo, lifo, mvfo, lvfo, sat_pm), budgets]
    S[:, :, 4] = 0.9  # sat_pm is the best strategy everywhere ...
    S[:, :, 1] = 0.6  # ... but the allocator chose lifo
    S[:, 2, 1, 1] = 0.5  # first_visit at L = 64 is its weakest cell
    St = np.full((N, 4, 2), 0.4)
    choice = {t: {"32": "lifo", "64": "lifo"} for t in ("what_was_there", "last_seen", "first_visit", "order")}
    out = sat_minus_tfifo_table(S, St, choice, budgets)
    assert out["sat_minus_tfifo_per_budget"]["order"] == {"32": 20.0, "64": 20.0}
    assert out["sat_minus_tfifo"]["first_visit"] == 10.0 and out["sat_minus_tfifo_min"] == 10.0


def test_choice_within_noise_separates_ties_from_real_gaps() -> None:
    from emem.episodic_experiment import choice_within_noise

    rng = np.random.default_rng(0)
    base = rng.uniform(0.3, 0.7, (64, 1))
    tie = np.hstack([base + rng.normal(0, 0.1, (64, 1)), base + rng.normal(0.002, 0.1, (64, 1))])
    gap = np.hstack([base + rng.normal(0, 0.02, (64, 1)), base + 0.1 + rng.normal(0, 0.02, (64, 1))])
    assert choice_within_noise(tie, int(tie.mean(0).argmin()))  # the worse of two tied strategies passes
    assert not choice_within_noise(gap, 0)  # 10 points worse on every episode fails
    assert choice_within_noise(gap, 1)  # the best itself


def test_best_choice_rate_interval_resamples_apartments() -> None:
    from emem.episodic_experiment import best_choice_rate_interval

    rng = np.random.default_rng(1)
    groups = [str(g) for g in np.repeat(np.arange(16), 4)]  # 16 apartments x 4 walks
    S = rng.uniform(0.4, 0.6, (64, 4, 5, 3))
    S[:, :, 1] += 0.2  # lifo is clearly best in every cell
    clear = np.ones((4, 3), int)
    assert best_choice_rate_interval(S, clear, groups) == (1.0, 1.0)
    wrong = clear.copy()
    wrong[0, 0] = 0  # one cell chose a strategy 20 points worse: always a miss
    assert best_choice_rate_interval(S, wrong, groups) == (11 / 12, 11 / 12)
    # a cell where two strategies tie up to noise: the rate moves with the resampled apartments
    noise = rng.normal(0, 0.05, 64)
    S[:, 3, 4, 2] = S[:, 3, 1, 2] + noise - noise.mean()  # equal means: each resample picks either
    lo, hi = best_choice_rate_interval(S, clear, groups)
    assert lo == 11 / 12 and hi == 1.0
