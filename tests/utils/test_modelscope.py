"""ModelScope ids (`hub.py`) for models and data, offline: `modelscope.snapshot_download` is replaced by a fake that
records what it was asked for and hands back local directories."""

import json
import shutil
import sys
import types

import pytest

from qwen_sft.data.mix import DataSource, load_mixed
from qwen_sft.model.load import resolve_model_path
from qwen_sft.utils.errors import UserError
from qwen_sft.utils.modelscope import SWITCH, modelscope_id


@pytest.fixture
def modelscope(monkeypatch, tmp_path, tiny_path):
    """A fake `modelscope` package: models are copies of tiny, data sets a dir with train/validation JSONL files."""
    calls = []
    dataset = tmp_path / "ms-dataset"
    (dataset / "data").mkdir(parents=True)
    (dataset / "README.md").write_text("card")
    for split, n in (("train", 3), ("validation", 2)):
        (dataset / "data" / f"{split}.jsonl").write_text("".join(
            json.dumps({"instruction": f"{split} {i}", "output": "ok"}) + "\n" for i in range(n)))

    def snapshot_download(repo_id, repo_type=None, **kwargs):
        calls.append((repo_id, repo_type))
        if repo_id == "missing/repo":
            raise FileNotFoundError("404 Client Error: repo not found\nmore detail")
        if repo_type == "dataset":
            return str(dataset)
        target = tmp_path / "ms-models" / repo_id.replace("/", "--")
        if not target.exists():
            shutil.copytree(tiny_path, target)
        return str(target)

    monkeypatch.setitem(sys.modules, "modelscope", types.SimpleNamespace(snapshot_download=snapshot_download))
    monkeypatch.delenv(SWITCH, raising=False)
    return calls


def test_model_ids_resolve_through_modelscope(modelscope, monkeypatch, tmp_path):
    path = resolve_model_path("modelscope://qwen/Qwen2.5-7B-Instruct")
    assert modelscope == [("qwen/Qwen2.5-7B-Instruct", "model")]
    assert (tmp_path / "ms-models" / "qwen--Qwen2.5-7B-Instruct" / "config.json").exists() and path.endswith("Instruct")
    assert resolve_model_path("Qwen/Qwen2.5-7B-Instruct") == "Qwen/Qwen2.5-7B-Instruct"  # no switch: the HF hub
    assert len(modelscope) == 1
    monkeypatch.setenv(SWITCH, "1")  # LLaMA-Factory's switch: every hub id means ModelScope
    resolve_model_path("qwen/Qwen2-0.5B")
    assert modelscope[-1] == ("qwen/Qwen2-0.5B", "model")
    local = tmp_path / "ms-models" / "qwen--Qwen2-0.5B"
    assert resolve_model_path(str(local)) == str(local) and resolve_model_path("tiny").endswith("tiny-seed0")
    assert len(modelscope) == 2  # local dirs and tiny never go to a hub


def test_modelscope_errors_are_one_line(modelscope, monkeypatch):
    with pytest.raises(UserError, match=r"modelscope://owner/name"):
        modelscope_id("modelscope://just-a-name")
    with pytest.raises(UserError, match=r"could not fetch model missing/repo from ModelScope \(FileNotFoundError: "
                                        r"404 Client Error: repo not found\)$"):
        resolve_model_path("modelscope://missing/repo")
    monkeypatch.setitem(sys.modules, "modelscope", None)  # not installed
    with pytest.raises(UserError, match=r"need the modelscope package: pip install 'qwen-sft\[modelscope\]'"):
        resolve_model_path("modelscope://qwen/Qwen2.5-7B-Instruct")


def test_modelscope_datasets_pick_the_split(modelscope, monkeypatch):
    samples, _, reports = load_mixed([DataSource("modelscope://owner/ds"), DataSource("modelscope://owner/ds:validation")])
    assert [s.messages[0]["content"] for s in samples] == ["train 0", "train 1", "train 2", "validation 0",
                                                           "validation 1"]
    assert modelscope == [("owner/ds", "dataset")] * 2 and reports[0].format == "alpaca"
    with pytest.raises(UserError, match=r"no JSON/JSONL file for split 'test' .*found: data/train.jsonl, "
                                        r"data/validation.jsonl"):
        load_mixed("modelscope://owner/ds:test")
    monkeypatch.setenv(SWITCH, "true")
    samples, _, _ = load_mixed("owner/ds")
    assert len(samples) == 3 and modelscope[-1] == ("owner/ds", "dataset")
