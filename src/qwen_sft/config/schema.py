"""The argument tree: every key any command takes, in typed sections, written once.

Users write flat keys (`learning_rate`, `max_length`, `lora.r`) in a YAML file or as `--key value`; inside,
they live in sections (`cfg.model`, `cfg.data`, `cfg.lora`, `cfg.train`, `cfg.sampling`, `cfg.serve`, and
`cfg.command` for a command's own options). Each command names the sections (or the keys of a section) it
takes in a `Command`; parsing, validation and `--help` (`parse.py`) are generated from these fields, so a
key's type, default, accepted values and help text are written here and nowhere else.
"""

import dataclasses
from dataclasses import dataclass, field

from qwen_sft.data.mix import DataSource
from qwen_sft.data.records import FORMATS
from qwen_sft.template.encode import Loss
from qwen_sft.template.registry import TEMPLATE_NAMES

LORA_TARGETS_ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LEARNING_RATE = {"lora": 2e-4, "dora": 2e-4, "full": 1e-5}  # when none is given


def arg(default=None, help: str = "", *, choices: tuple | None = None, low: float | None = None,
        high: float | None = None, open_low: bool = False, factory=None):
    """A key: its default, one line of help, and the values it accepts (`choices`, or [low, high];
    `open_low` excludes `low` itself)."""
    meta = {"help": help, "choices": choices, "low": low, "high": high, "open_low": open_low}
    return field(default_factory=factory, metadata=meta) if factory else field(default=default, metadata=meta)


@dataclass
class ModelArgs:
    """model"""

    model: str | None = arg(None, "local checkpoint dir, hub id (Qwen/Qwen2.5-7B-Instruct), ModelScope id "
                                  "(modelscope://qwen/Qwen2.5-7B-Instruct, or any hub id with USE_MODELSCOPE_HUB=1) "
                                  "or `tiny`, the embedded default (default: the adapter's base model, else tiny)")
    adapter: str | None = arg(None, "LoRA/DoRA adapter dir (or one of its checkpoint-N) written by `qwen-sft train`")
    template: str = arg("auto", "chat format; auto = the one the adapter was trained with, else the checkpoint's",
                        choices=TEMPLATE_NAMES)
    dtype: str = arg("auto", "auto = bf16 where the device supports it, else fp32; tf32 = fp32 with TF32 matmuls; "
                             "fp16 needs allow_fp16", choices=("auto", "bf16", "fp32", "tf32", "fp16"))
    allow_fp16: bool = arg(False, "allow fp16 although Qwen's loss goes NaN in it")
    quantization: str = arg("none", "load the frozen base quantised (bitsandbytes) and train LoRA/DoRA on top: 4bit = "
                                    "QLoRA (NF4, double quantisation, compute in dtype); 8bit = LLM.int8",
                            choices=("none", "4bit", "8bit"))

    def resolve(self) -> list[str]:
        if self.dtype == "fp16" and not self.allow_fp16:
            return ["dtype: fp16 refused: Qwen's activations overflow fp16 and the loss goes NaN; use bf16 or fp32, "
                    "or set allow_fp16: true to force it"]
        return []


@dataclass
class DataArgs:
    """data"""

    data: str | list[DataSource] | None = arg(
        None, "JSON/JSONL file, save_to_disk dir, hub dataset name (owner/name[:split]) or modelscope://owner/name"
              "[:split]; or a list of them, mixed (a,b on the command line; in YAML entries may be {path, weight} "
              "or {path, samples})")
    eval_data: str | list[DataSource] | None = arg(None, "held-out data, same forms as data; eval loss is logged "
                                                         "every eval_steps")
    data_format: str = arg("auto", "record shape; auto detects it from the first record",
                           choices=("auto", *FORMATS))
    skip_bad: bool = arg(False, "skip malformed or untrainable records (each one reported) instead of stopping")
    max_length: int = arg(1024, "tokens per example; longer ones are cut (whole messages kept while they fit)", low=1)
    loss: str = arg("all", "trained tokens: all = the whole sequence (the README says why), assistant = every "
                           "answer (TRL/LLaMA-Factory's answer-only), last = the last answer; *_no_reasoning: Qwen3 "
                           "<think> blocks as context, not trained", choices=tuple(mode.value for mode in Loss))
    packing: bool = arg(False, "padding-free: concatenate examples into rows of up to max_length tokens")


