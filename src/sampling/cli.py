"""The command line shared by the five inference scripts; each script only names its strategy.

    python inference_state_reset.py --model_name_or_path output/tiny-model \
        --inference_data_file data/synthetic/inference/cot/synthetic.json --dataset_name synthetic \
        --results_path output/sampling/state_reset --sample_num 8 --min_correct_num 4 --max_resample_num 8

Several ``--inference_data_file`` / ``--dataset_name`` pairs are served by one engine (loaded once); each data
set then gets its own subfolder ``<results_path>/<dataset_name>/``.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from src.engine import EngineConfig, build_llm
from src.records import load_records
from src.sampling.loop import SamplingAborted, SamplingConfig, SamplingRun, run_sampling, write_sampling_outputs
from src.sampling.teacher import TeacherClient, TeacherConfig, TeacherError

log = logging.getLogger("src.sampling")


@dataclass
class DataArguments:
    inference_data_file: list[str] = field(metadata={
        "help": "sampling pool(s): JSON list of {item_id, question, answer_cot, answer_value}; several allowed"})
    dataset_name: list[str] = field(metadata={
        "help": "dataset name per --inference_data_file, in the same order (grading rules, state-reset cut)"})
    results_path: str = field(metadata={
        "help": "output folder (one subfolder per dataset when several); existing files are replaced"})
    log_level: str = field(default="INFO", metadata={"help": "logging level"})


def sample_and_save(llm, records: list[dict], dataset: str, cfg: SamplingConfig, out_dir: str | Path,
                    teacher: TeacherClient | None = None, engine_start_seconds: float | None = None) -> SamplingRun:
    """Run one data set and write its four files; on an aborted run write what was gathered, then raise."""
    try:
        run = run_sampling(llm, records, dataset, cfg, teacher=teacher, engine_start_seconds=engine_start_seconds)
    except SamplingAborted as err:
        write_sampling_outputs(err.run, out_dir)
        raise SamplingAborted(f"{err} Partial results written to {out_dir}.", err.run) from err
    write_sampling_outputs(run, out_dir)
    return run


def main(strategy: str, argv: list[str] | None = None) -> list[SamplingRun]:
    """Parse the command line (``--help`` lists every flag), load the data, build the engine, sample, save."""
    from transformers import HfArgumentParser

    types = [DataArguments, SamplingConfig, EngineConfig] + ([TeacherConfig] if strategy == "teacher_help" else [])
    parser = HfArgumentParser(types, description=f"GSI sampling with the {strategy} strategy "
                                                 "(initial samples, then guided resampling rounds).")
    parser.set_defaults(strategy=strategy)
    data, cfg, engine_cfg, *rest = parser.parse_args_into_dataclasses(args=argv)
    if cfg.strategy != strategy:
        parser.error(f"this script runs the {strategy} strategy; use the script of {cfg.strategy} instead")
    if len(data.inference_data_file) != len(data.dataset_name):
        parser.error(f"{len(data.inference_data_file)} --inference_data_file but {len(data.dataset_name)} "
                     "--dataset_name; give one name per file")
    logging.basicConfig(level=data.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    # Validate every input before the (slow) engine start.
    pools = [(name, load_records(path, "train")) for path, name in zip(data.inference_data_file, data.dataset_name)]
    try:  # the teacher's endpoint and model name are checked here, before the engine starts
        teacher = TeacherClient(rest[0]) if rest else None
    except TeacherError as err:
        sys.exit(f"error: {err}")
    start = time.perf_counter()
    llm = build_llm(engine_cfg)
    engine_start = time.perf_counter() - start
    log.info("engine started in %.1f s", engine_start)

    runs = []
    for name, records in pools:
        out = Path(data.results_path) / name if len(pools) > 1 else Path(data.results_path)
        try:
            runs.append(sample_and_save(llm, records, name, cfg, out, teacher, engine_start))
        except SamplingAborted as err:
            sys.exit(f"error: {err}")
        log.info("%s: %d queries, coverage %.3f, %d training items -> %s", name, len(records),
                 runs[-1].stats["rounds"][-1]["coverage"], len(runs[-1].resample_results), out)
    return runs
