"""windtunnel: MiniCPM-style model wind tunnels -- tiny muP LMs, hyperparameter scaling laws, predictions.

The public API, in the order a wind tunnel uses it:

    from windtunnel import compose, run_trial, load_runs, fit, predict
    trial = compose(["model=tiny64", "optim.lr=0.01"])        # a TrialConfig, as `windtunnel train ARGS` builds it
    result = run_trial(trial, "runs/one")                     # trains it into a run directory (RunResult)
    runs = load_runs("runs/")                                 # every run under a directory, in canonical columns
    fits, not_fittable = fit(runs, ["batch_size"])            # law -> FitResult (values, intervals, diagnostics)
    pred = predict(target, tokens=..., batch_size=fits["batch_size"], lr=..., target_loss=...)

Names load when first used, so `import windtunnel` (and `windtunnel --help`) imports neither torch nor scipy.
"""
__version__ = "0.1.0"

import importlib

from .config import ConfigError, TrialConfig  # noqa: E402

__all__ = ["ConfigError", "TrialConfig", "__version__", "compose", "fit", "load_runs", "predict", "run_trial"]
_LAZY = {"run_trial": ("train", "run_trial"), "load_runs": ("tables", "load_runs"),
         # callable modules (config.callable_module): the module and its main function are one name
         "compose": ("compose", None), "fit": ("fit", None), "predict": ("predict", None)}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'windtunnel' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    loaded = importlib.import_module(f".{module}", __name__)
    return getattr(loaded, attribute) if attribute else loaded
