"""ModelScope (modelscope.cn): the hub Qwen users in mainland China fetch models and data sets from.

Where a model or a data source is taken, `modelscope://owner/name` names a ModelScope repo (a data set may add
`:split`). With `USE_MODELSCOPE_HUB=1` (LLaMA-Factory's switch, so its users' habits carry over) every hub id
`owner/name` that is not a local path means ModelScope too. Repos are downloaded by `modelscope.snapshot_download`
into ModelScope's own cache (`MODELSCOPE_CACHE`, default ~/.cache/modelscope) and used as local directories; the
`modelscope` package is an optional extra (`pip install 'qwen-sft[modelscope]'`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from qwen_sft.utils.errors import UserError

log = logging.getLogger(__name__)
SCHEME = "modelscope://"
SWITCH = "USE_MODELSCOPE_HUB"


def modelscope_id(name: str) -> str | None:
    """The ModelScope repo `name` refers to (`owner/name`, a data set's `:split` kept), or None: a local path, `tiny`
    or a Hugging Face hub id.

    Raises:
        UserError: a `modelscope://` name that is not `owner/name`.
    """
    name = str(name)
    if name.startswith(SCHEME):
        repo = name[len(SCHEME):].strip("/")
        if repo.split(":")[0].count("/") != 1 or not all(repo.split(":")[0].split("/")):
            raise UserError(f"{name}: a ModelScope id is modelscope://owner/name (e.g. modelscope://qwen/Qwen2.5-7B-"
                            "Instruct)")
        return repo
    if use_modelscope() and not Path(name).exists() and _is_hub_id(name):
        return name
    return None


def use_modelscope() -> bool:
    return os.environ.get(SWITCH, "").strip().lower() in ("1", "true", "yes", "on")


def download_model(name: str) -> str:
    """The local directory of ModelScope model `name` (downloaded once, then served from ModelScope's cache).

    Raises:
        UserError: modelscope not installed, or the download failed (one line, with the cause).
    """
    repo = modelscope_id(name) or name
    return _download(name, repo, "model")


def download_dataset(name: str) -> tuple[Path, str | None]:
    """(local directory, split or None) of ModelScope data set `name` (`owner/name[:split]`).

    Raises:
        UserError: modelscope not installed, or the download failed.
    """
    repo, _, split = (modelscope_id(name) or name).partition(":")
    return Path(_download(name, repo, "dataset")), split or None


def _download(name: str, repo: str, repo_type: str) -> str:
    try:
        from modelscope import snapshot_download
    except ImportError:
        raise UserError(f"{name}: ModelScope ids need the modelscope package: pip install 'qwen-sft[modelscope]'"
                        + (f" (or unset {SWITCH} to use the Hugging Face hub)" if use_modelscope() else "")) from None
    log.info("fetching %s %s from ModelScope", repo_type, repo)
    try:
        return str(snapshot_download(repo, repo_type=repo_type))
    except Exception as err:  # the client raises many types (HTTP, auth, not found); the user needs one line
        first = str(err).splitlines()[0] if str(err) else ""
        raise UserError(f"{name}: could not fetch {repo_type} {repo} from ModelScope ({type(err).__name__}: {first})"
                        ) from None


def _is_hub_id(name: str) -> bool:
    parts = name.split(":")[0].split("/")
    return len(parts) == 2 and all(parts) and not name.endswith((".json", ".jsonl")) and not name.startswith(".")
