"""Runs: train one configuration to a folder, evaluate a folder, compare runs.

These glue the data sets, the model registry (with the models' run options and
hooks), the objective registry, :func:`pyro_deepgen.train.fit` and
:mod:`pyro_deepgen.evaluate` together; the CLI, tutorials and benchmarks call
them. Nothing here names a model: what a model adds to a run, it declares when it
registers (:class:`~pyro_deepgen.models.ModelSpec`).
"""

from pyro_deepgen.runs.config import (BINARIZE, COMPILE, RUN, RunConfig, binarization, dataset_for,
                                      load_run_config)
from pyro_deepgen.runs.evaluate import (EVALUATION, EVALUATION_METHODS, LatentDecoder, evaluate_run,
                                        evaluation_subset, sample_run)
from pyro_deepgen.runs.report import compare, compare_runs, results_markdown, write_report
from pyro_deepgen.runs.train import Run, train_run

__all__ = [
    "BINARIZE",
    "COMPILE",
    "EVALUATION",
    "EVALUATION_METHODS",
    "LatentDecoder",
    "RUN",
    "Run",
    "RunConfig",
    "binarization",
    "compare",
    "compare_runs",
    "dataset_for",
    "evaluate_run",
    "evaluation_subset",
    "load_run_config",
    "results_markdown",
    "sample_run",
    "train_run",
    "write_report",
]
