"""Plain dataclasses describing one trial, and their validation.

Stdlib only. Hydra-legal types only (str/int/float/bool, no Literal, not frozen), so the same classes
serve as Hydra structured-config schemas (windtunnel/compose.py builds every trial from them). Derived
values are properties.
"""
import dataclasses
import importlib
import math
import os
import re
import sys
import types
from dataclasses import dataclass, field
from typing import Any, Callable, List

PARAMETRIZATIONS = ("mup", "sp")
SCHEDULE_KINDS = ("wsd", "cosine", "constant")
DECAY_KINDS = ("exp", "linear", "cosine", "1-sqrt")
WD_RULES = ("coupled", "mup")
SOURCES = ("stdlib", "stdlib+site", "installed_code", "text_dir", "hf")
TOKENIZERS = ("bytes", "bpe")
DTYPES = ("auto", "fp32", "bf16")
EVAL_SETS = ("sample", "head")  # train.eval_set (data/batches.py eval_windows)


class ConfigError(ValueError):
    """A config value that cannot work; the message names the field and the fix."""


def runtime(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING) -> Any:
    """A field that says how a run runs, not what it computes (device, threads, logging, checkpoints kept): a run
    directory may be continued with another value, and it is no part of a run dir's name. Every other field
    is the run's identity (IDENTITY_EXEMPT below is derived from these marks: the one list)."""
    return field(default=default, default_factory=factory, metadata={"runtime": True})


@dataclass
class ModelConfig:
    name: str = "tiny128"  # ladder name, for tables and run names
    d_model: int = 128  # residual stream width
    n_layers: int = 4  # number of transformer blocks
    n_heads: int = 4  # query heads; head_dim = d_model / n_heads
    n_kv_heads: int = 0  # key/value heads for grouped-query attention; 0 means as many as query heads
    fixed_head_dim: int = 0  # when > 0, heads = d_model / fixed_head_dim (width sweeps keep head_dim fixed)
    d_ff: int = 0  # SwiGLU hidden width; 0 means round(ffn_mult * d_model)
    ffn_mult: float = 2.5  # MiniCPM's d_ff / d_model
    vocab_size: int = 0  # 0 means "take it from the tokenizer"
    max_seq_len: int = 4096  # length of the precomputed RoPE table
    rope_theta: float = 10000.0  # RoPE base frequency
    norm_eps: float = 1e-5  # RMSNorm epsilon
    parametrization: str = "mup"  # "mup" (MiniCPM's muP rules) or "sp" (same constants, no width factors)
    dim_model_base: int = 256  # muP base width; width multiplier m = d_model / dim_model_base
    scale_emb: float = 12.0  # multiplier on the embedding output (MiniCPM)
    scale_depth: float = 1.4  # residual branch multiplier is scale_depth / sqrt(n_layers) (MiniCPM)
    init_std: float = 0.1  # embedding init std; hidden matrices get init_std / sqrt(m) under muP

    @property
    def heads(self) -> int:
        return self.d_model // self.fixed_head_dim if self.fixed_head_dim > 0 else self.n_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.heads

    @property
    def ffn_dim(self) -> int:
        return self.d_ff or int(round(self.ffn_mult * self.d_model))

    @property
    def width_mult(self) -> float:
        """m = d_model / dim_model_base under muP; SP has no width factor, so 1."""
        return self.d_model / self.dim_model_base if self.parametrization == "mup" else 1.0


@dataclass
class OptimConfig:
    lr: float = 0.01  # base (peak) Adam LR; muP hidden matrices get lr / m
    weight_decay: float = 0.1  # AdamW decay on matrices (embedding and hidden), none on norm gains
    wd_rule: str = "coupled"  # "coupled": same weight_decay everywhere (torch AdamW, as ForgeTrain);
    #                           "mup": hidden weight_decay x m so lr*wd is width-independent (mup.MuAdamW)
    beta1: float = 0.9  # Adam beta1
    beta2: float = 0.95  # Adam beta2
    eps: float = 1e-8  # Adam epsilon
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping


