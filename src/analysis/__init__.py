"""Tables and figures of GSI runs: accuracy per iteration, tail narrowing, sampling efficiency (issue 9).

    python analyze.py output/tiny/vanilla_exp output/tiny/state_reset_exp --out output/tiny/report
"""

from src.analysis.experiment import Arm, Score, load_experiment
from src.analysis.perplexity import HfPerplexity, VllmPerplexity
from src.analysis.report import AnalyzeConfig, Report, ReportInputs, analyze, build_report

__all__ = ["AnalyzeConfig", "Arm", "HfPerplexity", "Report", "ReportInputs", "Score", "VllmPerplexity", "analyze",
           "build_report", "load_experiment"]
