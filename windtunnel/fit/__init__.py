"""Fit the wind-tunnel laws from logged runs: optimal batch size vs loss, the LR optimum, and L(N, D).

Inputs are pandas tables with canonical columns (see `canonical`): windtunnel's own `load_runs` /
`load_results` tables, or anyone's CSV/Parquet of runs through a column mapping. Every fit returns a
FitResult that serialises to JSON with each parameter's value and bootstrap interval, its units and
diagnostics. Data that cannot identify a law raises NotFittable with the reason; it never returns a
confident number. The only scipy importer.
"""
from .batch import batch_size_law, tokens_to_reach
from .loss import LOSS_FORMS, loss_law
from .lr import lr_optimum
from .result import WINDTUNNEL_COLUMNS, FitResult, NotFittable, canonical

__all__ = ["FitResult", "LOSS_FORMS", "NotFittable", "WINDTUNNEL_COLUMNS", "batch_size_law", "canonical",
           "loss_law", "lr_optimum", "tokens_to_reach"]
