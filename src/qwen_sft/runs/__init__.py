"""A run directory (`runs/NAME/`) and what `train` writes into it.

run_config.py   run_config.yaml: the resolved config and the base model's shape, in the dir and every checkpoint;
                read back by every `--adapter` command
checkpoints.py  the output dir checked before anything loads; checkpoint-N staged, fsynced, published, rotated
train_log.py    train_log.jsonl (one JSON object per logging step) and loss.png
"""
