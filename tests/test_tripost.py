"""TriPosT (issue 15) without an engine: feedback format, process verifier and scripted improver, the improvement
loop and its resumable windows, rebalancing, weighted SL, and bad input through the command lines."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from src.records import write_json
from src.synthetic import WorldConfig, generate_world
from src.tripost.data import balance, build_tripost_data, section_weights, weighted_mean
from src.tripost.edit import EditConfig, run_edit
from src.tripost.feedback import FeedbackParseError, format_feedback, parse_feedback
from src.tripost.improve import scripted_update
from src.tripost.verify import process_verdict

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pool() -> list[dict]:
    world = generate_world(WorldConfig(seed=3, n_train=1, n_pool=40, n_test_held_in=1, n_test_held_out=1))
    return [r for r in world["pool_cot"] if r["level"] >= 3][:12]


def corrupt(rationale: str, line: int) -> str:
    """The gold rationale with the result of one step's annotation off by one."""
    lines = rationale.splitlines()
    lines[line] = re.sub(r"=(\d+)>>", lambda m: f"={int(m.group(1)) + 1}>>", lines[line])
    return "\n".join(lines)


def sampling_results(tmp: Path, pool: list[dict], preds: list[list[str]]) -> Path:
    """A sampling run's results.json (+ sampling_stats.json naming the data set), as inference.py writes them."""
    items = [{**r, "pred": p, "pred_value": [""] * len(p), "correct_pred": []} for r, p in zip(pool, preds)]
    write_json(tmp / "inference_data" / "results.json", items)
    write_json(tmp / "inference_data" / "sampling_stats.json", {"dataset": "synthetic"})
    return tmp / "inference_data"


# ------------------------------------------------------------------------------------------------ formats
def test_both_all_correct_spellings_parse():
    assert parse_feedback("Step (1) to step (4) are correct. The final response is also correct.").correct
    assert parse_feedback("Step (1) to (4) are correct. The final response is also correct.").correct
    assert parse_feedback(format_feedback(3)).correct


def test_error_feedback_round_trips_and_garbage_is_refused():
    text = format_feedback(5, 3, '<<10*2=21>>', "the step should be <<10*2=20>>")
    assert text == ('Step (1) to step (2) are correct. In step (3) the part "<<10*2=21>>" is incorrect. '
                    'This is because the step should be <<10*2=20>>.')
    parsed = parse_feedback(text)
    assert (parsed.correct, parsed.step, parsed.segment) == (False, 3, "<<10*2=21>>")
    assert format_feedback(4, 2, "x", "y").startswith("Step (1) is correct. In step (2)")
    assert format_feedback(4, 1, "x", "y").startswith("In step (1)")
    with pytest.raises(FeedbackParseError):
        parse_feedback("Looks fine to me!")


def test_process_verifier_marks_the_first_wrong_step_and_scripted_improver_fixes_it(pool):
    item = pool[0]
    assert process_verdict(item, item["answer_cot"], "synthetic").correct
    bad = corrupt(item["answer_cot"], 1)
    verdict = process_verdict(item, bad, "synthetic")
    assert (verdict.correct, verdict.step) == (False, 2)
    assert parse_feedback(verdict.feedback).step == 2
    update = scripted_update(item, bad, verdict)
    assert update.splitlines()[0] == bad.splitlines()[0]  # the step before the error is kept
    assert process_verdict(item, update, "synthetic").correct
    stops_early = "\n".join(item["answer_cot"].splitlines()[:1] + [f"The answer is {item['answer_value']}"])
    assert process_verdict(item, stops_early, "synthetic").step == 2  # the premature final response


# ------------------------------------------------------------------------------------------------ rebalancing
def test_ten_improvements_and_fifty_non_improvements_give_seven_and_seven():
    non, gold = balance(10, list(range(50)), list(range(100, 160)), 1.5)
    assert (len(non), len(gold)) == (7, 7)
    assert len(set(non)) == 7 and set(non) <= set(range(50))
    non_all, gold_all = balance(10, list(range(50)), list(range(100, 160)), 0)
    assert (len(non_all), len(gold_all)) == (50, 50)
    with pytest.raises(ValueError):
        balance(10, [], [], -0.5)


