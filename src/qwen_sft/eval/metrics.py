"""`qwen-sft eval`: ROUGE-1/2/L and BLEU-4 of predictions against reference answers.

Convention: LLaMA-Factory's (`src/llamafactory/train/sft/metric.py`, `ComputeSimilarity`), which is also
ChatGLM's p-tuning evaluation, so numbers are comparable with what those projects report:

  ROUGE-1/2/L  F1 over the words of `jieba.cut` (default mode), whitespace tokens dropped, as computed by
               the `rouge_chinese` package they call: ROUGE-N counts each distinct n-gram once (set
               overlap, not clipped counts); ROUGE-L is the LCS over all words of the text;
               F = 2PR / (P + R + 1e-8). If either side has no words, all three are 0.
  BLEU-4       over characters: nltk `sentence_bleu([list(reference)], list(prediction))`, uniform
               1-4-gram weights, `SmoothingFunction().method3`.
  scale        each score x100, rounded to 4 decimals per example, then averaged over examples.

ROUGE is implemented here (a few lines; the same numbers as rouge_chinese, see tests) instead of adding a
dependency. The reference is a record's last assistant answer; an empty prediction scores 0.
"""

from __future__ import annotations

import functools
import logging

METRICS = ("rouge-1", "rouge-2", "rouge-l", "bleu-4")


# ------------------------------------------------------------------------------------------------ metrics

def words(text: str) -> list[str]:
    """jieba words; the whitespace tokens jieba emits between English words are dropped (rouge_chinese
    joins the words with spaces and splits on whitespace)."""
    return " ".join(_jieba().cut(text)).split()


@functools.lru_cache(maxsize=1)
def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)  # no "Building prefix dict..." chatter on stderr
    return jieba


def rouge_n(hyp: list[str], ref: list[str], n: int) -> float:
    """F1 of distinct n-gram overlap (rouge_chinese's default `exclusive=True`)."""
    hyp_grams = {tuple(hyp[i:i + n]) for i in range(len(hyp) - n + 1)}
    ref_grams = {tuple(ref[i:i + n]) for i in range(len(ref) - n + 1)}
    overlap = len(hyp_grams & ref_grams)
    return _f1(overlap / len(hyp_grams) if hyp_grams else 0.0, overlap / len(ref_grams) if ref_grams else 0.0)


def lcs_length(a: list, b: list) -> int:
    """Longest common subsequence length, O(len(a) * len(b)) time, O(len(b)) memory."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(hyp: list[str], ref: list[str]) -> float:
    lcs = lcs_length(ref, hyp)
    return _f1(lcs / len(hyp), lcs / len(ref))


def _f1(precision: float, recall: float) -> float:
    return 2.0 * precision * recall / (precision + recall + 1e-8)  # rouge_chinese's epsilon, kept for parity


def bleu4(prediction: str, reference: str) -> float:
    """Character BLEU-4 with method3 smoothing, in [0, 1]."""
    if not prediction or not reference:
        return 0.0
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    return sentence_bleu([list(reference)], list(prediction), smoothing_function=SmoothingFunction().method3)


def score(prediction: str, reference: str) -> dict[str, float]:
    """The four metrics of one example, x100 and rounded to 4 decimals (LLaMA-Factory's per-example values)."""
    hyp, ref = words(prediction), words(reference)
    rouge = (0.0, 0.0, 0.0) if not hyp or not ref else (rouge_n(hyp, ref, 1), rouge_n(hyp, ref, 2), rouge_l(hyp, ref))
    values = (*rouge, bleu4(prediction, reference))
    return {name: round(value * 100, 4) for name, value in zip(METRICS, values)}


def score_all(predictions: list[str], references: list[str]) -> tuple[dict[str, float], list[dict[str, float]]]:
    """(mean of each metric, per-example scores)."""
    per_example = [score(p, r) for p, r in zip(predictions, references)]
    n = max(len(per_example), 1)
    return {name: round(sum(s[name] for s in per_example) / n, 4) for name in METRICS}, per_example
