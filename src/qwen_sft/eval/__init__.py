"""`qwen-sft eval`: ROUGE-1/2/L and BLEU-4 against reference answers, and the files predictions and scores live in.

metrics.py   the scores (LLaMA-Factory's convention: jieba words for ROUGE, characters for BLEU-4)
report.py    predictions.jsonl in and out, metrics.json, metrics_per_example.jsonl, the table
"""
