"""Check a training config before training: prompts, data, checkpoint, memory and time (`train` runs it too).

Same config as `train`. Prints one line per check (PASS / WARN / FAIL, examples concerned, the first file:line,
the fix) and writes check.json into output_dir; exits 1 when a check fails. See docs/check.md.
"""

from qwen_sft.config.schema import TRAIN, Config

COMMAND = TRAIN  # the same keys as train


def main(cfg: Config) -> int:
    from qwen_sft.preflight.check import check

    return 1 if check(cfg).failed else 0