# ------------------------------------------------------------------------------------------------ weighted SL
def test_token_losses_weighted_from_the_feedback_on():
    import torch

    ce = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    mask = torch.ones_like(ce)
    assert weighted_mean(ce, mask, torch.tensor([[1.0, 1.0, 1.5, 1.5]])).item() == pytest.approx(1.25)
    # masked tokens count neither in the sum nor in the normaliser
    mask2 = torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    assert weighted_mean(ce, mask2, torch.tensor([[9.0, 1.0, 1.5, 1.5]])).item() == pytest.approx(4 / 3)


def test_section_weights_start_at_the_feedback_token(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    err = format_feedback(2, 2, "<<3+4=8>>", "3+4 = 7, not 8")
    text = f"Mia has <<3+4=8>>8 apples.\nThe answer is 8\nFeedback: {err}\nUpdated Answer:\nThe answer is 7"
    n = len(tok(text, add_special_tokens=False)["input_ids"])
    weights = section_weights(text, 5, 5 + n, tok, 1.5)
    first = weights.index(1.5)
    assert set(weights[:first]) == {1.0} and set(weights[first:]) == {1.5}
    ids = tok(text, add_special_tokens=False)["input_ids"]
    before = tok.decode(ids[:first - 5])
    assert "Feedback" not in before and before.strip().endswith("The answer is 8")
    ok = f"Mia has <<3+4=7>>7 apples.\nThe answer is 7\nFeedback: {format_feedback(2)}"
    assert set(section_weights(ok + tok.eos_token, 5, 30, tok, 1.5)) == {1.0}  # no error: plain loss


def test_all_ones_token_weights_give_the_models_own_loss(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from src.training import collate, micro_batch_loss, tokenize_examples

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    recs = [{"question": "Mia has 3 apples.", "answer_cot": f"She has 3.\nFeedback: {format_feedback(1)}"},
            {"question": "Tom has 5 coins and gets 2.", "answer_cot": "He has <<5+2=7>>7.\nThe answer is 7"}]
    examples = tokenize_examples(recs, tok, 128)
    plain = micro_batch_loss(model, collate(examples, tok.pad_token_id))
    for e in examples:
        e["token_weight"] = [1.0] * len(e["input_ids"])
    weighted = micro_batch_loss(model, collate(examples, tok.pad_token_id))
    assert torch.allclose(plain, weighted, atol=1e-5)
    examples[0]["token_weight"] = [2.0] * len(examples[0]["input_ids"])
    assert micro_batch_loss(model, collate(examples, tok.pad_token_id)).item() > weighted.item()


# ------------------------------------------------------------------------------------------------ the loop
def test_edit_loop_keeps_fixed_trajectories_with_the_error_moving_forward(tmp_path, pool):
    preds = [[r["answer_cot"], corrupt(r["answer_cot"], 1), corrupt(r["answer_cot"], 1), "x " * 600]
             for r in pool[:4]]
    cfg = EditConfig(cur_sampled_data_path=[str(sampling_results(tmp_path, pool[:4], preds))],
                     output_path=str(tmp_path / "traj"), window_size=2)
    stats = run_edit(cfg)
    assert stats["complete"] and stats["status"]["correct"] == 4 and stats["status"]["improved"] == 4
    assert stats["status"]["duplicate"] == 4 and stats["status"]["too_long"] == 4
    records = json.loads((tmp_path / "traj" / "trajectories.json").read_text())
    for rec in records:
        if rec["status"] == "improved":
            steps = [s for s in rec["error_steps"] if s is not None]
            assert steps == sorted(set(steps)) and rec["error_steps"][-1] is None
    data, counts = build_tripost_data(records, 1.5)
    assert counts["improvement"] == 4 and counts["non_improvement"] == 3 and counts["gold"] == 3
    assert {r["kind"] for r in data} == {"improvement", "non_improvement", "gold"}
    imp = next(r for r in data if r["kind"] == "improvement")
    assert "\nFeedback: Step (1) is correct. In step (2)" in imp["answer_cot"]
    assert "\nUpdated Answer:\n" in imp["answer_cot"]


def test_no_progress_keeps_only_the_attempt_and_its_first_feedback(tmp_path, pool):
    class BackwardsImprover:  # repairs step 2 but breaks step 1: the error step moves back
        def improve_many(self, triples):
            return [corrupt(item["answer_cot"], 0) for item, _, _ in triples]

    from src.tripost.verify import ProcessVerifier

    class FixSecondTime:  # then the gold: the trajectory ends correct, yet moved backwards once
        def __init__(self):
            self.calls = 0

        def improve_many(self, triples):
            self.calls += 1
            return [corrupt(i["answer_cot"], 0) if self.calls == 1 else i["answer_cot"] for i, _, _ in triples]

    src = sampling_results(tmp_path, pool[:1], [[corrupt(pool[0]["answer_cot"], 1)]])
    cfg = EditConfig(cur_sampled_data_path=[str(src)], output_path=str(tmp_path / "a"))
    stats = run_edit(cfg, workers=({"synthetic": ProcessVerifier("synthetic")}, FixSecondTime()))
    rec = json.loads((tmp_path / "a" / "trajectories.json").read_text())[0]
    assert stats["status"]["feedback_only"] == 1 and rec["error_steps"] == [2, 1, None]
    assert rec["kept_attempts"] == rec["attempts"][:1] and len(rec["kept_feedbacks"]) == 1
    cfg.output_path = str(tmp_path / "b")
    stats = run_edit(cfg, workers=({"synthetic": ProcessVerifier("synthetic")}, BackwardsImprover()))
    assert stats["status"]["not_fixed"] == 1 and stats["kept"] == 0


def test_a_rerun_after_a_kill_redoes_only_the_unfinished_windows(tmp_path, pool):
    from src.tripost.improve import ScriptedImprover
    from src.tripost.verify import ProcessVerifier

    class Counting(ProcessVerifier):
        def __init__(self):
            super().__init__("synthetic")
            self.asked: set[str] = set()

        def verify_many(self, pairs):
            self.asked |= {item["item_id"] for item, _ in pairs}
            return super().verify_many(pairs)

    src = sampling_results(tmp_path, pool[:4], [[corrupt(r["answer_cot"], 1)] for r in pool[:4]])
    cfg = EditConfig(cur_sampled_data_path=[str(src)], output_path=str(tmp_path / "t"), window_size=1)
    run_edit(cfg)
    whole = (tmp_path / "t" / "trajectories.json").read_text()
    # a kill -9 after window 3's trajectories were written but before its state: the state says 2 windows
    state = json.loads((tmp_path / "t" / "edit_state.json").read_text())
    write_json(tmp_path / "t" / "edit_state.json", {**state, "windows_done": 2})
    verifier = Counting()
    stats = run_edit(cfg, workers=({"synthetic": verifier}, ScriptedImprover()))
    assert verifier.asked == {pool[2]["item_id"], pool[3]["item_id"]}
    assert stats["complete"] and (tmp_path / "t" / "trajectories.json").read_text() == whole
    cfg.max_updates = 1  # another setting: nothing is reused
    verifier = Counting()
    run_edit(cfg, workers=({"synthetic": verifier}, ScriptedImprover()))
    assert len(verifier.asked) == 4


# ------------------------------------------------------------------------------------------------ teacher
class StubTeacher(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint: model list, and chat replies from ``server.replies`` (500 once empty)."""

    def log_message(self, *args):
        pass

    def _send(self, code: int, obj: dict) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._send(200, {"object": "list", "data": [{"id": "stub", "object": "model"}]})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.server.lock:
            reply = self.server.replies.pop(0) if self.server.replies else None
        if reply is None:
            self._send(500, {"error": {"message": "stub teacher is down", "type": "server_error"}})
            return
        self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": "stub",
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": reply}}],
                         "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})


@pytest.fixture
def stub_teacher():
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubTeacher)
    server.replies, server.lock = [], threading.Lock()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _edit_cli(args: list[str], capsys) -> tuple[int, str]:
    from edit_trajectories import main

    rc = main(args)
    return rc, capsys.readouterr().err


def test_teacher_failing_mid_run_keeps_finished_windows_and_a_rerun_continues(tmp_path, pool, stub_teacher,
                                                                            capsys):
    src = sampling_results(tmp_path, pool[:3], [[r["answer_cot"]] for r in pool[:3]])
    out = tmp_path / "traj"
    args = ["--cur_sampled_data_path", str(src), "--output_path", str(out), "--verifier", "teacher",
            "--window_size", "1", "--teacher_model", "stub", "--teacher_max_retries", "0",
            "--teacher_timeout", "5", "--teacher_base_url", f"http://127.0.0.1:{stub_teacher.server_port}/v1"]
    stub_teacher.replies = [format_feedback(5), "I am not sure."]  # window 0 correct, window 1 unparsable
    rc, err = _edit_cli(args, capsys)
    assert rc == 1 and "2 of 3 windows finished" in err and "rerun" in err
    assert "unparsable feedback" in err
    state = json.loads((out / "edit_state.json").read_text())
    assert state["windows_done"] == 2 and len(json.loads((out / "trajectories.json").read_text())) == 2
    stub_teacher.replies = [format_feedback(5)]  # back up: only window 2 is asked for
    rc, _ = _edit_cli(args, capsys)
    stats = json.loads((out / "edit_stats.json").read_text())
    assert rc == 0 and stats["complete"] and stats["status"]["correct"] == 2
    assert stats["unparsable_feedback"] == 1 and stats["status"]["unparsable_feedback"] == 1


def test_unreachable_teacher_is_one_line_and_writes_nothing(tmp_path, pool, capsys):
    src = sampling_results(tmp_path, pool[:1], [[pool[0]["answer_cot"]]])
    rc, err = _edit_cli(["--cur_sampled_data_path", str(src), "--output_path", str(tmp_path / "o"),
                         "--verifier", "teacher", "--teacher_model", "m", "--teacher_preflight_timeout", "2",
                         "--teacher_base_url", "http://127.0.0.1:9/v1"], capsys)
    assert rc == 1 and "does not answer" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "trajectories.json").exists()


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_input_is_one_line_and_exit_2(tmp_path, pool, capsys):
    from generate_train_data import main as generate

    src = sampling_results(tmp_path, pool[:2], [[corrupt(r["answer_cot"], 1)] for r in pool[:2]])
    rc, err = _edit_cli(["--cur_sampled_data_path", str(src), "--output_path", str(tmp_path / "t"),
                         "--improver", "teacher"], capsys)
    assert rc == 2 and "needs --teacher_model" in err
    rc, err = _edit_cli(["--cur_sampled_data_path", str(src), "--output_path", str(tmp_path / "t"),
                         "--max_updates", "-1"], capsys)
    assert rc == 2 and "--max_updates must be >= 0" in err
    assert _edit_cli(["--cur_sampled_data_path", str(src), "--output_path", str(tmp_path / "t")], capsys)[0] == 0
    traj = tmp_path / "t" / "trajectories.json"
    out = tmp_path / "data.json"
    rc = generate(["--format", "tripost", "--cur_sampled_data_path", str(traj), "--next_iter_data_path",
                   str(out), "--improve_ratio", "-1"])
    err = capsys.readouterr().err
    assert rc == 2 and "--improve_ratio must be >= 0" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert generate(["--format", "tripost", "--cur_sampled_data_path", str(traj), "--next_iter_data_path",
                     str(out)]) == 0
    capsys.readouterr()
    data = json.loads(out.read_text())
    assert [r["kind"] for r in data].count("improvement") == 2
    assert json.loads((tmp_path / "data.counts.json").read_text())["improvement"] == 2
    rc = generate(["--format", "tripost", "--cur_sampled_data_path", str(src / "results.json"),
                   "--next_iter_data_path", str(tmp_path / "d2.json")])
    assert rc == 2 and "not a trajectory" in capsys.readouterr().err


def test_train_refuses_records_without_the_feedback_marker(tmp_path, tiny_model_dir, capsys):
    from train import main as train_main

    data = tmp_path / "plain.json"
    write_json(data, [{"item_id": "a", "question": "q", "answer_cot": "x\nFeedback: fine", "answer_value": "1"},
                      {"item_id": "b", "question": "q", "answer_cot": "The answer is 1", "answer_value": "1"}])
    args = ["--model_name_or_path", str(tiny_model_dir), "--train_file", str(data), "--model_dir",
            str(tmp_path / "run"), "--section_weight", "1.5"]
    rc = train_main(args)
    err = capsys.readouterr().err
    assert rc == 2 and "record 0 (item_id=a)" in err and "not a TriPosT feedback" in err
    assert not (tmp_path / "run").exists()
    rc = train_main([*args[:-1], "-1"])
    assert rc == 2 and "--section_weight must be >= 0" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ scripts
@pytest.mark.parametrize("profile", ["tiny", "llama3"])
def test_script_stages_are_accepted_by_the_real_parsers(profile, tmp_path):
    import os
    import shlex
    import subprocess

    from transformers import HfArgumentParser

    from src.evaluation import EvalConfig
    from src.filtering import GenerateConfig
    from src.sampling.teacher import TeacherConfig
    from src.training import TrainConfig

    env = {**os.environ, "DRY_RUN": "1", "OUTPUT_DIR": str(tmp_path), "GPU_IDS": "0 1 2 3 4 5 6 7",
           "TRIPOST_VERIFIER": "teacher"}
    proc = subprocess.run(["bash", str(REPO / "scripts" / profile / "cot_train_tripost.sh")], env=env,
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    stages = [line.split(": ", 1) for line in proc.stdout.splitlines() if line.startswith("[dry-run] ")]
    names = [name[len("[dry-run] "):] for name, _ in stages]
    assert names[-15:] == ["sample", "edit", "generate", "train", "eval"] * 3  # 3 TriPosT iterations
    parsers = {"edit_trajectories.py": [EditConfig, TeacherConfig], "generate_train_data.py": [GenerateConfig],
               "train.py": [TrainConfig], "eval.py": [EvalConfig]}
    seen: dict[str, list] = {}
    for _, command in stages:
        argv = shlex.split(command)
        script = next((a for a in argv if a in parsers), None)
        if script:
            parsed = HfArgumentParser(parsers[script]).parse_args_into_dataclasses(argv[argv.index(script) + 1:])
            seen.setdefault(script, []).append(parsed[0])
    assert [c.section_weight for c in seen["train.py"]] == [1.0, 1.5, 1.5, 1.5]
    assert [c.model_name_or_path.endswith(f"iter_{i}/model") for i, c in enumerate(seen["train.py"][1:])] == \
        [True] * 3  # each TriPosT iteration continues from the previous model
    assert [c.self_improve_rounds for c in seen["eval.py"]] == [0, 2, 2, 2]
    assert {(c.verifier, c.improver, c.max_updates) for c in seen["edit_trajectories.py"]} == \
        {("teacher", "scripted", 5)}
    assert {(c.format, c.improve_ratio) for c in seen["generate_train_data.py"]} == {("tripost", 1.5)}
    if profile == "llama3":
        assert {(c.n_epochs, c.learning_rate) for c in seen["train.py"][1:]} == {(4, 1e-6)}


def test_eval_refuses_negative_rounds_and_pot_before_the_engine(tmp_path, tiny_model_dir, capsys):
    from eval import main as eval_main

    test = tmp_path / "test.json"
    write_json(test, [{"item_id": "a", "question": "Mia has 2 apples.", "answer_value": "2"}])
    base = ["--model_name_or_path", str(tiny_model_dir), "--results_path", str(tmp_path / "ev"),
            "--dataset_name", "synthetic", "--eval_data_file", str(test)]
    assert eval_main([*base, "--self_improve_rounds", "-1"]) == 2
    assert "--self_improve_rounds must be >= 0" in capsys.readouterr().err
    assert eval_main([*base, "--self_improve_rounds", "1", "--mode", "pot"]) == 2
    assert "needs --mode cot" in capsys.readouterr().err
    assert not (tmp_path / "ev" / "metrics.json").exists()
