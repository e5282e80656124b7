"""`fineked publish`: upload a build's folder (card + parquet) to the Hugging Face Hub, or dry-run it locally."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from fineked.export import UPLOAD_PATHS
from fineked.records import LEVELS

log = logging.getLogger(__name__)


STAGED_MARK = ".fineked-staged"


class PublishError(FileNotFoundError):
    """Missing build or bad upload folder (shown as one line)."""


def upload_folder(data: Path, dest: Path) -> Path:
    """Copy exactly what would be uploaded (README.md, data/, krd_train/) into dest."""
    for p in UPLOAD_PATHS:
        if not (data / p).exists():
            raise PublishError(f"{data / p} is missing; run `fineked build --out {data}` first")
    if dest.exists():  # replace only a folder this function made, never one the user put there
        if not (dest / STAGED_MARK).exists():
            raise PublishError(f"{dest} exists and was not staged by `fineked publish`; move it away or pass "
                               "another staging folder")
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    (dest / STAGED_MARK).write_text("staged by `fineked publish`; replaced by the next publish\n")
    for p in UPLOAD_PATHS:
        src = data / p
        if src.is_dir():
            shutil.copytree(src, dest / p)
        else:
            shutil.copy2(src, dest / p)
    return dest


def verify_folder(folder: Path) -> dict[str, int]:
    """load_dataset(folder) must read every split of both configs; returns rows per split."""
    import tempfile

    from datasets import load_dataset

    # A private cache: datasets' own cache can hand back an older folder's tables when the
    # relative file names and mtimes match (seen with two builds staged as `*-upload`).
    with tempfile.TemporaryDirectory(prefix="fineked-verify-") as cache:
        counts = {lv: len(load_dataset(str(folder), split=lv, cache_dir=cache)) for lv in LEVELS}
        counts["krd_train"] = len(load_dataset(str(folder), "krd_train", split="train", cache_dir=cache))
    return counts


def publish(data: Path, repo_id: str, private: bool = False, dry_run: bool = False,
            staging: Path | None = None) -> dict:
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise PublishError(f"--repo-id {repo_id!r} must look like ORG/NAME")
    folder = upload_folder(data, staging or data.parent / f"{data.name}-upload")
    counts = verify_folder(folder)
    if dry_run:
        return {"folder": str(folder), "rows": counts, "uploaded": False}
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    if constants.is_offline_mode():
        raise PublishError("HF_HUB_OFFLINE is set (make exports it); run `HF_HUB_OFFLINE=0 fineked publish ...` to upload")
    api = HfApi()  # token from HF_TOKEN or `hf auth login`; never read or printed here
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=str(folder),
                                   ignore_patterns=[STAGED_MARK], commit_message="Upload FINE-KED build")
    except HfHubHTTPError as exc:  # the message carries the URL and status, never the token
        raise PublishError(f"upload to {repo_id} failed: {str(exc).splitlines()[0]}; check `hf auth login` / HF_TOKEN") from exc
    except Exception as exc:  # network down, DNS, TLS, proxy: the client libraries raise many types
        if isinstance(exc, PublishError):
            raise
        raise PublishError(f"upload to {repo_id} failed: cannot reach the Hub ({type(exc).__name__}); check the "
                           "network and rerun `fineked publish`") from exc
    return {"folder": str(folder), "rows": counts, "uploaded": True, "repo_url": str(url),
            "commit": getattr(commit, "oid", None)}
