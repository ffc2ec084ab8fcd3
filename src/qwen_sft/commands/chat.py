"""Talk to a model: multi-turn, answers streamed as they are generated; /reset, /system TEXT, /exit.

Reads one user turn per line, from the terminal or a pipe (`printf 'hi\n/exit\n' | qwen-sft chat`). Answers go to
stdout (one `assistant: ...` line each); prompts and notices to stderr.
"""

from dataclasses import dataclass

from qwen_sft.config.schema import Command, Config, arg


@dataclass
class ChatOptions:
    """chat"""

    system: str | None = arg(None, "system prompt (default: the template's)")


COMMAND = Command(parts=("model", "sampling"), options=ChatOptions)


def main(cfg: Config) -> int:
    from qwen_sft.generation.chat import chat_loop
    from qwen_sft.generation.predict import sampling_from
    from qwen_sft.model.inference import load_for_inference

    model, tokenizer, template = load_for_inference(cfg.model)
    sampling = sampling_from(cfg.sampling, generation_config=getattr(model, "generation_config", None))
    chat_loop(model, tokenizer, template, sampling, system=cfg.command.system)
    return 0