@dataclass
class ScheduleConfig:
    kind: str = "wsd"  # "wsd" (warmup-stable-decay), "cosine" (to a floor, the paper's baseline), "constant"
    warmup_frac: float = 0.01  # linear warmup length as a fraction of the run's tokens
    warmup_tokens: int = 0  # warmup length in tokens; wins over warmup_frac when > 0
    # warmup length in optimizer steps; wins over both when > 0. A batch-size sweep wants it: a warmup in tokens
    # gives its largest batches only a few steps (1% of 32M tokens at 128k tokens/step is 2.6 steps)
    warmup_steps: int = 0
    decay_kind: str = "exp"  # WSD decay shape: "exp" (half-life), "linear", "cosine", "1-sqrt"
    decay_frac: float = 0.1  # WSD decay length as a fraction of the run's tokens (MiniCPM: ~10% is enough)
    decay_tokens: int = 0  # WSD decay length in tokens; wins over decay_frac when > 0
    half_life_frac: float = 0.02  # exp decay half-life as a fraction of the run's tokens
    half_life_tokens: int = 0  # exp decay half-life in tokens (MiniCPM-2.4B: 20e9); wins when > 0
    min_factor: float = -1.0  # floor on the LR factor after warmup; -1 = kind default (cosine 0.1, else 0)


@dataclass
class DataConfig:
    source: str = "stdlib"  # "stdlib" (embedded code corpus), "stdlib+site", "installed_code" (data/installed.py),
    #   "text_dir", "hf"
    path: str = ""  # folder of text files (text_dir), or dataset name / save_to_disk folder (hf)
    hf_config: str = ""  # Hugging Face dataset config name, if any
    hf_split: str = "train"  # Hugging Face split to read
    hf_data_files: str = ""  # data_files for builder datasets such as path=parquet / json (a glob)
    text_field: str = "text"  # Hugging Face column holding the text
    tokenizer: str = "bytes"  # "bytes" (vocab 256) or "bpe" (byte-level BPE trained on the train split)
    bpe_vocab_size: int = 4096  # vocabulary size of the trained BPE
    eval_frac: float = 0.05  # fraction of documents held out for evaluation, chosen by hashing their paths
    max_bytes: int = 0  # cap on corpus bytes read (0 = all); keeps tiny CPU runs tiny
    max_epochs: float = 1.0  # a trial may see its train split at most this many times (checked before training);
    #                          1 = every token once, as MiniCPM's wind tunnel; up to ~4 repeats are worth nearly
    #                          as much as new data (Muennighoff et al. 2023)
    bpe_sample_bytes: int = 64_000_000  # the BPE is trained on a fixed sample of about this much train text
    cache_dir: str = runtime("")  # where tokenized corpora are cached; "" = $WINDTUNNEL_CACHE or ~/.cache/windtunnel
    tokenizer_file: str = ""  # a tokenizer.json to use instead of training a BPE (set for mixture sources)
    mixture: List[str] = field(default_factory=list)  # other sources mixed into training batches, each
    #   "WEIGHT:SOURCE[:PATH]" (e.g. "0.3:text_dir:/data/hq" for a decay on better data); this source gets
    #   1 - sum(weights); held-out evals stay on this source


