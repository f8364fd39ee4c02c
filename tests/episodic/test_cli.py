"""End to end with the tiny config: `emem episodic train`, `emem eval episodic`, `emem bench episodic`."""

from __future__ import annotations

import json

import pytest

from emem.cli import main


@pytest.mark.slow
def test_train_eval_bench_tiny(tmp_path, capsys) -> None:
    w = tmp_path / "weights"
    cache = str(tmp_path / "cache")
    assert main(["episodic", "train", "--config", "tiny", "--out", str(w), "--cache", cache, "--no-progress"]) == 0
    assert (w / "meta.json").is_file() and (w / "policy.safetensors").is_file() and (w / "tfifo.safetensors").is_file()
    capsys.readouterr()
    assert main(["eval", "episodic", "--json", "--config", "tiny", "--weights", str(w), "--cache", cache, "--no-progress"]) == 0
    res = json.loads(capsys.readouterr().out)
    for key in ("sat_minus_tfifo_min", "sat_best_minus_tfifo_min", "ama_bandit_best_choice_rate", "ama_bandit_regret_points",
                "ama_policy_minus_best_fixed_mixed", "accuracy", "oracle", "strategy_margin"):
        assert key in res
    assert set(res["accuracy"]) == {"what_was_there", "last_seen", "first_visit", "order"}
    row = res["accuracy"]["order"]["16"]
    assert all(0.0 <= row[s] <= 100.0 for s in ("fifo", "lifo", "mvfo", "lvfo", "sat_pm", "t_fifo"))
    assert 0.0 <= res["ama_bandit_best_choice_rate"] <= 1.0 and res["ama_bandit_regret_points"] >= 0.0
    orow = res["oracle"]["order"]["16"]
    assert orow["best_strategy"] in ("fifo", "lifo", "mvfo", "lvfo", "sat_pm") and orow["margin"] >= 0.0
    # the bandit can be retrained alone; the policy survives the rewrite
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
