"""TriPosT with the session's tiny model and engine: its own attempts on synthetic questions, edited by the
process verifier and the scripted improver; one weighted-SL training step on the result; self-improving eval."""

from __future__ import annotations

import json
import math

from src.records import load_records, write_json


def test_tiny_model_attempts_become_fixed_trajectories(llm, synthetic_dir, tiny_model_dir, tmp_path):
    from src import prompts
    from src.engine import generate, sampling_params
    from src.grading import grade_response
    from src.tripost.data import build_tripost_data
    from src.tripost.edit import EditConfig, run_edit
    from src.tripost.feedback import split_steps
    from src.tripost.verify import process_verdict

    pool = load_records(synthetic_dir / "inference" / "cot" / "synthetic.json", "pool")[:12]
    gen = generate(llm, [prompts.student_prompt(r["question"]) for r in pool], sampling_params(2, 0.7, 1.0, 128))
    items = [{**r, "pred": texts, "pred_value": [""] * 2, "correct_pred": []} for r, texts in zip(pool, gen.texts)]
    write_json(tmp_path / "inference_data" / "results.json", items)
    write_json(tmp_path / "inference_data" / "sampling_stats.json", {"dataset": "synthetic"})
    stats = run_edit(EditConfig(cur_sampled_data_path=[str(tmp_path / "inference_data")],
                                output_path=str(tmp_path / "traj"), window_size=4))
    records = json.loads((tmp_path / "traj" / "trajectories.json").read_text())
    assert stats["complete"] and stats["attempts"] == 24 == len(records)
    improved = [r for r in records if r["status"] == "improved"]
    assert improved, stats
    for rec in improved:
        steps = rec["error_steps"]
        assert steps[-1] is None and all(a < b for a, b in zip(steps[:-2], steps[1:-1])), steps
        final = rec["attempts"][-1]
        assert grade_response(final, rec["answer_value"], "synthetic").correct
        assert process_verdict(rec, final, "synthetic").correct
        assert split_steps(final)[:steps[0] - 1] == split_steps(rec["attempts"][0])[:steps[0] - 1]

    # one weighted-SL step on the balanced examples: the loss is finite and the model saved
    from src.training import TrainConfig, train

    data, counts = build_tripost_data(records, 1.5)
    assert counts["improvement"] >= len(improved) and counts["gold"] == min(counts["non_improvement"], 12)
    assert counts["non_improvement"] == min(math.ceil(counts["improvement"] / 1.5),
                                            counts["non_improvement_available"])
    write_json(tmp_path / "tripost.json", data)
    out = train(TrainConfig(model_name_or_path=str(tiny_model_dir), train_file=str(tmp_path / "tripost.json"),
                            model_dir=str(tmp_path / "run"), batch_size=8, max_steps=2, learning_rate=1e-3,
                            keep_num_ckpt=0, section_weight=1.5, show_progress=False))
    log = json.loads((tmp_path / "run" / "train_log.json").read_text())
    assert (out / "config.json").is_file() and all(math.isfinite(e["loss"]) for e in log["log"])


def test_self_improving_eval_reports_first_attempt_and_fixed_broken(llm, synthetic_dir):
    from src.tripost.infer import evaluate_self_improve

    records = load_records(synthetic_dir / "test" / "synthetic.json", "test")[:8]
    items, metrics = evaluate_self_improve(llm, records, "synthetic", max_tokens=96, rounds=2)
    si = metrics["self_improve"]
    first = [i["first_attempt_correct"] for i in items]
    assert si["first_attempt_correct"] == sum(first) and metrics["n"] == 8
    assert si["fixed"] == sum((not f) and i["correct"] for f, i in zip(first, items))
    assert si["broken"] == sum(f and not i["correct"] for f, i in zip(first, items))
    for item in items:
        attempts = item["self_improve"]["attempts"]
        assert item["pred"] == [attempts[-1]] and 1 <= len(attempts) <= 3
        assert "Feedback:" not in attempts[0]