@dataclass
class TrainConfig:
    total_tokens: int = 524_288  # training tokens of the run (steps = total_tokens / batch_size_tokens)
    tokens_per_param: float = 0.0  # when > 0, total_tokens = tokens_per_param x N, in whole batches ("20N")
    batch_size_tokens: int = 8192  # global batch in tokens per optimizer step
    seq_len: int = 128  # tokens per sequence
    micro_batch_size: int = 16  # sequences per forward pass (accumulation covers the rest of the batch);
    #                             0 = the largest divisor of the batch up to 16 sequences (for batch-size grids),
    #                             or the whole batch of up to 32 where that divisor is below 8 (31 sequences: 1)
    seed: int = 0  # seeds init and data order
    device: str = runtime("auto")  # "auto" (cuda if present), "cpu", "cuda", "cuda:1", ...
    dtype: str = "auto"  # "auto" (bf16 autocast on CUDA, fp32 on CPU), "fp32", "bf16"
    compile: bool = runtime(False)  # torch.compile the model (CUDA)
    compile_mode: str = runtime("auto")  # torch.compile mode; "auto" = "reduce-overhead" (CUDA graphs: launch-bound tiny
    #                             models run 1.5-2x faster) in a single CUDA process with one micro-batch per
    #                             step, else "default"
    parallel: str = runtime("auto")  # under torchrun: "ddp" (replicas; auto picks it), "fsdp" (FSDP2 shards), "none"
    threads: int = runtime(0)  # CPU threads for this trial; 0 = automatic: 1 for a tiny CPU trial (train/core.py
    #                            cpu_threads), else torch's default (one per core)
    log_every: int = runtime(10)  # steps between logged train-loss points (each log syncs the device once)
    eval_points: int = 30  # held-out evals, log-spaced in tokens over the run (the batch-size law needs them)
    eval_set: str = "sample"  # the held-out windows: "sample" (a fixed systematic sample over the whole val split,
    #                           every held-out package in proportion) or "head" (the val split's first tokens in
    #                           file order: what runs recorded before this field used)
    eval_tokens: int = 16384  # held-out tokens per eval along the run (the curve)
    final_eval_tokens: int = 262144  # held-out tokens at the evals runs are compared on (the end, a decay's evals);
    #                                  0 = eval_tokens. The CPU default trial: standard error 0.008 nats (2,048
    #                                  windows; 0.037 along the curve's 128), README "Held-out set"
    decay_eval_points: int = 0  # more held-out evals, evenly spaced over a WSD decay (the log-spaced ones see a
    #                             decay of the last 10% at 2-3 points); each decay branch gets its own
    checkpoint_every: int = runtime(0)  # steps between checkpoints; 0 = at every eval point
    diverge_factor: float = 3.0  # a train loss above this multiple of the first loss (or NaN) = diverged
    overfit_margin: float = 0.02  # held-out loss ending more than this fraction above its best while the train
    #                               loss kept falling = overfitting: flagged in result.json, left out of fits; a
    #                               rise above it with the train loss rising too = unstable: flagged, kept in fits
    branch_at_n: List[float] = field(default_factory=list)  # WSD decay branches from the stable run at these
    #   multiples of N tokens (MiniCPM's data/model law); each writes its own run dir, with a decay of
    #   schedule.decay_frac of its own length; the run itself then stays in the stable phase
    init_from: str = ""  # a checkpoint to start from (its weights, optimizer and step): a decay branch
    keep_checkpoint: bool = runtime(False)  # keep the checkpoint dir(s) after the run finishes (e.g. to branch a decay later);
    #                                the kept checkpoint is the last step's
    save_final: bool = runtime(False)  # write the final weights and optimizer to RUN/final when the run completes (on for
    #                           `windtunnel launch` runs)
    skip_completed: bool = runtime(True)  # a run dir whose result.json says completed/diverged is not retrained
    pack: int = runtime(1)  # sweeps: train up to this many grid points that differ only in optim.lr / train.seed as one
    #               fused model in one process (train/packed.py); each still writes its own run dir
    loggers: List[str] = runtime(factory=list)  # experiment trackers fed every metrics row, e.g.
    #               [tensorboard, wandb, mlflow] (train/trackers.py; each imported only when named)
    pack_members: List[str] = runtime(factory=list)  # set by the sweep for a packed job: each member's
    #               overrides, e.g. ["optim.lr=0.01", "optim.lr=0.02"]; empty = one trial


@dataclass
class TrialConfig:
    name: str = "trial"  # label for tables
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def total_steps(self) -> int:
        return self.train.total_tokens // self.train.batch_size_tokens

    @property
    def micro_batch(self) -> int:
        """Sequences per forward pass (train.micro_batch_size, or chosen when it is 0)."""
        return self.split(1)[0]

    def accum_per_rank(self, world: int) -> int:
        """Micro-batches per rank per optimizer step, with the global batch split over `world` processes."""
        return self.split(world)[1]

    def split(self, world: int) -> tuple[int, int]:
        """(sequences per forward pass, micro-batches per rank per step) of this trial on `world` processes."""
        t = self.train
        # the cap is a default, not a memory bound: an awkward batch of up to twice it goes in one pass (train/core.py's
        # check_memory refuses one that does not fit, naming train.micro_batch_size)
        return split_batch(t.batch_size_tokens, t.seq_len, world, t.micro_batch_size, whole_up_to=2 * AUTO_MICRO_BATCH)

    def validate(self) -> "TrialConfig":
        validate(self)
        return self


