"""Hand a prediction to a full-scale run: the TrialConfig at the target size with its global batch split over
GPUs, a torchrun script, an sbatch script, exports for torchtitan and Megatron-LM, and a README that says
where each number came from. Rendering is a pure function of its inputs (no clock, no environment).
"""
import json
import math
import shlex
from dataclasses import dataclass
from pathlib import Path

from . import schedule, sizing
from .compose import compose_record
from .config import SHAPE_KEYS, ConfigError, TrialConfig, override, split_batch, to_dict, whole_steps
from .runs import Run, read_meta, write_file
from .runs.run import META

BYTES_PER_PARAM = sizing.BYTES_PER_PARAM  # the memory model is sizing's (shared with the trainer's check)
USABLE_MEMORY = 0.85  # leave room for the allocator, NCCL buffers and fragmentation


@dataclass
class LaunchSpec:
    nnodes: int = 1  # machines
    nproc_per_node: int = 1  # GPUs (processes) per machine
    gpu_memory_gb: float = 80.0  # memory of one GPU, for the micro-batch size and DDP vs FSDP2
    device: str = "cuda"  # "cpu" to rehearse a launch with gloo on a laptop
    parallel: str = "auto"  # "auto" (DDP when the model states fit in 40% of a GPU, else FSDP2), "ddp", "fsdp"
    partition: str = ""  # SLURM partition
    account: str = ""  # SLURM account
    time_limit: str = "72:00:00"  # SLURM wall time
    cpus_per_task: int = 16  # SLURM CPUs per node-task
    master_port: int = 29500  # torchrun rendezvous port
    python: str = "python3"  # the interpreter launch.sh runs torch.distributed.run with (`windtunnel launch`
    #                          writes its own, so the script needs no activated environment); $WINDTUNNEL_PYTHON
    #                          wins (not $PYTHON: build tools such as make export that one for their own use)
    round_batch: bool = False  # round the predicted batch to the nearest multiple of the world size

    @property
    def world(self) -> int:
        return self.nnodes * self.nproc_per_node

    def __post_init__(self) -> None:
        for name in ("nnodes", "nproc_per_node", "cpus_per_task", "master_port"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)} must be a positive integer")
        if not self.gpu_memory_gb > 0:
            raise ConfigError(f"--gpu-memory-gb {self.gpu_memory_gb} must be positive")
        for name in ("partition", "account", "time_limit"):  # written into job.sbatch as they are
            value = getattr(self, name)
            if value and not all(c.isalnum() or c in "._-:,+" for c in value):
                raise ConfigError(f"--{name.replace('_', '-')} {value!r}: letters, digits and . _ - : , + only")


def memory_plan(trial: TrialConfig, spec: LaunchSpec) -> dict:
    """Per-GPU memory of the model states and of one sequence's activations, the parallelism that fits, and
    the largest micro-batch (sequences) that fits."""
    m = trial.model
    params = sizing.total_params(m)
    budget = spec.gpu_memory_gb * 2 ** 30 * USABLE_MEMORY
    parallel = spec.parallel
    if parallel == "auto":
        parallel = "ddp" if BYTES_PER_PARAM * params < 0.4 * budget or spec.world == 1 else "fsdp"
    states = BYTES_PER_PARAM * params / (spec.world if parallel == "fsdp" else 1)
    per_seq = trial.train.seq_len * sizing.activation_bytes_per_token(m)
    max_micro = math.floor((budget - states) / per_seq)
    return {"parallel": parallel, "params": params, "state_gb": states / 2 ** 30, "seq_gb": per_seq / 2 ** 30,
            "max_micro": max_micro}


def _split(trial: TrialConfig, spec: LaunchSpec, plan: dict) -> tuple[int, int]:
    """(micro-batch, accumulation) of the trial's global batch on spec's GPUs: config.split_batch, the one splitter,
    with the micro-batch capped by what memory_plan found fits."""
    if plan["max_micro"] < 1:
        raise ConfigError("one sequence does not fit in GPU memory next to the model states; use more GPUs "
                          "(--parallel fsdp shards the states), a shorter sequence, or GPUs with more memory")
    return split_batch(trial.train.batch_size_tokens, trial.train.seq_len, spec.world, max_micro=plan["max_micro"])


