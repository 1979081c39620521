"""Loading a model directory: the shipped model, a user's own ResNet, and every way a directory can be wrong."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import ResNetConfig, ResNetForImageClassification
from transformers.models.convnext import ConvNextImageProcessorPil

from evaluation.model import check_labels, load_model, weights_checksum
from monitor.core.errors import ModelError
from monitor.core.settings import SHIPPED_MODEL_DIR

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def save_user_resnet(dest: Path, labels: list[str], image_size: int = 64) -> Path:
    """A randomly initialised ResNet-50-shaped classifier (bottleneck blocks, depths 3-4-6-3) saved as a user would."""
    torch.manual_seed(0)
    config = ResNetConfig(
        layer_type="bottleneck",
        depths=[3, 4, 6, 3],
        hidden_sizes=[32, 64, 128, 256],  # ResNet-50 has 256..2048: same code path, a fraction of the disk
        embedding_size=16,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    ResNetForImageClassification(config).save_pretrained(dest)
    # microsoft/resnet-50's processor: shortest edge 224 -> here image_size, crop_pct 0.875, bicubic.
    ConvNextImageProcessorPil(size={"shortest_edge": image_size}, crop_pct=0.875).save_pretrained(dest)
    return dest


@pytest.fixture
def shipped_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(SHIPPED_MODEL_DIR, tmp_path / "digits-resnet"))


def test_shipped_model_loads_with_word_labels_and_a_weights_checksum() -> None:
    loaded = load_model(SHIPPED_MODEL_DIR, device="cpu")
    assert loaded.labels == DIGIT_WORDS
    assert loaded.id2label == dict(enumerate(DIGIT_WORDS))
    expected = hashlib.sha256(
        b"model.safetensors\0" + (SHIPPED_MODEL_DIR / "model.safetensors").read_bytes()
    ).hexdigest()
    assert loaded.checksum == expected
    assert loaded.model_id == f"digits-resnet@{expected[:12]}"
    assert loaded.device == torch.device("cpu")
    assert not loaded.model.training


def test_users_own_resnet_directory_loads_through_the_same_path(tmp_path: Path) -> None:
    labels = ["Bicycle", "Car", "Spyder"]
    model_dir = save_user_resnet(tmp_path / "my-resnet50", labels)
    loaded = load_model(model_dir, device="auto")
    assert loaded.labels == labels
    assert loaded.name == "my-resnet50"
    assert loaded.model_id.startswith("my-resnet50@")
    assert loaded.processor.crop_pct == pytest.approx(0.875)
    with torch.inference_mode():
        logits = loaded.model(pixel_values=torch.zeros(2, 3, 64, 64, device=loaded.device)).logits
    assert logits.shape == (2, 3)
    check_labels(loaded, ["Car", "Spyder"])


def test_model_id_changes_when_the_weights_change(shipped_copy: Path) -> None:
    before = load_model(shipped_copy, device="cpu").model_id
    model = ResNetForImageClassification.from_pretrained(shipped_copy)
    with torch.no_grad():
        model.classifier[-1].bias.add_(1.0)
    model.save_pretrained(shipped_copy)
    after = load_model(shipped_copy, device="cpu").model_id
    assert before.split("@")[0] == after.split("@")[0] == "digits-resnet"
    assert before != after


def test_missing_directory_is_a_model_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelError, match=f"model directory {missing} does not exist"):
        load_model(missing, device="cpu")


@pytest.mark.parametrize("removed", ["config.json", "preprocessor_config.json"])
def test_directory_without_a_config_file_is_refused(shipped_copy: Path, removed: str) -> None:
    (shipped_copy / removed).unlink()
    with pytest.raises(ModelError, match=f"{shipped_copy} has no {removed}"):
        load_model(shipped_copy, device="cpu")


def test_directory_without_weights_is_refused(shipped_copy: Path) -> None:
    (shipped_copy / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="has no weight files"):
        load_model(shipped_copy, device="cpu")
    with pytest.raises(ModelError, match="has no weight files"):
        weights_checksum(shipped_copy)


def test_config_that_is_not_json_is_refused(shipped_copy: Path) -> None:
    (shipped_copy / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="config.json .* is unreadable: it is not JSON"):
        load_model(shipped_copy, device="cpu")


def test_config_of_an_unknown_model_type_is_refused(shipped_copy: Path) -> None:
    config = json.loads((shipped_copy / "config.json").read_text())
    config["model_type"] = "no-such-architecture"
    (shipped_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="does not load as an image classifier"):
        load_model(shipped_copy, device="cpu")


def test_weights_of_another_architecture_are_refused_not_randomly_filled(shipped_copy: Path, tmp_path: Path) -> None:
    other = save_user_resnet(tmp_path / "other", ["a", "b"])
    shutil.copy(other / "model.safetensors", shipped_copy / "model.safetensors")
    with pytest.raises(ModelError, match="does not load as an image classifier: RuntimeError"):
        load_model(shipped_copy, device="cpu")


def test_weights_lacking_tensors_are_refused_not_randomly_filled(shipped_copy: Path) -> None:
    weights = load_file(shipped_copy / "model.safetensors")
    headless = {name: tensor for name, tensor in weights.items() if not name.startswith("classifier.")}
    save_file(headless, shipped_copy / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelError, match=r"the weight files lack 2 of the model's tensors \(e.g. classifier"):
        load_model(shipped_copy, device="cpu")


def test_asking_for_cuda_without_a_gpu_is_a_model_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this host has a GPU")
    with pytest.raises(ModelError, match="no CUDA GPU"):
        load_model(SHIPPED_MODEL_DIR, device="cuda")


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (
            ["one", "Spyder", "X"],
            r"labels 'Spyder', 'X' in the source are not among the model digits-resnet@\w{12}'s 10 labels \(zero, one, two",
        ),
        (["seven", "Seven"], r"label 'Seven' in the source is not among the model .*'s 10 labels"),
    ],
)
def test_check_labels_names_the_unknown_labels_and_the_models_count(labels: list[str], message: str) -> None:
    loaded = load_model(SHIPPED_MODEL_DIR, device="cpu")
    with pytest.raises(ModelError, match=message):
        check_labels(loaded, labels)


def test_check_labels_accepts_a_subset_of_the_models_labels() -> None:
    loaded = load_model(SHIPPED_MODEL_DIR, device="cpu")
    check_labels(loaded, ["three", "nine", "three"])
    check_labels(loaded, [])


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("config.json", "[" * 5000 + "]" * 5000, "nests deeper than the 64 levels"),
        ("config.json", '{"num_labels": 1e999}', "config.json"),
        ("preprocessor_config.json", "[" * 5000 + "]" * 5000, "preprocessor_config.json"),
        ("config.json", None, "has no config.json"),  # a FIFO in its place: refused, never opened (it would block)
    ],
)
def test_a_damaged_configuration_is_one_model_error_never_a_hang_or_a_recursion_error(
    shipped_copy: Path, name: str, content: str | None, message: str
) -> None:
    import os

    target = shipped_copy / name
    target.unlink()
    if content is None:
        os.mkfifo(target)
    else:
        target.write_text(content)
    with pytest.raises(ModelError, match=message):
        load_model(shipped_copy, device="cpu")


def test_a_checkpoint_that_is_not_a_hugging_face_directory_says_how_to_bring_its_predictions(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    (tmp_path / "weights.pt").write_bytes(b"torch")
    with pytest.raises(ModelError) as caught:
        load_model(tmp_path, "cpu")
    message = str(caught.value)
    assert "has no config.json (it holds model.onnx, weights.pt: not a Hugging Face model)" in message
    assert "monitor predictions import FILE --date D" in message and "\n" not in message