@dataclass
class TuningConfig:
    """How a sweep job talks to an Optuna study (set per job by the windtunnel_optuna sweeper)."""
    storage: str = ""  # Optuna storage: a journal file path, an SQLAlchemy URL, or env:NAME (the URL held in the
    #                    environment variable NAME: how a password stays out of every console line and file)
    study_name: str = ""  # the study this job's trial belongs to
    trial_number: int = -1  # the Optuna trial this job runs; -1 = not an Optuna job
    heartbeat_s: int = 0  # record the trial's heartbeat this often (RDB storages; set by the sweeper)
    prune: str = "none"  # "none", "divergence" (stop a trial whose loss rises above max_loss_ratio x its
    #                      initial loss, or turns NaN), "decayed" (report post-decay losses at equal tokens
    #                      to the study's pruner: never stable-phase losses, which favour small LRs)
    max_loss_ratio: float = 1.0  # divergence pruning threshold, relative to the trial's initial eval loss


@dataclass
class SweepJobConfig(TrialConfig):
    """The Hydra app's config: one trial, plus where it sits in a sweep."""
    sweep_name: str = "adhoc"  # names the sweep directory and every run's `sweep` column
    tuning: TuningConfig = field(default_factory=TuningConfig)

    def trial(self) -> TrialConfig:
        return TrialConfig(name=self.name, model=self.model, optim=self.optim, schedule=self.schedule,
                           data=self.data, train=self.train)


def _runtime_keys(cls: type, prefix: str = "") -> tuple:
    out = ()
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.type):
            out += _runtime_keys(f.type, f"{prefix}{f.name}.")
        elif f.metadata.get("runtime"):
            out += (prefix + f.name,)
    return out


# The one list of what does not make a run what it is: the fields marked runtime(...) above. A run dir is continued
# (resumed, skipped) whatever their values, and they are left out of a sweep's run dir names.
IDENTITY_EXEMPT = _runtime_keys(TrialConfig)
# Left out of run dir names as well, though they change the run: values that cannot be part of a path (paths) and
# how a job talks to its sweep (an Optuna trial retried finds its run dir again). conf/config.yaml reads this list
# (hydra.job.config.override_dirname.exclude_keys, through compose's resolver).
RUN_DIR_EXCLUDE = ("sweep", "launcher", "data.path", "train.init_from", "hydra.sweep.dir", "hydra.launcher.n_jobs",
                   *(f"tuning.{f.name}" for f in dataclasses.fields(TuningConfig)), *IDENTITY_EXEMPT)

NAME_MAX = 255  # bytes in one file name (Linux, macOS): a sweep's run dir is named by its job's overrides


def run_dir_name_of(overrides_line: str) -> str:
    """A sweep job's run dir name from its override string (Hydra's override_dirname): as it is where it fits in one
    file name; a longer one becomes a readable prefix (whole overrides, cut at a comma) plus '--' and 12 hex digits
    of its SHA-1, so that 13 overrides cannot fail with 'File name too long' and two grids' names still differ."""
    data = overrides_line.encode()
    if len(data) <= NAME_MAX:
        return overrides_line
    import hashlib
    head = data[:NAME_MAX - 64].decode(errors="ignore")
    head = head[:head.rfind(",")] if "," in head else head
    return f"{head}--{hashlib.sha1(data).hexdigest()[:12]}"


# What a record written before a field existed meant by it (its config.json lacks the key): a run dir resumes as it
# began, and tables fill the column with it. Runs before train.eval_set were measured on the val split's head,
# every eval on train.eval_tokens.
LEGACY = {"train.eval_set": "head", "train.final_eval_tokens": 0}


def eval_set_of(eval_set: str, eval_tokens: int, final_eval_tokens: int) -> str:
    """The name of the held-out set a run's compared losses were measured on (a fit never mixes two)."""
    return f"{eval_set}:{int(final_eval_tokens) or int(eval_tokens)}"


def override(key: str, value: Any) -> str:
    """`key=value` in Hydra's override grammar for a Python value: how code asks compose() for a trial (numbers and
    bools as written, strings quoted so that no character of a path or name is read as grammar, lists of them)."""
    def literal(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v) if math.isfinite(v) else ("inf" if v > 0 else "-inf") if v == v else "nan"
        if isinstance(v, (list, tuple)):
            return "[" + ",".join(literal(x) for x in v) + "]"
        if v is None:
            return "null"
        # Hydra's quoted strings: backslashes are literal except before a quote or the end (doubled there)
        text = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, str(v))
        return "'" + text.replace("'", "\\'").replace("${", "\\${") + "'"
    return f"{key}={literal(value)}"


