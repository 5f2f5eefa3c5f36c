"""The resolution of every GPU record (the measurements issue: "put its number in the record of every experiment"):
for each record, its representative trial (the point its README's findings turn on) trained at 4 seeds, packed where
the trial allows, through `windtunnel resolution` (windtunnel/resolution.py), on the record's own held-out set (the
val split's first train.eval_tokens: what the record's runs were measured on), so that the seed spread is the
spread of the numbers the record quotes. Resumable (finished seeds are kept). Run on the H200 through run.sh:
    python3 sweeps/resolution/measure.py OUT [NAME ...]
"""
import json
import sys
from pathlib import Path

from windtunnel import resolution
from windtunnel.compose import compose

SEEDS = 4
RECORD_SET = ["train.eval_set=head", "train.final_eval_tokens=0"]  # config.LEGACY: the records' eval set
# record -> the overrides of its representative trial (as its runs.csv.gz `overrides` column writes them)
TRIALS = {
    # the largest proxy at its best batch (3.216 at 65,536; the record's lr 0.01)
    "batch_size": ["sweep=batch_size_gpu", "model.d_model=384", "train.batch_size_tokens=65536"],
    # the widest muP model at its optimum (2^-8 = 0.0039 at every width)
    "lr_transfer": ["sweep=lr_transfer", "model.d_model=1024", "model.parametrization=mup", "optim.lr=0.00390625"],
    # lr_search's model (lr_transfer's width 512, whose 160-step run its last branch equals) at the searched optimum
    "lr_search": ["sweep=lr_transfer", "model.d_model=512", "model.parametrization=mup", "optim.lr=0.0055"],
    # an (N, D) point of the law: width 192 decayed at 4N (a branch at 4N = a WSD run of 4N / 0.9 tokens)
    "wsd_data_model": ["sweep=wsd_data_model", "model.d_model=192", "optim.lr=0.004", "train.branch_at_n=[]",
                       "train.tokens_per_param=4.444444"],
    # the 10% WSD decay at this shape's muP LR (the record's lr0.004 runs)
    "wsd_vs_cosine": ["sweep=wsd_vs_cosine", "schedule=wsd", "optim.lr=0.004"],
}


def main(out: Path, names: list[str]) -> None:
    for name in names or list(TRIALS):
        record = resolution.measure(compose(TRIALS[name] + RECORD_SET), out / name, seeds=SEEDS)
        print(f"== {name}: {' '.join(TRIALS[name])}\n{resolution.summary(record)}", flush=True)
        (out / f"{name}.json").write_text(json.dumps({k: v for k, v in record.items() if k != "trial"}, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
