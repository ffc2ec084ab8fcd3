"""`qwen-sft check`: what a training run will really do, inspected before it starts (see `checks.run`).

report.py     a check's result (`Finding`: PASS / WARN / FAIL, examples concerned, first file:line, fix), the
              table and check.json
prompt.py     the prompts: the data rendered by the checkpoint's own chat template, terminators, pad, thinking
data_checks.py  the data: bad records, nothing to train, truncation, duplicates, overlap, special tokens, tools
checkpoint.py the checkpoint: EOS / pad ids across its files, tied embeddings, dtype, sampling defaults
run.py        runs them all (and the forecast, `forecast.py`) for `check` and at the start of `train`
"""
