"""Sampling for GSI: per-query state, the five strategies, the resampling loop and the teacher client.

    from src.sampling import SamplingConfig, run_sampling, write_sampling_outputs
    run = run_sampling(llm, records, "gsm8k", SamplingConfig(strategy="answer_driven"))
    write_sampling_outputs(run, "output/sampling")
"""

from src.sampling.loop import (
    OUTPUT_FILES,
    SamplingAborted,
    SamplingConfig,
    SamplingRun,
    run_sampling,
    write_sampling_outputs,
)
from src.sampling.query import QueryState
from src.sampling.strategies import STRATEGIES, get_strategy
from src.sampling.teacher import TeacherClient, TeacherConfig, TeacherError

__all__ = [
    "OUTPUT_FILES", "STRATEGIES", "QueryState", "SamplingAborted", "SamplingConfig", "SamplingRun", "TeacherClient",
    "TeacherConfig", "TeacherError", "get_strategy", "run_sampling", "write_sampling_outputs",
]