def callable_module(name: str, function: Callable) -> None:
    """Make module `name` callable as `function`, so `from windtunnel import compose` (or predict, fit) is one name
    for the module and for its main function: `compose([...])` and `compose.compose_record(...)` both work. (A
    function bound on the package in the module's place would be replaced by the module on its first import.)"""
    module = sys.modules[name]

    class CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return function(*args, **kwargs)

        def __reduce__(self):  # pickled by name, as a plain module is (joblib and submitit pickle the sweep's job)
            return importlib.import_module, (self.__name__,)
    CallableModule.__call__.__doc__ = function.__doc__
    module.__class__ = CallableModule


def _need(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(msg)


def _one_of(value: str, allowed: tuple, where: str) -> None:
    _need(value in allowed, f"{where}={value!r} is unknown; use one of {', '.join(allowed)}")


# the model fields a checkpoint's tensors are shaped by: a run resumed or decayed from it must keep them
SHAPE_KEYS = ("d_model", "n_layers", "n_heads", "n_kv_heads", "fixed_head_dim", "d_ff", "ffn_mult", "vocab_size")
PACKABLE = ("optim.lr", "train.seed")  # what may differ between the trials of one packed job


TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"),
            "mlflow": ("mlflow", "mlflow-skinny")}  # train.loggers name -> (module, pip package)


def installed(module: str) -> bool:
    """Whether `module` can be imported here (an optional extra), without importing it."""
    import importlib.util
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is missing
        return False


_SECRET = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s'\"]+:)([^@\s'\"]+)(@)")


def redact(text: str) -> str:
    """A storage URL's password hidden: postgresql://user:secret@host/db -> postgresql://user:***@host/db.
    Every file windtunnel writes that can hold an Optuna storage URL goes through this."""
    return _SECRET.sub(r"\1***\3", text)


def storage_url(spec: str) -> str:
    """An Optuna storage spec as a storage opens it: `env:NAME` is the URL held in the environment variable NAME, read
    only here, when the storage is opened; configs, job overrides, Hydra's records and a launcher's pickles carry
    the name alone. Anything else is the URL (or journal path) itself."""
    if not spec.startswith("env:"):
        return spec
    name = spec[len("env:"):]
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or not os.environ.get(name):
        raise ConfigError(f"storage {spec!r}: the environment variable {name or '(no name)'} is not set in this process; "
                          f"export it where the sweep and its jobs run (export {name or 'WT_STORAGE'}="
                          f"'postgresql://user:password@host/db'), or give the storage's URL or journal path itself")
    return os.environ[name]


def check_storage(field_name: str, spec: str) -> None:
    """A storage spec with a password written out is refused: Hydra prints every job's overrides on the console and
    keeps them in .hydra/*.yaml and a launcher's pickles, where no redaction reaches. The URL goes into an
    environment variable and the spec names it (storage_url)."""
    if redact(spec) != spec:
        raise ConfigError(f"{field_name} holds a password ({redact(spec)}): Hydra would print it with every job and "
                          f"store it in .hydra/*.yaml and the launcher's pickles. Put the URL in an environment "
                          f"variable and name it: export WT_STORAGE='{redact(spec)}' (with the password), then "
                          f"{field_name}=env:WT_STORAGE")
    storage_url(spec)


def safe_name(text: str) -> bool:
    """A name that is safe as one path component and as a shell word: letters, digits, '.', '_', '+', '-',
    not starting with '.' or '-'."""
    return bool(text) and text[0] not in ".-" and all(c.isalnum() or c in "._+-" for c in text) and text.isascii()


# ----------------------------------------------------------------------------- the rules everything shares

AUTO_MICRO_BATCH = 16  # train.micro_batch_size=0: the largest divisor of a rank's sequences up to this many