@dataclass
class LoraArgs:
    """lora"""

    r: int = arg(8, "LoRA rank", low=1)
    alpha: int = arg(16, "LoRA scale numerator (scale = alpha / r)", low=1)
    dropout: float = arg(0.05, "dropout on the LoRA input", low=0.0, high=0.999)
    targets: list[str] = arg(help="modules that get adapters (comma-separated on the command line; default: all "
                                  "linear layers of the decoder)", factory=lambda: list(LORA_TARGETS_ALL))


@dataclass
class TrainArgs:
    """training (transformers' TrainingArguments names; any other TrainingArguments key is passed through)"""

    finetuning: str = arg("lora", "method", choices=("lora", "dora", "full"))
    output_dir: str = arg("runs/sft", "where the adapter/model, checkpoints, logs and loss.png go")
    overwrite: bool = arg(False, "allow an output_dir that holds a different run (its checkpoints are deleted)")
    resume: str = arg("auto", "auto = the newest complete checkpoint in output_dir; never; or a checkpoint dir")
    learning_rate: float | None = arg(None, "peak learning rate (default: 2e-4 for LoRA/DoRA, 1e-5 for full)",
                                      low=0.0, open_low=True)
    num_train_epochs: float = arg(3.0, "passes over the data (max_steps wins when set)", low=0.0, open_low=True)
    max_steps: int = arg(-1, "optimizer steps; -1 = from num_train_epochs")
    per_device_train_batch_size: int = arg(4, "examples (packed rows) per device and micro-step", low=1)
    per_device_eval_batch_size: int = arg(4, "examples per device for eval loss", low=1)
    gradient_accumulation_steps: int = arg(1, "micro-steps per optimizer step", low=1)
    lr_scheduler_type: str = arg("cosine", "learning-rate schedule", choices=(
        "linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial",
        "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay"))
    warmup_ratio: float = arg(0.03, "share of the steps spent warming up", low=0.0, high=0.999)
    weight_decay: float = arg(0.0, "AdamW weight decay", low=0.0)
    max_grad_norm: float = arg(1.0, "gradient clipping norm (0 = off)", low=0.0)
    gradient_checkpointing: bool = arg(False, "recompute activations in backward: less memory, ~30% slower")
    logging_steps: int = arg(10, "log loss, learning rate, tokens/s every this many steps", low=1)
    save_steps: int = arg(200, "checkpoint every this many steps", low=1)
    save_total_limit: int | None = arg(3, "keep at most this many checkpoints (none = all)", low=1)
    eval_steps: int | None = arg(None, "eval loss every this many steps (default: save_steps)", low=1)
    seed: int = arg(42, "random seed: data order, adapter init, dropout")
    chunk_size: int = arg(256, "tokens per chunk of the fused output layer + loss (memory vs speed; see bench/)",
                          low=1)
    attention: str = arg("auto", "attention kernel: varlen = per-example attention of packed rows, no mask (flash "
                                 "kernel on CUDA, needs packing); auto = varlen for packed bf16/fp16 runs on CUDA, "
                                 "else sdpa", choices=("auto", "sdpa", "eager", "varlen"))
    force: bool = arg(False, "train even when `qwen-sft check` (run first by train) reports a FAIL")
    dry_run: bool = arg(False, "run the check (and forecast) only, then stop: nothing but check.json is written")
    forecast: bool = arg(True, "forecast memory and time from a 3-step micro-run (seconds) at the start; false "
                               "skips it")
    extra: dict = arg(help="other TrainingArguments keys, passed through", factory=dict)

    def resolve(self) -> list[str]:
        if self.learning_rate is None:
            self.learning_rate = LEARNING_RATE[self.finetuning]
        return []


