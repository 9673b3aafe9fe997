"""Typed training config shared by ``lora.py`` and ``MoeLORA.py``.

Flag names follow the Qwen-VL recipes users already know (``--model_name_or_path``,
``--data_path``, ``--lora_target_modules all`` ...) plus the seed's ``--model`` and
``--train_json`` aliases. Every field can also live in a ``--config`` YAML recipe.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, Optional

from vlft.config import BaseConfig, field, require
from vlft.models.loading import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS

log = logging.getLogger(__name__)

AdapterName = Literal["lora", "dora", "ia3", "moelora"]
DEFAULT_TARGETS = "q_proj,k_proj,v_proj,o_proj"
AUTO_FIELDS = ("per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "compile_mode",
               "dataloader_num_workers")


@dataclass
class MoeLoraOptions(BaseConfig):
    """MoE-LoRA's options (the rank, alpha, dropout and targets are the shared lora_* fields)."""

    num_experts: int = field(4, "MoE-LoRA: experts per targeted Linear")
    top_k: int = field(2, "MoE-LoRA: experts used per token")
    router_aux_loss_coef: float = field(0.01, "MoE-LoRA: weight of the Switch load-balancing loss")

    def validate(self) -> None:
        super().validate()
        require(self.num_experts > 0, "num_experts", f"must be positive, got {self.num_experts}")
        require(self.top_k > 0, "top_k", f"must be positive, got {self.top_k}")
        require(self.top_k <= self.num_experts, "top_k",
                f"must be <= num_experts ({self.num_experts}), got {self.top_k}")
        require(self.router_aux_loss_coef >= 0, "router_aux_loss_coef", "must be >= 0")