def split_batch(batch_size_tokens: int, seq_len: int, world: int = 1, micro: int = 0,
                max_micro: int = AUTO_MICRO_BATCH, whole_up_to: int = 0) -> tuple[int, int]:
    """(micro-batch sequences, accumulation steps per rank) with micro x accum x world x seq_len =
    batch_size_tokens: the one splitter (the trainer's, and `windtunnel launch`'s for a full-scale job). micro=0
    picks the largest divisor of each rank's sequences up to max_micro; where that divisor is below max_micro / 2 and
    a rank has at most whole_up_to sequences, all of them in one pass (31, a prime, is otherwise 31 passes of one
    sequence, a fifth of a GPU's throughput; launch leaves whole_up_to at 0: its max_micro is a memory bound).
    ConfigError naming the fields otherwise."""
    if micro > 0:
        pass_tokens = seq_len * micro * world  # tokens of one forward pass on every rank
        if batch_size_tokens % pass_tokens:
            names, values = ("train.seq_len x train.micro_batch_size", f"{seq_len} x {micro}")
            if world > 1:
                names, values = f"{names} x ranks", f"{values} x {world}"
            raise ConfigError(
                f"train.batch_size_tokens={batch_size_tokens} is not divisible by {names} = {values} = {pass_tokens}; "
                f"use a multiple of {pass_tokens} (e.g. {whole_steps(batch_size_tokens, pass_tokens) * pass_tokens}) "
                f"or a smaller micro-batch")
        return micro, batch_size_tokens // pass_tokens
    if batch_size_tokens % seq_len:
        raise ConfigError(f"train.batch_size_tokens={batch_size_tokens} is not divisible by train.seq_len = "
                          f"{seq_len}: a batch is whole sequences; use a multiple of {seq_len} (e.g. "
                          f"{whole_steps(batch_size_tokens, seq_len) * seq_len})")
    seqs = batch_size_tokens // seq_len
    if seqs % world:
        lower, upper = seqs // world * world, -(-seqs // world) * world
        raise ConfigError(f"the batch of {seqs} sequences cannot be split over a world size of {world}; use "
                          f"{lower or world} or {upper} sequences ({(lower or world) * seq_len} or {upper * seq_len} "
                          f"tokens), or another number of GPUs")
    per_rank = seqs // world
    micro = max(d for d in range(1, min(per_rank, max(1, max_micro)) + 1) if per_rank % d == 0)
    if micro < max_micro // 2 and per_rank <= whole_up_to:
        return per_rank, 1
    return micro, per_rank // micro


def whole_steps(tokens: float, batch_size_tokens: int) -> int:
    """Optimizer steps that train about `tokens` in whole batches (at least one): the one tokens -> steps rounding."""
    return max(1, round(tokens / batch_size_tokens))


def phase_steps(s: ScheduleConfig, total_steps: int, batch_size_tokens: int) -> tuple[int, int]:
    """(warmup steps, WSD decay steps) of a run: the one precedence rule. A length in steps wins over one in
    tokens, which wins over a fraction of the run (schedule.plan, the validation below and the decay-branch
    check all use it)."""
    def steps(tokens: int, frac: float) -> int:
        return round(tokens / batch_size_tokens) if tokens > 0 else round(frac * total_steps)
    warmup = s.warmup_steps if s.warmup_steps > 0 else steps(s.warmup_tokens, s.warmup_frac)
    return warmup, steps(s.decay_tokens, s.decay_frac) if s.kind == "wsd" else 0


