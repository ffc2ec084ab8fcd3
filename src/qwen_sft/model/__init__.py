"""The model: resolving a name to a checkpoint, loading it for inference or for training, and what training changes.

checkpoint.py  what a checkpoint dir must hold; config.json keys older readers need
tiny.py        the embedded `tiny` models (random weights, the real tokenizer), built on first use
load.py        a name → a directory (tiny, ModelScope, local, hub id), the dtype policy, model + adapter loading
inference.py   what predict, chat, eval, merge and serve load: base, tokenizer, the template it was trained with
attention.py   `attention: varlen`: per-example attention over packed rows without a mask
loss.py        the chunked linear + cross-entropy that never builds full-vocabulary logits
training.py    the model as training sees it: LoRA / DoRA / full, a quantised base, the loss inside lm_head's call
"""
