"""The run plan: every "auto" of a training run decided once, in one place.

``make_plan(cfg, max_len)`` turns the config (explicit values win), the device, the launcher's
process count ($WORLD_SIZE / $LOCAL_WORLD_SIZE) and the longest measured training sample into a
frozen :class:`RunPlan`. Nothing else in the training wing resolves an auto field: the recipe,
the TrainingArguments, the layer setup and the collator all read the plan. It is printed in one
line at the start of a run and stored in ``training_summary.json``.

Why the CUDA defaults are what they are (the measurements are in bench/RESULTS.md and
docs/performance.md):
- one CUDA process: compiled decoder layers replayed as CUDA graphs (``reduce-overhead``) free the
  step from the CPU; the batch profile is smaller under graphs because the graphs' private memory
  pool holds the activations of every recorded shape.
- several processes (DDP): compiled layers without CUDA graphs (not measured there), the larger
  batch profile, and one to a few decoding workers per process (the host's cores are shared).
- compiling pays for itself only on a run long enough: with compile on auto, the plan compares the
  time compiled steps save over the planned sample-passes (``COMPILE_GAIN_PER_SAMPLE_S``) with the
  compile cost, measured by an earlier run of the same model and recipe (kept in the compile cache
  folder, vlft.train.fast.cache) or else estimated (``COMPILE_COST_S``); a short run stays eager.
- compiled layers recompile for every new sequence length, so lengths are padded to
  ``COMPILED_PAD_MULTIPLE`` whenever layers are compiled, and an epoch's short last batch gets
  label-less filler rows up to the planned batch (``pad_rows_to``; vlft.train.collator.SftCollator).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from vlft.adapters.methods import AdapterMethod
    from vlft.models.loading import Precision
    from vlft.train.config import TrainConfig

log = logging.getLogger(__name__)

PROFILE_TOKENS = 128  # sample length of the measured CUDA profile: a COCO caption + its image tokens, padded
COMPILED_PAD_MULTIPLE = 32  # lengths are padded to this with compiled layers (each new length recompiles)
GRAPHS_BATCH = 24  # CUDA auto micro-batch under CUDA graphs (samples of up to PROFILE_TOKENS tokens)
COMPILED_BATCH = 32  # CUDA auto micro-batch without graphs
CPU_BATCH, CPU_ACCUMULATION = 1, 8  # the seed's 1 x 8 on the CPU
MAX_WORKERS = 4  # decoding processes per CUDA training process
# Whether compiling pays (docs/performance.md, "Time to a trained adapter", has the measurements):
# compile + CUDA-graph capture of the decoder layers on a fresh cache, one batch shape, the 4B model
COMPILE_COST_S = 40.0
# seconds a compiled step saves per sample of up to PROFILE_TOKENS tokens over the eager step with
# checkpointing (4-bit 4B model: eager about twice the compiled per-sample time)
COMPILE_GAIN_PER_SAMPLE_S = 0.015


@dataclass(frozen=True)
class LaunchEnv:
    """What the launcher (torchrun / accelerate) tells this process."""
    world_size: int = 1        # training processes in all
    local_world_size: int = 1  # training processes on this host
    local_rank: int | None = None
    cpu_count: int = 1

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> "LaunchEnv":
        env = os.environ if environ is None else environ
        world = max(int(env.get("WORLD_SIZE", "1")), 1)
        local = max(int(env.get("LOCAL_WORLD_SIZE", world)), 1)
        rank = int(env["LOCAL_RANK"]) if "LOCAL_RANK" in env else None
        return cls(world_size=world, local_world_size=local, local_rank=rank, cpu_count=os.cpu_count() or 1)


@dataclass(frozen=True)
class RunPlan:
    """The resolved settings of one training run (nothing in it is "auto")."""
    device: str                    # "cuda" | "cpu"
    world_size: int                # training processes (DDP ranks)
    precision: "Precision"         # device, compute dtype, base quantization (4bit | 8bit | none)
    batch_size: int                # samples per device per micro-step
    accumulation: int              # micro-steps per optimizer step
    learning_rate: float           # peak learning rate
    workers: int                   # data-loading processes per training process
    compile: bool                  # decoder layers run through torch.compile
    compile_mode: str              # "reduce-overhead" (CUDA graphs when compiled) | "default"
    cuda_graphs: bool              # compiled layers replayed as CUDA graphs
    pad_to_multiple_of: int        # batch lengths padded up to a multiple of this (0: the longest sample)
    pad_rows_to: int               # short training batches get filler rows up to this many (0: off)
    checkpoint_every: int          # eager layers: gradient checkpointing on every n-th decoder layer (0: off)
    recompute_activations: bool    # compiled layers: the partitioner recomputes activations in backward
    ddp_find_unused_parameters: bool  # some trainable parameters may get no gradient in a step (DDP)
    max_len: int | None            # longest measured sample in tokens (None: unknown)
    resume_from: str | None        # checkpoint folder to resume from (None: step 0)
    compile_off_reason: str = ""   # why compile stayed off on CUDA when left on auto
    compile_cache_dir: str = ""    # torch.compile's on-disk caches + measured compile costs (vlft.train.fast.cache)
    compile_estimate: str = ""     # the pay-off estimate behind an auto compile decision ("" when none was made)

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.accumulation * self.world_size

    def line(self) -> str:
        """The plan in one line, printed at the start of a run."""
        p = self.precision
        dtype = str(p.dtype).replace("torch.", "")
        if self.compile:
            layers = "compiled layers" + (" as CUDA graphs" if self.cuda_graphs else "") + \
                (", activations recomputed" if self.recompute_activations else "")
        else:
            layers = (f"eager layers, checkpointing every {self.checkpoint_every}" if self.checkpoint_every
                      else "eager layers, no checkpointing")
        pad = f", lengths padded to x{self.pad_to_multiple_of}" if self.pad_to_multiple_of else ""
        pad += f", short batches padded to {self.pad_rows_to} rows" if self.pad_rows_to else ""
        why = self.compile_off_reason if not self.compile else self.compile_estimate
        return (f"plan: {self.device} x{self.world_size}, {p.quant} base, {dtype} compute, batch {self.batch_size} x "
                f"{self.accumulation} accumulation (effective {self.effective_batch}), learning rate "
                f"{self.learning_rate:g}, {self.workers} data workers, {layers}{pad}"
                + (f" ({why})" if why else "")
                + (f", resume from {self.resume_from}" if self.resume_from else ""))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        p = self.precision
        d["precision"] = {"device": p.device, "quant": p.quant, "dtype": str(p.dtype).replace("torch.", "")}
        d["effective_batch"] = self.effective_batch
        return d


def auto_micro_batch(profile: int, max_len: int | None) -> int:
    """Micro-batch for samples of up to ``max_len`` tokens: the profile's batch while samples fit
    its PROFILE_TOKENS, else fewer samples with the same tokens per micro-batch (activation memory
    grows with tokens). Multiples of 4 above 8, so few batch shapes get compiled."""
    if not max_len or max_len <= PROFILE_TOKENS:
        return profile
    padded = -(-max_len // COMPILED_PAD_MULTIPLE) * COMPILED_PAD_MULTIPLE  # what compiled layers see
    bs = profile * PROFILE_TOKENS // padded
    return max(1, bs - bs % 4 if bs >= 8 else bs)


def auto_learning_rate(effective_batch_per_device: int) -> float:
    """1e-4 * sqrt(batch / 8): 1e-4 at the seed's 1 x 8; 3 significant digits."""
    return float(f"{1e-4 * math.sqrt(effective_batch_per_device / 8):.3g}")