def validate(cfg: TrialConfig) -> None:
    """Raise ConfigError naming the field and the fix; called before any compute starts."""
    m, o, s, d, t = cfg.model, cfg.optim, cfg.schedule, cfg.data, cfg.train
    _need(safe_name(cfg.name), f"name={cfg.name!r} must be a plain name (letters, digits, . _ + -; no '/' or "
                               f"'..'): it names run dirs and launch scripts")
    _need(safe_name(m.name), f"model.name={m.name!r} must be a plain name (letters, digits, . _ + -)")
    _one_of(m.parametrization, PARAMETRIZATIONS, "model.parametrization")
    for f in ("d_model", "n_layers", "n_heads", "dim_model_base", "max_seq_len"):
        _need(getattr(m, f) > 0, f"model.{f}={getattr(m, f)} must be a positive integer")
    if m.fixed_head_dim > 0:
        _need(m.d_model % m.fixed_head_dim == 0,
              f"model.fixed_head_dim={m.fixed_head_dim} does not divide model.d_model={m.d_model}; "
              f"use a width that is a multiple of it")
    _need(m.d_model % m.heads == 0,
          f"model.n_heads={m.n_heads} does not divide model.d_model={m.d_model}; "
          f"pick n_heads so that d_model / n_heads is the head dim (e.g. {max(1, m.d_model // 64)} for head_dim 64)")
    _need(m.head_dim % 2 == 0, f"head_dim = model.d_model / heads = {m.head_dim} must be even for RoPE")
    _need(m.n_kv_heads >= 0 and m.heads % m.kv_heads == 0,
          f"model.n_kv_heads={m.n_kv_heads} must divide the {m.heads} query heads (0 means as many)")
    _need(m.vocab_size >= 0, f"model.vocab_size={m.vocab_size} must be >= 0 (0 = from the tokenizer)")
    for f in ("init_std", "scale_emb", "scale_depth", "ffn_mult"):
        _need(getattr(m, f) > 0, f"model.{f}={getattr(m, f)} must be > 0")
    _need(0 < m.norm_eps < 1, f"model.norm_eps={m.norm_eps} must be in (0, 1) (RMSNorm's epsilon, e.g. 1e-5)")
    _need(m.rope_theta > 1 and math.isfinite(m.rope_theta), f"model.rope_theta={m.rope_theta} must be > 1 (RoPE's base, "
                                                             f"e.g. 10000)")
    _need(m.vocab_size <= 1 << 18, f"model.vocab_size={m.vocab_size} is beyond any tokenizer here (tokens are uint16); "
                                   f"use 0 to take the tokenizer's")

    _need(o.lr > 0 and math.isfinite(o.lr), f"optim.lr={o.lr} must be a positive number")
    _need(o.weight_decay >= 0, f"optim.weight_decay={o.weight_decay} must be >= 0")
    _one_of(o.wd_rule, WD_RULES, "optim.wd_rule")
    _need(0 <= o.beta1 < 1 and 0 <= o.beta2 < 1, f"optim.beta1={o.beta1}, optim.beta2={o.beta2} must be in [0, 1)")
    _need(o.grad_clip >= 0, f"optim.grad_clip={o.grad_clip} must be >= 0 (0 disables clipping)")
    _need(0 < o.eps < 1, f"optim.eps={o.eps} must be in (0, 1) (Adam's epsilon, e.g. 1e-8)")

    _one_of(s.kind, SCHEDULE_KINDS, "schedule.kind")
    _one_of(s.decay_kind, DECAY_KINDS, "schedule.decay_kind")
    for f in ("warmup_frac", "decay_frac", "half_life_frac"):
        _need(0 <= getattr(s, f) <= 1, f"schedule.{f}={getattr(s, f)} must be a fraction in [0, 1]")
    _need(s.min_factor == -1 or 0 <= s.min_factor <= 1,
          f"schedule.min_factor={s.min_factor} must be in [0, 1], or -1 for the kind's default")
    for f in ("warmup_tokens", "decay_tokens", "half_life_tokens"):
        _need(getattr(s, f) >= 0, f"schedule.{f}={getattr(s, f)} must be >= 0 tokens")
    _need(s.warmup_steps >= 0, f"schedule.warmup_steps={s.warmup_steps} must be >= 0 steps")
    if t.batch_size_tokens > 0:
        warm, decay = (n * t.batch_size_tokens for n in phase_steps(s, cfg.total_steps, t.batch_size_tokens))
        _need(warm + decay <= t.total_tokens,
              f"schedule warmup ({warm:.0f} tokens) + decay ({decay:.0f} tokens) exceed train.total_tokens="
              f"{t.total_tokens}; shorten schedule.warmup_*/decay_* or train longer")
    _need(s.kind != "wsd" or s.decay_kind != "exp" or s.half_life_tokens > 0 or s.half_life_frac > 0,
          "schedule.half_life_frac and schedule.half_life_tokens are both 0; the exp decay needs a half-life")

    _one_of(d.source, SOURCES, "data.source")
    _one_of(d.tokenizer, TOKENIZERS, "data.tokenizer")
    _need(d.source not in ("text_dir", "hf") or bool(d.path),
          f"data.source={d.source!r} needs data.path (a folder of text files, or a dataset name)")
    _need(0 < d.eval_frac < 1, f"data.eval_frac={d.eval_frac} must be in (0, 1)")
    weights = []
    for item in d.mixture:
        parts = str(item).split(":", 2)
        try:
            weights.append(float(parts[0]))
        except ValueError:
            weights.append(-1.0)
        _need(len(parts) >= 2 and 0 < weights[-1] < 1 and parts[1] in SOURCES,
              f"data.mixture item {item!r} must look like WEIGHT:SOURCE[:PATH] with 0 < WEIGHT < 1 and SOURCE one of "
              f"{', '.join(SOURCES)} (e.g. 0.3:text_dir:/data/hq)")
    _need(sum(weights) < 1, f"data.mixture weights sum to {sum(weights):g}; they must leave a share (> 0) for data.source")
    _need(d.max_epochs > 0, f"data.max_epochs={d.max_epochs} must be > 0 (1 = each train token seen once)")
    _need(d.bpe_sample_bytes >= 0, f"data.bpe_sample_bytes={d.bpe_sample_bytes} must be >= 0 (0 = the whole train split)")
    _need(d.tokenizer != "bpe" or 257 <= d.bpe_vocab_size <= 65535,
          f"data.bpe_vocab_size={d.bpe_vocab_size} must be in [257, 65535] (tokens are stored as uint16)")

    for f in ("seq_len", "batch_size_tokens", "log_every", "eval_points", "eval_tokens"):
        _need(getattr(t, f) > 0, f"train.{f}={getattr(t, f)} must be a positive integer")
    _need(t.final_eval_tokens >= 0, f"train.final_eval_tokens={t.final_eval_tokens} must be >= 0 (0 = train.eval_tokens)")
    _one_of(t.eval_set, EVAL_SETS, "train.eval_set")
    _need(t.micro_batch_size >= 0, f"train.micro_batch_size={t.micro_batch_size} must be >= 0 (0 = automatic)")
    _need(t.decay_eval_points >= 0, f"train.decay_eval_points={t.decay_eval_points} must be >= 0 (0 = none)")
    _need(t.seq_len <= m.max_seq_len, f"train.seq_len={t.seq_len} exceeds model.max_seq_len={m.max_seq_len}")
    cfg.split(1)
    _need(0 <= t.seed < 2 ** 63, f"train.seed={t.seed} must be a non-negative integer")
    _need(t.total_tokens < 10 ** 15, f"train.total_tokens={t.total_tokens} is beyond any run (< 1e15 tokens)")
    steps = t.total_tokens // t.batch_size_tokens
    _need(t.eval_points <= max(steps, 30), f"train.eval_points={t.eval_points} exceeds the run's {steps} steps; at "
                                           f"most one held-out eval per step")
    _need(t.total_tokens >= t.batch_size_tokens,
          f"train.total_tokens={t.total_tokens} is less than one batch (train.batch_size_tokens="
          f"{t.batch_size_tokens}); train longer")
    _one_of(t.dtype, DTYPES, "train.dtype")
    _one_of(t.parallel, ("auto", "ddp", "fsdp", "none"), "train.parallel")
    _one_of(t.compile_mode, ("auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
            "train.compile_mode")
    _need(t.diverge_factor > 1, f"train.diverge_factor={t.diverge_factor} must be > 1")
    _need(t.overfit_margin > 0, f"train.overfit_margin={t.overfit_margin} must be > 0 (a fraction of the best loss)")
    _need(t.checkpoint_every >= 0, f"train.checkpoint_every={t.checkpoint_every} must be >= 0")
    _need(t.pack >= 1, f"train.pack={t.pack} must be >= 1 (1 = one trial per process)")
    for name in t.loggers:
        _one_of(name, tuple(TRACKERS), "train.loggers item")
        _need(installed(TRACKERS[name][0]), f"train.loggers=[{name}] needs the {TRACKERS[name][1]} package: "
                                              f"pip install {TRACKERS[name][1]}")
    for item in t.pack_members:
        _need(item.partition("=")[0] in PACKABLE, f"train.pack_members: {item!r} changes more than the LR or seed; "
                                                   f"only {', '.join(PACKABLE)} may differ within a pack")
    _need(t.tokens_per_param >= 0, f"train.tokens_per_param={t.tokens_per_param} must be >= 0")
    if t.branch_at_n:
        _need(s.kind == "wsd" and 0 < s.decay_frac < 1 and s.decay_tokens == 0,
              "train.branch_at_n needs schedule.kind=wsd with a decay given as schedule.decay_frac in (0, 1) "
              "(each branch decays over that fraction of its own length)")
        _need(all(b > 0 for b in t.branch_at_n), f"train.branch_at_n={list(t.branch_at_n)} must be positive multiples of N")


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)
