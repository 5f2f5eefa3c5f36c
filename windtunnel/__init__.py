"""windtunnel: MiniCPM-style model wind tunnels -- tiny muP LMs, hyperparameter scaling laws, predictions."""
__version__ = "0.1.0"

from .config import ConfigError, TrialConfig  # noqa: E402

__all__ = ["ConfigError", "TrialConfig", "__version__"]
