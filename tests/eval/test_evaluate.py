"""ROUGE / BLEU against hand-computed values (LLaMA-Factory's convention), and `qwen-sft eval` end to end."""

import json
from pathlib import Path

import pytest

from qwen_sft.cli import main, run
from qwen_sft.eval.metrics import METRICS, lcs_length, score, words
from qwen_sft.utils.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
DEV = ROOT / "data" / "advertise_gen" / "dev.jsonl"


def test_identical_texts_score_100():
    for text in ("这款连衣裙很显瘦。", "I love 苹果 and bananas!"):
        assert score(text, text) == dict.fromkeys(METRICS, 100.0), text


def test_identical_very_short_texts_keep_the_conventions_quirks():
    # "显瘦" is one jieba word: no bigram, so ROUGE-2 is 0. BLEU-4 on its 2 characters: 1- and 2-gram
    # precisions 1, no 3-/4-grams at all (0/1 each), which method3 turns into 1/2 and 1/4:
    # (1 * 1 * 1/2 * 1/4) ** (1/4) = 0.594604 → 59.4604. LLaMA-Factory reports the same.
    assert score("显瘦", "显瘦") == {"rouge-1": 100.0, "rouge-2": 0.0, "rouge-l": 100.0, "bleu-4": 59.4604}


def test_small_chinese_pair_by_hand():
    # jieba: 我/喜欢/吃/香蕉 vs 我/喜欢/吃/苹果
    assert words("我喜欢吃香蕉") == ["我", "喜欢", "吃", "香蕉"]
    # ROUGE-1: 3 of 4 words shared each way: P = R = 3/4 → F = 75
    # ROUGE-2: bigrams {我喜欢, 喜欢吃, 吃香蕉} vs {我喜欢, 喜欢吃, 吃苹果}: 2/3 each way → 66.6667
    # ROUGE-L: LCS 我 喜欢 吃 = 3 words: 3/4 → 75
    # BLEU-4 on characters (6 vs 6, brevity penalty 1): matching 1-grams 4/6 (我喜欢吃), 2-grams 3/5
    #   (我喜 喜欢 欢吃), 3-grams 2/4 (我喜欢 喜欢吃), 4-grams 1/3 (我喜欢吃); no zero count, so method3 does
    #   nothing: (4/6 * 3/5 * 2/4 * 1/3) ** (1/4) = (1/15) ** 0.25 = 0.508133 → 50.8133
    assert score("我喜欢吃香蕉", "我喜欢吃苹果") == {"rouge-1": 75.0, "rouge-2": 66.6667, "rouge-l": 75.0,
                                                  "bleu-4": 50.8133}


def test_rouge_n_counts_distinct_ngrams():
    # rouge_chinese's sets: hyp words the/the/the/cat, distinct {the, cat} = ref's → ROUGE-1 100;
    # bigrams {the the, the cat} vs {the cat}: P 1/2, R 1 → 66.6667; LCS "the cat" = 2: P 2/4, R 2/2 → 66.6667
    result = score("the the the cat", "the cat")
    assert (result["rouge-1"], result["rouge-2"], result["rouge-l"]) == (100.0, 66.6667, 66.6667)


def test_empty_or_blank_prediction_scores_zero():
    assert score("", "这款裙子很显瘦。") == dict.fromkeys(METRICS, 0.0)
    assert score("   ", "这款裙子很显瘦。")["rouge-l"] == 0.0
    assert score("好", "这款裙子很显瘦。")["rouge-2"] == 0.0  # a one-word text has no bigram: 0, no crash


def test_lcs():
    assert lcs_length(list("ABCBDAB"), list("BDCABA")) == 4
    assert lcs_length([], list("abc")) == 0


