"""TriPosT: turn the current model's sampled attempts into attempt -> feedback -> improved attempt trajectories.

    python edit_trajectories.py --cur_sampled_data_path output/tiny/exp/iter_0/inference_data \\
        --output_path output/tiny/exp/iter_0/trajectories --verifier process --improver scripted
    python edit_trajectories.py ... --verifier teacher --improver teacher \\
        --teacher_model Meta-Llama-3-70B-Instruct --teacher_base_url http://127.0.0.1:8000/v1

Writes ``trajectories.json`` (every attempt with its status), ``edit_state.json`` (finished windows) and
``edit_stats.json``; ``generate_train_data.py --format tripost`` turns them into training data. A rerun after a
crash continues at the first unfinished window. Bad input is one line on stderr and exit 2 before anything runs
(src/cli.py); a teacher that fails mid-run ends the run with exit 1, the finished windows kept. The logic is in
src/tripost/edit.py.
"""

from __future__ import annotations

import json
import sys

from src.cli import UsageError, check_output, check_range, output_lock, parse_args, run_cli
from src.filtering import results_files
from src.sampling.teacher import TeacherConfig, TeacherError
from src.tripost.edit import EditConfig, EditInterrupted, load_units, run_edit


def check_edit_args(cfg: EditConfig, teacher: TeacherConfig) -> None:
    """Every check that needs no teacher: numbers, the inputs and their records, the output folder."""
    for flag in ("max_words", "window_size", "samples_per_question"):
        check_range(flag, getattr(cfg, flag), 1)
    check_range("max_updates", cfg.max_updates, 0)
    check_range("improver_temperature", cfg.improver_temperature, 0)
    if "teacher" in (cfg.verifier, cfg.improver) and not teacher.teacher_model:
        raise UsageError("--verifier teacher / --improver teacher needs --teacher_model (the served model's name)")
    inputs = [file for path in cfg.cur_sampled_data_path for file in results_files(path)]
    load_units(cfg)  # every record is valid and every data set known
    check_output("output_path", cfg.output_path, "folder", inputs=inputs)


def run(argv: list[str] | None) -> int:
    cfg, teacher = parse_args([EditConfig, TeacherConfig], argv, "edit_trajectories.py")
    check_edit_args(cfg, teacher)
    with output_lock(cfg.output_path):
        try:
            stats = run_edit(cfg, teacher)
        except (EditInterrupted, TeacherError) as err:
            print(f"edit_trajectories.py: error: {err}", file=sys.stderr)
            return 1
    print(json.dumps(stats, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli("edit_trajectories.py", lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
