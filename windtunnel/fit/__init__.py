"""Fit the wind-tunnel laws from logged runs: optimal batch size vs loss (MiniCPM) or vs tokens (Step Law), the
LR optimum per cell and its law, L(N, D) (Approach 3), isoFLOP optima (Approach 2) and the critical batch.

Inputs are pandas tables with canonical columns (see `canonical`): windtunnel's own `load_runs` /
`load_results` tables, or anyone's CSV/Parquet of runs through a column mapping. Every fit returns a
FitResult that serialises to JSON with each parameter's value and bootstrap interval, its units and
diagnostics. Data that cannot identify a law raises NotFittable with the reason; it never returns a
confident number. The only scipy importer.
"""
from .batch import batch_size_law, tokens_to_reach
from .loss import LOSS_FORMS, loss_law
from .isoflop import critical_batch_law, isoflop_law
from .lr import batch_size_data_law, coarse_grid_warnings, log_grid, lr_optimum
from .result import WINDTUNNEL_COLUMNS, FitResult, NotFittable, canonical, quality, unidentified

__all__ = ["FitResult", "LOSS_FORMS", "NotFittable", "WINDTUNNEL_COLUMNS", "batch_size_data_law", "batch_size_law",
           "canonical", "coarse_grid_warnings", "critical_batch_law", "isoflop_law", "log_grid", "quality",
           "loss_law", "lr_optimum", "tokens_to_reach", "unidentified"]
