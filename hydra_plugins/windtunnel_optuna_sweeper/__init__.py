"""windtunnel's Hydra sweeper for Optuna 4/5 (hydra/sweeper=windtunnel_optuna), with pruning.

The published hydra-optuna-sweeper pins optuna<3 and has no pruning; this one asks Optuna for trials,
launches them through any Hydra launcher, and tells Optuna the results. Jobs report intermediate values
to the same storage through windtunnel's eval callback (windtunnel/sweep/study.py), so pruning works across
processes and machines.
"""
