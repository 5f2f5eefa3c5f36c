"""Hydra sweeps (the app) and the glue the Hydra plugins import (Optuna studies, grid packing)."""