@dataclass
class TrainConfig(BaseConfig):
    """Fine-tune a Qwen-VL model with LoRA / QLoRA / DoRA / IA3 / MoE-LoRA."""

    # -- model and data -----------------------------------------------------------------
    model_name_or_path: str = field("./qwen3-vl-4b-instruct", "base model folder", aliases=("model",))
    data_path: str = field("./coco_2014_caption/train.json",
                           "training data (JSON/JSONL: messages, conversations or seed format)",
                           aliases=("train_json",))
    image_folder: Optional[str] = field(None, "folder that relative image paths resolve against "
                                              "(default: the data file's folder)")
    eval_data_path: Optional[str] = field(None, "held-out data: eval loss at every save, and the "
                                                "sample-prediction table uses it")
    output_dir: str = field("./output/Qwen3-VL-4Blora", "where checkpoints and the final adapter go")
    model_max_length: int = field(2048, "samples longer than this (image tokens included) are skipped")
    max_pixels: int = field(DEFAULT_MAX_PIXELS, "image resolution upper bound (pixels), same in eval/inference")
    min_pixels: int = field(DEFAULT_MIN_PIXELS, "image resolution lower bound (pixels)")
    strict_data: bool = field(False, "stop at the first bad data record instead of skipping it")

    # -- adapter --------------------------------------------------------------------------
    adapter: AdapterName = field("lora", "adapter type")
    lora_target_modules: str = field(DEFAULT_TARGETS,
                                     "'all' (every Linear of the language model) | comma list of module "
                                     "names (suffix match, e.g. q_proj,attn.qkv) | regex on full names")
    lora_r: int = field(8, "LoRA rank (per expert for MoE-LoRA)")
    lora_alpha: int = field(16, "LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = field(0.05, "dropout on the adapter input")
    moelora: Optional[MoeLoraOptions] = field(
        None, "MoE-LoRA's own options (adapter moelora only; filled with the defaults then). YAML: a "
              "'moelora:' mapping or the flat keys num_experts / top_k / router_aux_loss_coef", cli=False)

    # -- optimisation -----------------------------------------------------------------------
    per_device_train_batch_size: Optional[int] = field(
        None, "samples per device per step; auto (None): on CUDA the measured 8 GB profile's batch "
              "(smaller under CUDA graphs), scaled down for samples longer than the profile's so the "
              "tokens per micro-batch stay the same; 1 on CPU (vlft/train/plan.py, docs/performance.md)")
    gradient_accumulation_steps: Optional[int] = field(
        None, "micro-batches per optimizer step; auto (None): on CUDA what keeps the effective batch of "
              "the profile when long samples shrink the micro-batch (1 for COCO captions), 8 on CPU")
    num_train_epochs: float = field(3.0, "epochs (ignored when max_steps > 0)")
    max_steps: int = field(-1, "total optimizer steps; -1 = from num_train_epochs")
    learning_rate: Optional[float] = field(
        None, "peak learning rate; auto (None): 1e-4 * sqrt(effective batch / 8), i.e. 1e-4 at the "
              "seed's 1 x 8 and 2e-4 at 32 x 1")
    lr_scheduler_type: str = field("cosine", "transformers scheduler name (linear, cosine, constant, ...)")
    warmup_ratio: float = field(0.03, "fraction of steps spent warming up")
    weight_decay: float = field(0.0, "AdamW weight decay")
    max_grad_norm: float = field(1.0, "gradient clipping")
    seed: int = field(42, "seed for weights init, dropout and data order")

    # -- precision and memory ----------------------------------------------------------------
    bf16: Optional[bool] = field(None, "bf16 compute (default: on CUDA when supported)")
    fp16: Optional[bool] = field(None, "fp16 compute (default: on CUDA without bf16)")
    load_in_4bit: Optional[bool] = field(None, "4-bit NF4 double-quant base (default: on CUDA; "
                                               "works on CPU through bitsandbytes)")
    load_in_8bit: bool = field(False, "8-bit base instead of 4-bit")
    gradient_checkpointing: bool = field(True, "recompute activations in backward (saves memory): every "
                                               "checkpoint_every-th decoder layer, non-reentrant, never "
                                               "the frozen vision tower")
    checkpoint_every: int = field(1, "with gradient_checkpointing: checkpoint every n-th decoder layer")
    compile: Optional[bool] = field(
        None, "torch.compile each decoder layer; with gradient_checkpointing the compiler recomputes "
              "activations instead (same memory). Default (None): on CUDA when triton is installed "
              "(the fastest measured 4-bit path, docs/performance.md); the first steps pay about a "
              "minute of compilation")
    compile_mode: Optional[Literal["default", "reduce-overhead"]] = field(
        None, "with compiled layers: reduce-overhead also replays them as CUDA graphs, which frees most of "
              "the step from the CPU (same losses; docs/performance.md). Auto (None): reduce-overhead on "
              "one CUDA process, default under multi-GPU (not measured there). Under graphs the auto "
              "batch is smaller; every new batch shape compiles and records once (inductor's on-disk "
              "cache shortens later runs)")
    compile_cache_dir: Optional[str] = field(
        None, "folder of torch.compile's on-disk caches (inductor graphs, autograd graphs, triton kernels) and "
              "of the measured compile cost, reused by later runs; delete it to clear them. Default: "
              "$VLFT_COMPILE_CACHE, else ~/.cache/vlft/compile")
    pad_to_multiple_of: int = field(0, "pad each batch's sequence length up to a multiple of this (0 = auto: "
                                       "32 with compiled layers, which recompile for every new length, "
                                       "else to the longest sample)")
    loss_impl: Literal["fast", "hf"] = field(
        "fast", "training loss: fast = logits and cross-entropy only on labelled tokens, chunked "
                "(vlft.train.fast.lm_loss, same value); hf = model(**batch).loss (full-vocabulary logits)")
    loss_chunk_size: int = field(256, "fast loss: labelled tokens projected onto the vocabulary at a time "
                                      "(0 = all at once)")
    attn_implementation: Optional[str] = field(None, "sdpa | eager | flash_attention_2 (default: sdpa)")
    dataloader_num_workers: Optional[int] = field(
        None, "background processes decoding images and building batches; auto (None): on CUDA up to 4 "
              "(half the CPU cores per GPU process), which keeps the GPU fed; 0 on the CPU")

    # -- logging and checkpoints -------------------------------------------------------------
    logging_steps: int = field(10, "log every N optimizer steps")
    save_strategy: Literal["steps", "epoch", "no"] = field("steps", "when to write checkpoints")
    save_steps: int = field(100, "checkpoint every N steps (save_strategy=steps)")
    save_total_limit: Optional[int] = field(2, "keep at most N checkpoints (oldest by step removed)")
    resume_from_checkpoint: Optional[str] = field(None, "'auto' (latest checkpoint-N in output_dir "
                                                        "by step) or a checkpoint folder")
    report_to: Literal["swanlab", "none"] = field("swanlab", "experiment tracker")
    swanlab_project: str = field("Qwen3-VL-finetune", "SwanLab project name")
    swanlab_mode: Optional[Literal["online", "offline", "local", "disabled"]] = field(
        None, "SwanLab mode (default: $SWANLAB_MODE, else online when logged in, offline otherwise)")
    run_name: Optional[str] = field(None, "experiment name (default: output folder name)")
    num_sample_predictions: int = field(4, "samples generated at the end for the prediction table")
    max_new_tokens: int = field(64, "generation length for the prediction table")
    verbose: bool = field(False, "debug logging")

    @classmethod
    def from_dict(cls, data, source: str = "config"):
        # "auto" (CLI / YAML) is the same as leaving the field unset: vlft.train.plan decides it
        data = {k: (None if k.replace("-", "_") in AUTO_FIELDS and isinstance(v, str) and v.lower() == "auto"
                    else v) for k, v in data.items()}
        return super().from_dict(data, source=source)

    def validate(self) -> None:
        super().validate()
        for name in ("model_max_length", "max_pixels", "min_pixels", "lora_r", "lora_alpha",
                     "per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps",
                     "save_steps", "checkpoint_every"):
            v = getattr(self, name)
            require(v is None or v > 0, name, f"must be positive, got {v}")
        require(self.loss_chunk_size >= 0, "loss_chunk_size", "must be >= 0")
        require(self.dataloader_num_workers is None or self.dataloader_num_workers >= 0, "dataloader_num_workers",
                "must be >= 0")
        require(self.pad_to_multiple_of >= 0, "pad_to_multiple_of", "must be >= 0")
        require(self.min_pixels <= self.max_pixels, "min_pixels", "must not exceed max_pixels")
        require(0.0 <= self.lora_dropout < 1.0, "lora_dropout", "must be in [0, 1)")
        require(0.0 <= self.warmup_ratio < 1.0, "warmup_ratio", "must be in [0, 1)")
        require(self.learning_rate is None or self.learning_rate > 0, "learning_rate", "must be positive")
        require(self.max_steps > 0 or self.num_train_epochs > 0, "num_train_epochs",
                "must be positive when max_steps is not set")
        require(not (self.bf16 and self.fp16), "fp16", "choose at most one of --bf16 / --fp16")
        require(not (self.load_in_4bit and self.load_in_8bit), "load_in_8bit",
                "choose at most one of --load_in_4bit / --load_in_8bit")
        self._method_options()
        require(self.save_total_limit is None or self.save_total_limit > 0, "save_total_limit",
                "must be positive (or null for no limit)")
        require(bool(self.lora_target_modules.strip()), "lora_target_modules", "must not be empty")
        require(self.num_sample_predictions >= 0, "num_sample_predictions", "must be >= 0")

    def _method_options(self) -> None:
        # each method carries only its own section: MoE-LoRA's options exist for adapter moelora only
        if self.adapter == "moelora" and self.moelora is None:
            self.moelora = MoeLoraOptions()
        elif self.adapter != "moelora" and self.moelora is not None:
            log.warning("adapter %s: the MoE-LoRA options (num_experts, top_k, router_aux_loss_coef) are "
                        "ignored", self.adapter)
            self.moelora = None

    @property
    def method_options(self) -> Optional[BaseConfig]:
        """The options section of ``adapter`` (None for methods without options of their own)."""
        return self.moelora if self.adapter == "moelora" else None

    @property
    def quant(self) -> Optional[str]:
        """'4bit' | '8bit' | 'none' when chosen explicitly, None = device default."""
        if self.load_in_8bit:
            return "8bit"
        if self.load_in_4bit is None:
            return None
        return "4bit" if self.load_in_4bit else "none"


@dataclass
class MoeTrainConfig(TrainConfig):
    """Fine-tune a Qwen-VL model with Mixture-of-Experts LoRA (top-k routed LoRA experts)."""

    adapter: AdapterName = field("moelora", "adapter type")
    output_dir: str = field("./output/Qwen3-VL-4Bmoelora", "where checkpoints and the final adapter go")
    # the section's fields are flags of MoeLORA.py: --num_experts, --top_k, --router_aux_loss_coef
    moelora: Optional[MoeLoraOptions] = field(default_factory=MoeLoraOptions, doc="MoE-LoRA's own options")
