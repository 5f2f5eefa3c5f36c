"""What a user sees while a trial trains: a tqdm line (tokens, loss, tokens/s, ETA) on a terminal, and a log
line per held-out eval (so Hydra's per-job .log files fill and non-terminal output still shows progress).
Quiet (no bar) when stderr is not a terminal, on ranks other than 0, or when the windtunnel logger is above INFO
(`--quiet`)."""
import logging
import sys

from tqdm import tqdm

log = logging.getLogger("windtunnel")


class Progress:
    def __init__(self, name: str, total_tokens: int, done_tokens: int, show: bool):
        self.name = name
        visible = show and sys.stderr.isatty() and log.getEffectiveLevel() <= logging.INFO
        desc = name if len(name) <= 40 else "..." + name[-37:]  # a sweep's run dir names are long; the bar is not
        self.bar = tqdm(total=total_tokens, initial=done_tokens, unit="tok", unit_scale=True, desc=desc,
                        dynamic_ncols=True, leave=False, disable=not visible)
        self.show = show

    def update(self, tokens: int, train_loss: float, eval_loss=None) -> None:
        """At each logged row: tokens trained so far, the train loss (and held-out loss at an eval)."""
        self.bar.update(tokens - self.bar.n)
        post = {"loss": f"{train_loss:.4f}"}
        if eval_loss is not None:
            post["eval"] = f"{eval_loss:.4f}"
            if self.show:
                log.info("%s: %s tokens, train loss %.4f, held-out loss %.4f", self.name, f"{tokens:,}", train_loss,
                         eval_loss)
        self.bar.set_postfix(post, refresh=False)

    def close(self) -> None:
        self.bar.close()
