"""The prediction check at 4 seeds (the measurements issue): the resolution of its target (windtunnel resolution,
4 packed seeds, under the record's eval set and under the sample one) and the regret table with paired-seed
intervals. Each stage resumes (finished run dirs are skipped). Run on the H200 through seeds.sh:
    python3 sweeps/prediction_check/seeds.py STAGE OUT      STAGE: sample | head | regret
sample: the predicted point at seeds 0-3 on the default held-out set (train.eval_set=sample, 4M tokens at the end);
head: the same on the record's set (the val split's first 262k tokens); regret: the four neighbours at seeds 0-3
(sample set), the predicted point's seeds taken from the sample stage."""
import json
import sys
from pathlib import Path

from windtunnel import resolution
from windtunnel.compose import compose
from windtunnel.demo import DemoPlan, _overrides, _target_points

HERE = Path(__file__).resolve().parent
SEEDS = 4


def main(stage: str, out: Path) -> None:
    record = json.loads((HERE / "demo.json").read_text())
    points = {r["point"]: (r["lr"], r["batch_size_tokens"]) for r in record["regret"]}
    plan = DemoPlan.cuda()
    plan.target_seeds = SEEDS
    lr, bs = points["predicted"]
    target = _overrides(plan, plan.target_width) + [f"optim.lr={lr}", f"train.batch_size_tokens={bs}",
                                                    f"train.total_tokens={plan.target_tokens}"]
    if stage in ("sample", "head"):
        extra = ["train.eval_set=head", "train.final_eval_tokens=0"] if stage == "head" else []
        done = resolution.measure(compose(target + extra), out / f"resolution_{stage}", seeds=SEEDS)
        print(resolution.summary(done))
        return
    # the regret table: the predicted point's seeds are the sample stage's runs (the same trials)
    tag = f"predicted-lr{lr:.6g}-bs{bs}"
    for s in range(SEEDS):
        link = out / "target" / f"{tag}-s{s}"
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(out / f"resolution_sample/seed{s}", target_is_directory=True)
    rows = _target_points(plan, out / "target", points)
    (out / "regret.json").write_text(json.dumps(rows, indent=1))
    for r in rows:
        print(r["point"], f"{r['final_eval_loss']:.4f}", r["losses"], r.get("difference"))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
