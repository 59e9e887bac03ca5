"""The command line shared by the five inference scripts; each script only names its strategy.

    python inference_state_reset.py --model_name_or_path output/tiny-model \
        --inference_data_file data/synthetic/inference/cot/synthetic.json --dataset_name synthetic \
        --results_path output/sampling/state_reset --sample_num 8 --min_correct_num 4 --max_resample_num 8

Several ``--inference_data_file`` / ``--dataset_name`` pairs are served by one engine (loaded once); each data
set then gets its own subfolder ``<results_path>/<dataset_name>/``.

Every input is checked before the engine starts (src/cli.py's contract: one line, exit 2, nothing written):
flags, data sets, pool files, the model, the teacher settings and the output folder, which is then locked for
the run.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from src import engine
from src.cli import (
    UsageError,
    check_input_file,
    check_model_source,
    check_output,
    check_range,
    output_lock,
    parse_args,
    run_cli,
)
from src.engine import EngineConfig
from src.fidelity import SAMPLING_DEFAULTS
from src.records import load_records
from src.registry import get_dataset
from src.sampling.loop import SamplingAborted, SamplingConfig, SamplingRun, run_sampling, write_sampling_outputs
from src.sampling.teacher import TeacherClient, TeacherConfig, TeacherError
from src.shards import SAMPLING, ShardArguments, write_manifest

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

    def __post_init__(self) -> None:
        if len(self.inference_data_file) != len(self.dataset_name):
            raise ValueError(f"{len(self.inference_data_file)} --inference_data_file but {len(self.dataset_name)} "
                             "--dataset_name; give one name per file")
        for name in self.dataset_name:
            get_dataset(name)  # ValueError naming the known data sets
        if not isinstance(logging.getLevelName(self.log_level.upper()), int):
            raise ValueError(f"--log_level {self.log_level!r} is not a logging level (DEBUG, INFO, WARNING, ERROR)")
        if len(set(self.dataset_name)) != len(self.dataset_name) and len(self.dataset_name) > 1:
            raise ValueError(f"--dataset_name repeats a name ({' '.join(self.dataset_name)}): the per-dataset "
                             "output folders would overwrite each other")


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


SCRIPTS = {"vanilla": "inference.py", "answer_driven": "inference_answer_driven.py",
           "rationale_driven": "inference_rationale_driven.py", "teacher_help": "inference_teacher_help.py",
           "state_reset": "inference_state_reset.py"}


def check_sampling_args(strategy: str, data: DataArguments, cfg: SamplingConfig, engine_cfg: EngineConfig,
                        teacher_cfg: TeacherConfig | None) -> tuple[list[tuple[str, list[dict]]], TeacherClient | None]:
    """Every check that needs no engine; returns the validated pools as (dataset name, records) and the teacher."""
    if cfg.strategy != strategy:
        raise UsageError(f"this script runs the {strategy} strategy; use {SCRIPTS.get(cfg.strategy, 'the script of')} "
                         f"for {cfg.strategy}")
    if cfg.min_correct_num > cfg.sample_num:
        raise UsageError(f"--min_correct_num {cfg.min_correct_num} is more than --sample_num {cfg.sample_num}")
    check_range("max_new_tokens", cfg.max_new_tokens, 1)
    check_range("temperature", cfg.temperature, 0)
    check_range("top_p", cfg.top_p, 0, 1)
    check_range("pot_workers", cfg.pot_workers, 1)
    check_range("device_num", engine_cfg.device_num, 1)
    check_range("max_model_len", engine_cfg.max_model_len, 1)
    files = [check_input_file("inference_data_file", f) for f in data.inference_data_file]
    pools = [(name, load_records(path, "pool")) for path, name in zip(files, data.dataset_name)]
    teacher = None
    if teacher_cfg is not None:
        if not teacher_cfg.teacher_model:
            raise UsageError("teacher_help needs --teacher_model (the name the teacher endpoint serves)")
        if not teacher_cfg.teacher_base_url.startswith(("http://", "https://")):
            raise UsageError(f"--teacher_base_url must be an http(s) URL, got {teacher_cfg.teacher_base_url!r}")
        try:  # asks the endpoint for its model list: a closed port or a wrong name fails here, in seconds
            teacher = TeacherClient(teacher_cfg)
        except TeacherError as err:
            raise UsageError(str(err)) from None
    check_model_source("model_name_or_path", engine_cfg.model_name_or_path)
    check_output("results_path", data.results_path, "folder", inputs=files)
    if cfg.temperature == 0 and cfg.sample_num > 1:  # vLLM refuses n > 1 greedy samples (after the engine start)
        raise UsageError(f"--sample_num {cfg.sample_num} needs --temperature > 0 (greedy decoding gives one answer "
                         "per question; the original scripts pass --temperature 0.7)")
    return pools, teacher


def main(strategy: str, argv: list[str] | None = None) -> int:
    """Parse the command line (``--help`` lists every flag), check it, build the engine, sample, save.

    Returns the exit status: 0, 2 for bad input (one line on stderr, before the engine), 1 for an aborted run.
    """
    return run_cli(SCRIPTS[strategy], lambda: sample_from_command_line(strategy, argv))


def sample_from_command_line(strategy: str, argv: list[str] | None) -> int:
    types = [DataArguments, SamplingConfig, EngineConfig, ShardArguments] + \
        ([TeacherConfig] if strategy == "teacher_help" else [])
    data, cfg, engine_cfg, shard, *rest = parse_args(
        # an omitted flag takes the original inference*.py's default (src/fidelity.py)
        types, argv, SCRIPTS[strategy], defaults={**SAMPLING_DEFAULTS, "strategy": strategy},
        description=f"GSI sampling with the {strategy} strategy (initial samples, then guided resampling rounds).")
    pools, teacher = check_sampling_args(strategy, data, cfg, engine_cfg, rest[0] if rest else None)
    shard.check_pools({name: len(records) for name, records in pools})
    logging.basicConfig(level=data.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    results_path = shard.folder(data.results_path)  # <results_path>/shard_<k>_of_<N>/ when sharded (src/shards.py)
    with output_lock(results_path):
        shard.start(results_path)
        start = time.perf_counter()
        llm = engine.build_llm(engine_cfg)  # looked up at call time, so tests can forbid it
        engine_start = time.perf_counter() - start
        log.info("engine started in %.1f s", engine_start)
        for name, records in pools:
            out = results_path / name if len(pools) > 1 else results_path
            try:
                run = sample_and_save(llm, shard.select(records), name, cfg, out, teacher, engine_start)
            except SamplingAborted as err:
                print(f"{SCRIPTS[strategy]}: error: {err}", file=sys.stderr)
                return 1
            log.info("%s: %d queries, coverage %.3f, %d training items -> %s", name, run.stats["n_queries"],
                     run.stats["rounds"][-1]["coverage"], len(run.resample_results), out)
        write_manifest(results_path, SAMPLING, shard, engine_cfg.seed, sampling_settings(cfg, engine_cfg, rest),
                       [(name, file, records) for (name, records), file in zip(pools, data.inference_data_file)],
                       {name: name if len(pools) > 1 else "" for name, _ in pools})
    return 0


def sampling_settings(cfg: SamplingConfig, engine_cfg: EngineConfig, teacher: list[TeacherConfig]) -> dict:
    """What decides the samples (a shard with other values is foreign to the merge; endpoints may differ)."""
    settings = {**{k: v for k, v in asdict(cfg).items() if k != "progress"},
                **{f"engine.{k}": v for k, v in asdict(engine_cfg).items()}}
    for t in teacher:
        settings.update({k: getattr(t, k) for k in ("teacher_model", "teacher_temperature", "teacher_top_p",
                                                   "teacher_max_tokens")})
    return settings