@dataclass
class SamplingArgs:
    """sampling (unset keys: greedy for predict and eval, the checkpoint's generation_config.json for chat/serve)"""

    max_new_tokens: int = arg(512, "at most this many generated tokens per answer", low=1)
    temperature: float | None = arg(None, "0 = greedy; > 0 samples", low=0.0)
    top_p: float | None = arg(None, "nucleus sampling: keep the most likely tokens up to this probability",
                              low=0.0, high=1.0, open_low=True)
    top_k: int | None = arg(None, "sample from the k most likely tokens (0 = off)", low=0)
    min_p: float | None = arg(None, "drop tokens below min_p x the top token's probability (0 = off)",
                              low=0.0, high=1.0)
    repetition_penalty: float | None = arg(None, "> 1 discourages any token already in prompt or answer (1 = off)",
                                           low=0.0, open_low=True)
    presence_penalty: float | None = arg(None, "subtracted from tokens already in the answer (OpenAI's; 0 = off)",
                                         low=-2.0, high=2.0)
    frequency_penalty: float | None = arg(None, "subtracted per occurrence in the answer (OpenAI's; 0 = off)",
                                          low=-2.0, high=2.0)
    seed: int | None = arg(None, "random seed for sampling (same seed, same answer)")


@dataclass
class ServeArgs:
    """serving"""

    host: str = arg("127.0.0.1", "interface to bind; anything else exposes the server to the network")
    port: int = arg(8036, "TCP port", low=0, high=65535)
    api_key: str | None = arg(None, "require `Authorization: Bearer KEY` (default: $QWEN_SFT_API_KEY; none = open)")
    max_batch: int = arg(32, "most sequences decoded together", low=1)
    max_tokens_limit: int = arg(2048, "ceiling on max_tokens per request", low=1)
    max_model_len: int | None = arg(None, "context length, prompt + answer (default: the model's)", low=1)
    max_body_bytes: int = arg(1 << 20, "request bodies above this get 413", low=1)
    served_model_name: str | None = arg(None, "model id /v1/models shows (default: the model or adapter dir name)")


SECTIONS = {"model": ModelArgs, "data": DataArgs, "lora": LoraArgs, "train": TrainArgs, "sampling": SamplingArgs,
            "serve": ServeArgs}
PREFIX = {"lora": "lora."}  # keys of these sections are written `lora.r`; the others are bare


@dataclass
class Config:
    """What a command runs with: every section (defaults where the command takes none of its keys)."""

    model: ModelArgs = field(default_factory=ModelArgs)
    data: DataArgs = field(default_factory=DataArgs)
    lora: LoraArgs = field(default_factory=LoraArgs)
    train: TrainArgs = field(default_factory=TrainArgs)
    sampling: SamplingArgs = field(default_factory=SamplingArgs)
    serve: ServeArgs = field(default_factory=ServeArgs)
    command: object = None  # the command's own options (a dataclass of `arg` fields), if it has any
    arguments: object = field(default=None, repr=False)  # transformers' TrainingArguments, built once (training_args)


@dataclass(frozen=True)
class Command:
    """What a command takes: sections (name, or (name, keys) for part of one), its own options, which keys
    are required, and what a positional argument is (a YAML file of keys, or one key)."""

    parts: tuple
    options: type | None = None  # the command's own dataclass, stored in Config.command
    required: tuple[str, ...] = ()
    positional: str | None = "config"  # "config" = an optional YAML file; a key name = that key; None = none
    passthrough: bool = False  # unknown TrainingArguments keys go to train.extra (train, check)

    def keys(self) -> dict[str, tuple[str, dataclasses.Field]]:
        """key → (section, field), in help order."""
        out = {}
        for part in self.parts:
            section, names = (part, None) if isinstance(part, str) else part
            for f in dataclasses.fields(SECTIONS[section]):
                if f.name != "extra" and (names is None or f.name in names):
                    out[PREFIX.get(section, "") + f.name] = (section, f)
        for f in dataclasses.fields(self.options) if self.options else ():
            out[f.name] = ("command", f)
        return out


def to_dict(cfg: Config, command: Command | None = None) -> dict:
    """The flat resolved config, as written to run_config.yaml (train.extra's keys at the top level)."""
    keys = (command or TRAIN).keys()
    out = {key: _plain(value_of(cfg, keys, key)) for key in keys}
    return {**out, **cfg.train.extra} if (command or TRAIN).passthrough else out


def _plain(value):
    if not isinstance(value, list):
        return value
    return [{k: v for k, v in dataclasses.asdict(v).items() if v is not None} if dataclasses.is_dataclass(v) else v
            for v in value]


def value_of(cfg: Config, keys: dict, key: str):
    section, spec = keys[key]
    return getattr(getattr(cfg, section), spec.name)


TRAIN = Command(parts=(("model", ("model", "template", "dtype", "allow_fp16", "quantization")), "data", "lora",
                       "train"),
                required=("data",), passthrough=True)
