"""`qwen-sft check`, run at the start of `train` too: what a training run will do, inspected before it starts.

report.py             a check's result (`Finding`: PASS / WARN / FAIL, examples concerned, first file:line, fix),
                      the table and check.json
prompt_checks.py      the prompts: the data rendered by the checkpoint's own chat template, terminators, pad, thinking
data_checks.py        the data: bad records, nothing to train, truncation, duplicates, overlap, special tokens, tools
checkpoint_checks.py  the checkpoint: EOS / pad ids across its files, tied embeddings, dtype, sampling defaults
forecast.py           the run's plan and its memory and time formulas
measure.py            the forecast's measurements on the loaded training model: activations, a few timed steps
check.py              runs them all for `check` and at the start of `train`; forecast vs measured at the end
"""