def test_same_numbers_as_rouge_chinese():
    import rouge_chinese  # what LLaMA-Factory calls; a test dependency, so this comparison always runs

    outputs = [json.loads(line)["output"] for line in DEV.read_text(encoding="utf-8").splitlines()[:6]]
    pairs = list(zip(outputs, outputs[1:])) + [
        ("I love 苹果 and bananas! 好吗？好。", "I like 苹果。Bananas too!"), ("", "这款裙子很显瘦。"),
        ("这款裙子很显瘦。", ""), ("，。！？", "这款裙子很显瘦。"), ("，。！", "，。"), ("The cat sat on the mat.", "A cat sat."),
        ("😀 好看 😀 好看", "好看😀"), ("显瘦显瘦显瘦显瘦", "显瘦"), ("好", "好"), ("a b a b a b", "b a b a")]
    for hyp, ref in pairs:
        hyp_words, ref_words = " ".join(words(hyp)), " ".join(words(ref))
        if not hyp_words.split() or not ref_words.split():  # LLaMA-Factory scores these 0 (rouge_chinese raises)
            theirs = {name: {"f": 0.0} for name in ("rouge-1", "rouge-2", "rouge-l")}
        else:
            theirs = rouge_chinese.Rouge().get_scores(hyp_words, ref_words)[0]
        ours = score(hyp, ref)
        for name in ("rouge-1", "rouge-2", "rouge-l"):
            assert ours[name] == round(theirs[name]["f"] * 100, 4), (name, hyp[:10], ref[:10])


def write_predictions(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_eval_command_from_predictions(tmp_path, capsys):
    rows = [{"instruction": "q1", "output": "我喜欢吃苹果", "prediction": "我喜欢吃香蕉", "finish_reason": "stop"},
            {"messages": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "the cat"}],
             "prediction": "the cat", "finish_reason": "stop"},
            {"instruction": "q3", "output": "显瘦", "prediction": "", "finish_reason": "length"}]
    preds = write_predictions(tmp_path / "preds.jsonl", rows[:1] + rows[2:])
    assert main(["eval", "--predictions", str(preds)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    # means of the pair above and of the empty prediction (all 0)
    expected = {"rouge-1": 37.5, "rouge-2": 66.6667 / 2, "rouge-l": 37.5, "bleu-4": 50.8133 / 2}
    assert {k: metrics[k] for k in METRICS} == pytest.approx(expected, abs=1e-4)
    assert metrics["num_examples"] == 2 and metrics["finish_reason"] == {"stop": 1, "length": 1}
    per_example = [json.loads(line) for line in (tmp_path / "metrics_per_example.jsonl").read_text().splitlines()]
    assert [p["rouge-1"] for p in per_example] == [75.0, 0.0] and per_example[1]["finish_reason"] == "length"
    assert "rouge-1" in capsys.readouterr().out
    # a messages-format file and LLaMA-Factory's generated_predictions.jsonl are read too
    run("eval", predictions=str(write_predictions(tmp_path / "m.jsonl", rows[1:2])), output_dir=str(tmp_path / "m"))
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["rouge-l"] == 100.0
    lf = write_predictions(tmp_path / "generated_predictions.jsonl",
                           [{"prompt": "p", "predict": "我喜欢吃香蕉", "label": "我喜欢吃苹果"}])
    run("eval", predictions=str(lf), output_dir=str(tmp_path / "lf"))
    assert json.loads((tmp_path / "lf" / "metrics.json").read_text())["bleu-4"] == 50.8133


def test_eval_command_generates_then_scores(tmp_path, tiny_path):
    data = tmp_path / "dev.jsonl"
    data.write_text("".join(DEV.read_text(encoding="utf-8").splitlines(keepends=True)[:2]), encoding="utf-8")
    run("eval", data=str(data), model=tiny_path,
        output_dir=str(tmp_path / "out"), max_new_tokens=4, dtype="fp32")
    preds = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 2 and all(p["finish_reason"] == "length" for p in preds)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["num_examples"] == 2 and all(0 <= metrics[k] <= 100 for k in METRICS)


def test_eval_user_errors(tmp_path):
    with pytest.raises(UserError, match="either --predictions"):
        run("eval")
    no_prediction = write_predictions(tmp_path / "a.jsonl", [{"instruction": "q", "output": "a"}])
    with pytest.raises(UserError, match="a.jsonl:1: no string field 'prediction'"):
        run("eval", predictions=str(no_prediction))
    no_reference = write_predictions(tmp_path / "b.jsonl", [{"instruction": "q", "output": "", "prediction": "x"}])
    with pytest.raises(UserError, match="no reference answer"):
        run("eval", predictions=str(no_reference))