def planned_sample_passes(cfg: "TrainConfig", n_train: int | None, batch: int, accumulation: int,
                          world: int) -> int | None:
    """Samples each process will step through (None: unknown), as the Trainer counts steps."""
    if cfg.max_steps > 0:
        steps = cfg.max_steps
    elif n_train is None:
        return None
    else:
        batches = -(-n_train // (batch * world))  # per epoch and process, the short last one included
        steps = math.ceil(max(-(-batches // accumulation), 1) * cfg.num_train_epochs)
    return steps * batch * accumulation


def compile_cost_key(cfg: "TrainConfig", quant: str, mode: str, batch: int) -> str:
    """What a measured compile cost depends on: the model, the method, the quantization, the mode
    and the batch shape (the caches are keyed by the compiled graph, this hint likewise)."""
    return f"{Path(cfg.model_name_or_path).expanduser().resolve()}|{cfg.adapter}|{quant}|{mode}|{batch}"


def compile_pays_off(passes: int, max_len: int | None, cost_s: float) -> tuple[bool, float]:
    """(compiling saves more than it costs, seconds saved) for ``passes`` sample-passes of up to
    ``max_len`` tokens (a step's time grows with the tokens beyond PROFILE_TOKENS)."""
    tokens = -(-max(max_len or PROFILE_TOKENS, PROFILE_TOKENS) // COMPILED_PAD_MULTIPLE) * COMPILED_PAD_MULTIPLE
    gain = passes * COMPILE_GAIN_PER_SAMPLE_S * tokens / PROFILE_TOKENS
    return gain > cost_s, gain


def _compile_check(device: str) -> tuple[bool, str]:
    from vlft.train.fast.compile import compile_available
    return compile_available(device)


def make_plan(cfg: "TrainConfig", max_len: int | None = None, *, device: str | None = None,
              env: LaunchEnv | None = None, compile_check: tuple[bool, str] | None = None,
              method: "AdapterMethod | None" = None, n_train: int | None = None,
              compile_cost: float | None = None) -> RunPlan:
    """The run plan for ``cfg`` on ``device`` (None: CUDA when available) for ``n_train`` training
    samples (None: unknown, compile is then not weighed against the run's length) of up to ``max_len``
    tokens (None: taken as PROFILE_TOKENS). ``env`` defaults to the launcher's environment,
    ``compile_check`` to whether torch.compile's GPU backend can run on the device, ``compile_cost``
    to the cost an earlier run measured (in the compile cache folder) or else COMPILE_COST_S (all
    injectable for tests), ``method`` to ``cfg.adapter``'s. Explicit config values always win."""
    from vlft.train.fast.cache import default_compile_cache_dir, read_compile_cost
    from vlft.adapters.methods import get_method
    from vlft.models.loading import resolve_precision
    from vlft.train.checkpoint import resolve_resume

    env = env or LaunchEnv.from_environ()
    precision = resolve_precision(cfg.quant, cfg.bf16, cfg.fp16, device=device)
    cuda = precision.device == "cuda"
    multi = env.world_size > 1

    ok, why = compile_check if compile_check is not None else _compile_check(precision.device)
    compile_on = ok if cfg.compile is None else cfg.compile
    off_reason = why if (cfg.compile is None and not ok and cuda) else ""
    if off_reason:
        log.warning("compiled layers off: %s", off_reason)
    # CUDA graphs: one CUDA process only (unmeasured under DDP, and every rank would hold its own pools)
    mode = cfg.compile_mode or ("reduce-overhead" if cuda and not multi else "default")
    graphs = compile_on and mode == "reduce-overhead"

    # the batch profile follows the mode (graphs hold a larger share of memory), as measured
    profile = (GRAPHS_BATCH if mode == "reduce-overhead" else COMPILED_BATCH) if cuda else CPU_BATCH
    bs = cfg.per_device_train_batch_size or (auto_micro_batch(profile, max_len) if cuda else profile)
    ga = cfg.gradient_accumulation_steps
    if ga is None:  # an auto micro-batch shrunk for long samples keeps the profile's effective batch
        ga = (-(-profile // bs) if cfg.per_device_train_batch_size is None else 1) if cuda else CPU_ACCUMULATION
    lr = cfg.learning_rate or auto_learning_rate(bs * ga)
    workers = cfg.dataloader_num_workers
    if workers is None:  # on the CPU the cores do the training itself
        workers = min(MAX_WORKERS, env.cpu_count // (2 * env.local_world_size)) if cuda else 0

    cache_dir = str(Path(cfg.compile_cache_dir).expanduser() if cfg.compile_cache_dir else default_compile_cache_dir())
    estimate = ""
    passes = planned_sample_passes(cfg, n_train, bs, ga, env.world_size)
    if cfg.compile is None and compile_on and cuda and passes is not None:
        measured = read_compile_cost(cache_dir, compile_cost_key(cfg, precision.quant, mode, bs))
        cost = compile_cost if compile_cost is not None else measured if measured is not None else COMPILE_COST_S
        source = "measured by an earlier run" if compile_cost is None and measured is not None else "estimated"
        pays, gain = compile_pays_off(passes, max_len, cost)
        estimate = f"{passes} sample-passes: compiling saves ~{gain:.0f} s, costs ~{cost:.0f} s ({source})"
        if not pays:  # a short run: the eager path reaches the adapter sooner
            compile_on, graphs, off_reason, estimate = False, False, "eager: a short run, " + estimate, ""
            log.info("compiled layers off: %s", off_reason)

    every = cfg.checkpoint_every if cfg.gradient_checkpointing else 0
    return RunPlan(
        device=precision.device, world_size=env.world_size, precision=precision,
        batch_size=bs, accumulation=ga, learning_rate=lr, workers=workers,
        compile=bool(compile_on), compile_mode=mode, cuda_graphs=bool(graphs),
        pad_to_multiple_of=cfg.pad_to_multiple_of or (COMPILED_PAD_MULTIPLE if compile_on else 0),
        pad_rows_to=bs if compile_on else 0,  # a new batch shape mid-run would compile (and capture) again
        checkpoint_every=0 if compile_on else every,
        recompute_activations=bool(compile_on and cfg.gradient_checkpointing),
        ddp_find_unused_parameters=(method or get_method(cfg.adapter)).ddp_find_unused_parameters,
        max_len=max_len, resume_from=resolve_resume(cfg.resume_from_checkpoint, cfg.output_dir),
        compile_off_reason=off_reason, compile_cache_dir=cache_dir, compile_estimate=estimate)