def full_scale_trial(prediction: dict, spec: LaunchSpec, overrides: tuple = ()) -> tuple[TrialConfig, dict]:
    """The prediction's TrialConfig, with the user's overrides (its corpus, above all), made ready for its GPUs:
    micro-batch, parallelism, bf16, compile (built by compose_record, as every trial from a record)."""
    trial = compose_record(prediction["trial"], list(overrides))
    t = trial.train
    seqs = t.batch_size_tokens // t.seq_len
    if spec.round_batch and seqs % spec.world:
        batch = max(1, round(seqs / spec.world)) * spec.world * t.seq_len
        trial = compose_record(trial, [override("train.batch_size_tokens", batch),
                                       override("train.total_tokens", whole_steps(t.total_tokens, batch) * batch)])
    plan = memory_plan(trial, spec)
    micro, accum = _split(trial, spec, plan)
    on_gpu = spec.device == "cuda"
    trial = compose_record(trial, [
        override("train.micro_batch_size", micro), override("train.parallel", plan["parallel"]),
        override("train.device", spec.device), override("train.dtype", "bf16" if on_gpu else "fp32"),
        override("train.compile", on_gpu), "train.keep_checkpoint=true", "train.save_final=true",
        override("train.checkpoint_every", max(1, min(1000, trial.total_steps // 20)))])
    return trial, {**plan, "micro": micro, "accum": accum, "predicted_batch_tokens": seqs * t.seq_len}


def decay_trial(checkpoint: Path, decay_tokens: int, mixture: list[str]) -> TrialConfig:
    """A WSD decay of `decay_tokens` from a stable-phase checkpoint (MiniCPM's continuous training), with
    the run's own config, optionally with other data mixed in for the decay (the paper adds high-quality
    data there). Reads only the checkpoint's meta.json and its run's config.json."""
    if not (Path(checkpoint) / META).exists():
        raise ConfigError(f"--decay-from {checkpoint}: not a windtunnel checkpoint (no meta.json)")
    meta = read_meta(checkpoint)
    try:
        run = Run.of_checkpoint(checkpoint)
    except ConfigError as err:
        raise ConfigError(f"--decay-from {err}") from None
    trial = compose_record(run.recorded["trial"])
    step = meta["step"]
    overrides = schedule.decay_overrides(trial, step, whole_steps(decay_tokens, trial.train.batch_size_tokens),
                                         str(Path(checkpoint).resolve()))
    overrides += [override("name", f"{trial.name}-decay{step}"), "train.save_final=true"]
    if mixture:
        overrides.append(override("data.mixture", list(mixture)))
    return compose_record(trial, overrides)


# ----------------------------------------------------------------------------- renderers (pure)

def render_launch_sh(trial: TrialConfig, spec: LaunchSpec) -> str:
    rdzv = (f'--nnodes="$NNODES" --node_rank="$NODE_RANK" --nproc_per_node={spec.nproc_per_node} \\\n'
            f'  --rdzv_backend=c10d --rdzv_endpoint="$MASTER_ADDR:$MASTER_PORT" --rdzv_id={shlex.quote("windtunnel-" + trial.model.name)}')
    return f"""#!/usr/bin/env bash
# Full-scale training of {trial.model.name} as windtunnel predicted it (README.md beside this file says where
# each number came from). {spec.nnodes} node(s) x {spec.nproc_per_node} process(es).
#   one node:    bash launch.sh
#   many nodes:  NNODES={spec.nnodes} NODE_RANK=<0..{spec.nnodes - 1}> MASTER_ADDR=<host of rank 0> bash launch.sh   (on each node)
# A killed run resumes from its last checkpoint when started again with the same RUN_DIR.
set -euo pipefail
HERE="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
NNODES="${{NNODES:-{spec.nnodes}}}"
NODE_RANK="${{NODE_RANK:-0}}"
MASTER_ADDR="${{MASTER_ADDR:-127.0.0.1}}"
MASTER_PORT="${{MASTER_PORT:-{spec.master_port}}}"
RUN_DIR="${{RUN_DIR:-$HERE/run}}"
# torchrun is this interpreter's torch.distributed.run; the default is a quoted word of its own (a path with spaces
# or quotes stays one argument), never pasted inside another expansion
DEFAULT_PYTHON={shlex.quote(spec.python)}
PYTHON="${{WINDTUNNEL_PYTHON:-$DEFAULT_PYTHON}}"
exec "$PYTHON" -m torch.distributed.run {rdzv} \\
  -m windtunnel.cli train --config "$HERE/trial.json" --out "$RUN_DIR"
"""


def render_sbatch(trial: TrialConfig, spec: LaunchSpec) -> str:
    extra = "".join(f"#SBATCH --{k}={v}\n" for k, v in (("partition", spec.partition), ("account", spec.account)) if v)
    return f"""#!/usr/bin/env bash
#SBATCH --job-name={shlex.quote("windtunnel-" + trial.model.name)}
#SBATCH --nodes={spec.nnodes}
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node={spec.nproc_per_node}
#SBATCH --cpus-per-task={spec.cpus_per_task}
#SBATCH --time={spec.time_limit}
#SBATCH --requeue
#SBATCH --output=%x-%j.out
{extra}# One task per node runs launch.sh, which starts torchrun's {spec.nproc_per_node} processes there. After a node
# failure the requeued job resumes from the last checkpoint in RUN_DIR.
set -euo pipefail
HERE="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
export NNODES="$SLURM_NNODES"
export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
export MASTER_PORT={spec.master_port}
export RUN_DIR="${{RUN_DIR:-$HERE/run}}"
# the script's path reaches each task through the environment: never spliced into the command string that
# bash -c parses (a folder named 'a$(cmd)' would run cmd)
export WINDTUNNEL_LAUNCH_SH="$HERE/launch.sh"
srun --kill-on-bad-exit=1 bash -c 'NODE_RANK="$SLURM_NODEID" exec bash "$WINDTUNNEL_LAUNCH_SH"'
"""


def _schedule_steps(trial: TrialConfig) -> schedule.SchedulePlan:
    return schedule.plan(trial.schedule, trial.total_steps, trial.train.batch_size_tokens)


def render_torchtitan_toml(trial: TrialConfig, spec: LaunchSpec, micro: int) -> str:
    m, t, p = trial.model, trial.train, _schedule_steps(trial)
    decay = p.total - p.decay_start
    end = schedule.lr_factor(p.total, p)
    return f"""# torchtitan job config (TOML; torchtitan <= 0.2.2 -- newer releases take Python configs with the same
# keys) for {m.name}, exported by windtunnel. What torchtitan cannot express is listed in README.md:
# muP's per-group LRs and multipliers, and MiniCPM's exponential (half-life) decay.
[job]
dump_folder = "./outputs/{m.name}"
description = "windtunnel prediction for {m.name}"

[model]
name = "llama3"
flavor = "{m.name}"  # register it: dim={m.d_model}, n_layers={m.n_layers}, n_heads={m.heads}, n_kv_heads={m.kv_heads}, ffn hidden {m.ffn_dim}

[optimizer]
name = "AdamW"
lr = {trial.optim.lr!r}  # the muP base LR; windtunnel trains hidden matrices at lr / {m.width_mult:g}
eps = {trial.optim.eps!r}
weight_decay = {trial.optim.weight_decay!r}

[lr_scheduler]
warmup_steps = {p.warmup}
decay_ratio = {decay / p.total:.6g}
decay_type = "linear"  # nearest to windtunnel's {trial.schedule.decay_kind} decay; see README.md
min_lr_factor = {end:.6g}

[training]
local_batch_size = {micro}
global_batch_size = {t.batch_size_tokens // t.seq_len}
seq_len = {t.seq_len}
steps = {p.total}
max_norm = {trial.optim.grad_clip!r}
"""


def megatron_args(trial: TrialConfig, micro: int) -> list[str]:
    m, t, o, p = trial.model, trial.train, trial.optim, _schedule_steps(trial)
    style = {"exp": "exponential", "linear": "linear", "cosine": "cosine", "1-sqrt": "minus_sqrt"}[trial.schedule.decay_kind]
    args = [f"--num-layers {m.n_layers}", f"--hidden-size {m.d_model}", f"--ffn-hidden-size {m.ffn_dim}",
            f"--num-attention-heads {m.heads}", f"--seq-length {t.seq_len}", f"--max-position-embeddings {t.seq_len}",
            f"--micro-batch-size {micro}", f"--global-batch-size {t.batch_size_tokens // t.seq_len}",
            f"--train-iters {p.total}", f"--lr {o.lr!r}", f"--min-lr {o.lr * p.floor!r}",
            f"--lr-warmup-iters {p.warmup}", "--lr-decay-style WSD", f"--lr-wsd-decay-style {style}",
            f"--lr-wsd-decay-iters {p.total - p.decay_start}", f"--lr-decay-iters {p.total}",
            f"--weight-decay {o.weight_decay!r}", f"--adam-beta1 {o.beta1!r}", f"--adam-beta2 {o.beta2!r}",
            f"--adam-eps {o.eps!r}", f"--clip-grad {o.grad_clip!r}", "--bf16", "--normalization RMSNorm", "--swiglu",
            "--position-embedding-type rope", f"--rotary-base {int(m.rope_theta)}", "--disable-bias-linear",
            f"--init-method-std {m.init_std / math.sqrt(m.width_mult):.6g}"]
    if m.kv_heads != m.heads:
        args[4:4] = ["--group-query-attention", f"--num-query-groups {m.kv_heads}"]
    return args


def render_readme(prediction: dict, trial: TrialConfig, spec: LaunchSpec, plan: dict) -> str:
    m, t = trial.model, trial.train
    rows = "\n".join(f"| {k} | {v['value']:.6g} | {'' if not v.get('interval') else '[%.4g, %.4g]' % tuple(v['interval'])} "
                     f"| {v['source']} |" for k, v in prediction.get("predictions", {}).items())
    notes = "".join(f"- {n}\n" for n in prediction.get("notes", []))
    predicted = plan.get("predicted_batch_tokens", t.batch_size_tokens)
    rounded = (f"The predicted batch of {predicted:,} tokens was rounded to {t.batch_size_tokens:,} to split evenly over "
               f"{spec.world} GPUs (--round-batch). " if predicted != t.batch_size_tokens else "")
    return f"""# Full-scale run: {m.name}

N = {sizing.n_params(m):,} non-embedding parameters (d_model {m.d_model}, {m.n_layers} layers, {m.heads} heads,
{m.kv_heads} kv heads), {t.total_tokens:,} tokens in {trial.total_steps:,} steps of {t.batch_size_tokens:,} tokens.

## Where each number came from
| quantity | value | interval | source |
|---|---|---|---|
{rows}

{notes}
## Data
{data_note(trial)}

## How the batch is split
{rounded}{t.batch_size_tokens // t.seq_len} sequences of {t.seq_len} tokens = micro-batch {plan['micro']} x accumulation {plan['accum']} x
world size {spec.world} ({spec.nnodes} node(s) x {spec.nproc_per_node} GPU(s)). Parallelism: {plan['parallel']} (model states
{plan['state_gb']:.1f} GiB per GPU at {BYTES_PER_PARAM} bytes/parameter; activations about {plan['seq_gb']:.2f} GiB per sequence;
{spec.gpu_memory_gb:g} GiB GPUs).

## Files
- `trial.json`: the TrialConfig windtunnel trains (`windtunnel train --config trial.json`).
- `launch.sh`: torchrun, one node or many (NNODES / NODE_RANK / MASTER_ADDR); `job.sbatch`: the same under SLURM.
- `torchtitan.toml`, `megatron_args.txt`: the same prediction for users who train elsewhere.

## What the exports cannot express
- **muP.** Both frameworks train one LR for every tensor and have no embedding multiplier ({m.scale_emb:g}), residual
  branch multiplier ({m.scale_depth:g}/sqrt({m.n_layers})) or logit divisor (m = {m.width_mult:g}). The exports carry the base LR
  {trial.optim.lr:g}; windtunnel's hidden matrices train at {trial.optim.lr / m.width_mult:.4g}. Run the muP model with windtunnel, or
  port the multipliers and per-group LRs into the framework's model and optimizer.
- **MiniCPM's exponential decay** 0.5^((s - S)/T) has no torchtitan option: the TOML uses a linear decay over the same
  steps to the same final factor. Megatron's `exponential` WSD style is 2 x 0.5^r - 1 over the decay window (it reaches
  0), not a half-life; the final LR differs.
- **Tied embeddings** are Megatron's default (no `--untie-embeddings-and-output-weights`); torchtitan's llama3 unties them.
"""


def on_demo_corpus(trial: TrialConfig) -> bool:
    """Whether the trial still trains on the embedded demo corpus, which a prediction carries by default
    (predict knows the laws, not the corpus they were measured on)."""
    return trial.data.source == "stdlib" and not trial.data.mixture


def data_note(trial: TrialConfig) -> str:
    """What the launched run trains on; a warning when it is the embedded demo corpus (on_demo_corpus)."""
    d = trial.data
    text = f"`data.source={d.source}`{f' `data.path={d.path}`' if d.path else ''}, tokenizer `{d.tokenizer}`" + (
        f" ({d.bpe_vocab_size})" if d.tokenizer == "bpe" else "")
    if on_demo_corpus(trial):
        text += (". WARNING: this is windtunnel's embedded demo corpus (a few MB). Launch on the corpus and tokenizer "
                 "the proxies were measured on (the laws hold in its loss units): add overrides, e.g. "
                 "`windtunnel launch p.json --out DIR data=hf data.path=ORG/NAME` or `data=text_dir data.path=/corpus`.")
    return text


def write_launch(prediction: dict, spec: LaunchSpec, out: Path, trial: TrialConfig | None = None,
                 force: bool = False, overrides: tuple = ()) -> dict:
    """Write trial.json, launch.sh, job.sbatch, torchtitan.toml, megatron_args.txt and README.md into out.
    overrides: Hydra overrides of the launched trial (data=..., data.path=..., train.seed=...)."""
    if trial is None:
        trial, plan = full_scale_trial(prediction, spec, overrides)
    else:
        before, trial = trial, compose_record(trial, list(overrides)) if overrides else trial
        changed = [f"model.{k}={getattr(trial.model, k)} (the checkpoint's: {getattr(before.model, k)})"
                   for k in SHAPE_KEYS if getattr(trial.model, k) != getattr(before.model, k)]
        if before.train.init_from and changed:  # found here, not inside torchrun on the cluster
            raise ConfigError(f"--decay-from {before.train.init_from}: the overrides change the model's shape "
                              f"({'; '.join(changed)}); a decay continues the checkpoint's weights: drop those overrides")
        plan = memory_plan(trial, spec)
        micro, accum = _split(trial, spec, plan)
        trial = compose_record(trial, [override("train.micro_batch_size", micro), override("train.device", spec.device),
                                       override("train.parallel", plan["parallel"])])
        plan.update(micro=micro, accum=accum)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise ConfigError(f"--out {out} is not empty; give a new folder, or --force to overwrite its launch files")
    out.mkdir(parents=True, exist_ok=True)
    files = {"trial.json": json.dumps(to_dict(trial), indent=1) + "\n", "launch.sh": render_launch_sh(trial, spec),
             "job.sbatch": render_sbatch(trial, spec), "torchtitan.toml": render_torchtitan_toml(trial, spec, plan["micro"]),
             "megatron_args.txt": " \\\n".join(megatron_args(trial, plan["micro"])) + "\n",
             "README.md": render_readme(prediction, trial, spec, plan)}
    for name, text in files.items():
        write_file(out / name, text)
    for name in ("launch.sh", "job.sbatch"):
        (out / name).chmod(0o755)
    return {"trial": trial, "plan": plan, "files": sorted(files), "command": f"bash {shlex.quote(str(out / 'launch.sh'))}"}
