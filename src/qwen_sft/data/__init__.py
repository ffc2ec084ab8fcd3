"""The data: records in any of three shapes, mixed from several sources, tokenised once (and cached), batched.

readers.py     JSON / JSONL files, save_to_disk dirs, hub datasets → (where, record)
tools.py       tool definitions and calls in the OpenAI shape; reading calls back out of generated text
records.py     alpaca / sharegpt / OpenAI-messages records → `Sample`s (messages, tools), one-line errors
mix.py         `data` as a list of sources (`DataSource`): weights / sample counts, mixed deterministically
dataset.py     samples → tokenised `Example`s: the one load-and-encode loop of train, preview and check
cache.py       the tokenised-data cache, keyed by everything the encoding depends on
collate.py     examples → the trainer's items (rows or packed bins) and batches (padded, packed, varlen)
"""
