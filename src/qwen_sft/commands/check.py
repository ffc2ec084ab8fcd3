"""Check a training config before training: prompts, data, checkpoint, memory and time (`train` runs it too).

Same config as `train`. Prints one line per check (PASS / WARN / FAIL, examples concerned, the first file:line,
the fix) and writes check.json into output_dir; exits 1 when a check fails. See docs/check.md.
"""

from qwen_sft.config import TRAIN as COMMAND  # noqa: F401 - the same keys as train
from qwen_sft.config import Config


def main(cfg: Config) -> int:
    from qwen_sft.checks.run import check

    return 1 if check(cfg).failed else 0
