"""`train(cfg)`: the recipe (config → check → data → model → Trainer → saved model) and the Trainer it runs.

recipe.py    the steps of a training run, in order
trainer.py   `SFTTrainer`: token-mean loss, no per-step host syncs, NaN stop, staged checkpoints, our log
"""
