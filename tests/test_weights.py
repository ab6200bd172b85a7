"""Weights registry, preprocessing, checkpoint reading/conversion/validation and `posekit weights list`."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from posekit.cli import main
from posekit.core.spec import preprocess_crops
from posekit.errors import CheckpointError
from posekit.models import weights
from posekit.models.pose_resnet import pose_resnet

# Transcribed by hand from the official README table and mmpose's resnet_coco.md model zoo.
REPORTED_AP = {
    "pose_resnet_50_256x192": 0.704, "pose_resnet_50_384x288": 0.722,
    "pose_resnet_101_256x192": 0.714, "pose_resnet_101_384x288": 0.736,
    "pose_resnet_152_256x192": 0.720, "pose_resnet_152_384x288": 0.743,
    "pose_resnet_50_256x192_mmpose": 0.718, "pose_resnet_50_384x288_mmpose": 0.731,
    "pose_resnet_101_256x192_mmpose": 0.726, "pose_resnet_101_384x288_mmpose": 0.748,
    "pose_resnet_152_256x192_mmpose": 0.735, "pose_resnet_152_384x288_mmpose": 0.750,
}
HEAD_PREFIXES = ("deconv_layers.", "final_layer.")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEKIT_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "checkpoints"


@pytest.fixture(scope="module")
def res18_state():
    torch.manual_seed(1)
    model = pose_resnet(18)
    # Non-trivial BatchNorm statistics, so a missed buffer would change the output.
    for name, buffer in model.named_buffers():
        if name.endswith("running_var"):
            buffer.uniform_(0.5, 2.0)
        elif name.endswith("running_mean"):
            buffer.uniform_(-0.5, 0.5)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_loaded(model, state):
    loaded = model.state_dict()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


# --- registry -------------------------------------------------------------------------------

def test_registry_holds_the_official_and_mmpose_coco_models_with_reported_ap():
    assert {name: w.reported_ap["AP"] for name, w in weights.WEIGHTS.items()} == REPORTED_AP
    assert weights.DEFAULT_WEIGHTS == "pose_resnet_50_256x192"


@pytest.mark.parametrize("name", [n for n in REPORTED_AP if not n.endswith("_mmpose")])
def test_official_entries_are_bgr_from_the_authors_drive_folder(name):
    entry = weights.get_weights(name)
    depth, height, width = map(int, re.fullmatch(r"pose_resnet_(\d+)_(\d+)x(\d+)", name).groups())
    assert (entry.depth, entry.input_size, entry.style) == (depth, (width, height), "pytorch")
    assert entry.channel_order == "bgr" and entry.key_format == "official"
    assert entry.gdrive_folder == "13_wJ6nC7my1KKouMkQMqyr9r1ZnLnukP"
    assert entry.gdrive_path == f"pose_coco/{name}.pth.tar" and entry.url is None
    assert entry.mean == (0.485, 0.456, 0.406) and entry.std == (0.229, 0.224, 0.225)


@pytest.mark.parametrize("name", [n for n in REPORTED_AP if n.endswith("_mmpose")])
def test_mmpose_entries_are_rgb_urls_with_the_sha256_prefix_of_their_file_name(name):
    entry = weights.get_weights(name)
    depth, height, width = map(int, re.fullmatch(r"pose_resnet_(\d+)_(\d+)x(\d+)_mmpose", name).groups())
    assert (entry.depth, entry.input_size) == (depth, (width, height))
    assert entry.channel_order == "rgb" and entry.key_format == "mmpose"
    folder = re.escape("https://download.openmmlab.com/mmpose/top_down/resnet/")
    match = re.fullmatch(rf"{folder}res{depth}_coco_{height}x{width}-([0-9a-f]{{8}})_2020070[89]\.pth", entry.url)
    assert match and entry.sha256 == match.group(1)
    assert entry.filename == entry.url.rsplit("/", 1)[1]


def test_geometry_properties():
    small, large = weights.get_weights("pose_resnet_50_256x192"), weights.get_weights("pose_resnet_152_384x288")
    assert small.spec.heatmap_size == (48, 64) and small.spec.aspect_ratio == 0.75
    assert large.spec.heatmap_size == (72, 96) and large.spec.aspect_ratio == 0.75


def test_unknown_name_lists_known_names():
    with pytest.raises(CheckpointError, match="unknown weights 'resnet9000'.*pose_resnet_50_256x192"):
        weights.get_weights("resnet9000")


def test_cached_weights_path(cache):
    assert weights.cached_weights_path("pose_resnet_50_256x192") is None
    cache.mkdir(parents=True)
    (cache / "pose_resnet_50_256x192.pth.tar").write_bytes(b"x")
    assert weights.cached_weights_path("pose_resnet_50_256x192") == cache / "pose_resnet_50_256x192.pth.tar"


# --- preprocessing --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def crops():
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (3, 3, 16, 12), generator=generator).float()


def test_bgr_preprocessing_equals_normalize_on_a_bgr_tensor(crops):
    bgr = torch.stack([crops[:, 2], crops[:, 1], crops[:, 0]], dim=1) / 255
    expected = TF.normalize(bgr, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    torch.testing.assert_close(weights.get_weights("pose_resnet_50_256x192").spec.preprocess(crops), expected)


def test_bgr_preprocessing_equals_the_official_opencv_pipeline(crops):
    # Official: cv2 BGR uint8 image -> ToTensor (/255) -> Normalize(mean, std) channel by channel.
    rgb_images = crops.permute(0, 2, 3, 1).numpy().astype(np.uint8)
    bgr = np.stack([cv2.cvtColor(image, cv2.COLOR_RGB2BGR) for image in rgb_images]).astype(np.float64) / 255
    expected = (bgr - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    result = preprocess_crops(crops.double(), "bgr")
    np.testing.assert_allclose(result.permute(0, 2, 3, 1).numpy(), expected, rtol=0, atol=1e-12)
    assert result.dtype == torch.float64


def test_rgb_preprocessing_equals_normalize(crops):
    expected = TF.normalize(crops / 255, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    torch.testing.assert_close(weights.get_weights("pose_resnet_50_256x192_mmpose").spec.preprocess(crops), expected)


def test_preprocessing_rejects_bad_input(crops):
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        preprocess_crops(crops[0], "rgb")
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        preprocess_crops(crops.to(torch.uint8), "rgb")
    with pytest.raises(ValueError, match="channel_order"):
        preprocess_crops(crops, "hsv")


# --- reading checkpoints --------------------------------------------------------------------

@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: s,
        lambda s: {"state_dict": s, "epoch": 140},
        lambda s: {"model": s, "optimizer": {"lr": 0.001}},
        lambda s: {"state_dict_ema": s},
        lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}, "perf": 0.7},
    ],
    ids=["plain", "state_dict", "model", "state_dict_ema", "dataparallel"],
)
def test_load_checkpoint_unwraps_containers(tmp_path, res18_state, wrap):
    path = tmp_path / "ckpt.pth"
    torch.save(wrap(res18_state), path)
    state = weights.load_checkpoint(path)
    assert list(state) == list(res18_state)
    assert all(torch.equal(state[k], res18_state[k]) for k in res18_state)


@pytest.mark.parametrize("head_prefix", ["keypoint_head.", "head."], ids=["mmpose0x", "mmpose1x"])
def test_mmpose_checkpoints_convert_and_load(tmp_path, res18_state, head_prefix):
    mmpose_state = {
        (head_prefix if k.startswith(HEAD_PREFIXES) else "backbone.") + k: v for k, v in res18_state.items()
    }
    path = tmp_path / "res18_mmpose.pth"
    torch.save({"meta": {"mmcv_version": "1.0.5", "epoch": 210}, "state_dict": mmpose_state}, path)
    model = weights.load_weights(pose_resnet(18), path)
    _assert_loaded(model, res18_state)


def test_save_and_reload_round_trips_bit_exactly(tmp_path, res18_state):
    source = pose_resnet(18).eval()
    source.load_state_dict(res18_state)
    path = tmp_path / "roundtrip.pth"
    torch.save(source.state_dict(), path)
    torch.manual_seed(123)  # a differently initialised target
    target = weights.load_weights(pose_resnet(18), path).eval()
    _assert_loaded(target, res18_state)
    images = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        assert torch.equal(source(images), target(images))


def test_old_pytorch_checkpoint_without_batch_counters_loads(tmp_path, res18_state):
    old = {k: v for k, v in res18_state.items() if not k.endswith("num_batches_tracked")}
    assert len(old) < len(res18_state)
    path = tmp_path / "pose_resnet_18_old.pth.tar"
    torch.save(old, path, _use_new_zipfile_serialization=False)  # pre-1.6 file format
    _assert_loaded(weights.load_weights(pose_resnet(18), path), old)


def test_wrong_architecture_gives_one_error_listing_keys_and_what_it_looks_like(tmp_path, res18_state):
    path = tmp_path / "res18.pth"
    torch.save(res18_state, path)
    with pytest.raises(CheckpointError) as info:
        weights.load_weights(pose_resnet(34), path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert "model (pose_resnet_34 with 17 joints)" in message
    assert "looks like pose_resnet_18 with 17 joints (posekit/official keys)" in message
    assert "missing" in message and "layer1.2.conv1.weight" in message and "more)" in message
    assert "unexpected" not in message


def test_shape_mismatch_and_unexpected_keys_are_reported_together(tmp_path):
    state = pose_resnet(18, num_joints=5).state_dict()
    state = {f"backbone.{k}" if not k.startswith(HEAD_PREFIXES) else f"keypoint_head.{k}": v for k, v in state.items()}
    state["keypoint_head.extra.weight"] = torch.zeros(1)
    path = tmp_path / "res18_5joints.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError) as info:
        weights.load_weights(pose_resnet(18), path)
    message = str(info.value)
    assert "looks like pose_resnet_18 with 5 joints (mmpose 0.x keys)" in message
    assert "unexpected 1: extra.weight" in message
    assert "wrong shape 2: final_layer.weight, final_layer.bias" in message
    assert "(5, 256, 1, 1) vs (17, 256, 1, 1)" in message


def test_unreadable_files_raise_checkpoint_error_naming_the_file(tmp_path, res18_state):
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n" * 100)
    full = tmp_path / "full.pth"
    torch.save(res18_state, full)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    for path in (text, truncated, empty):
        with pytest.raises(CheckpointError, match=rf"{re.escape(str(path))} is not a readable PyTorch checkpoint"):
            weights.load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        weights.load_checkpoint(tmp_path / "missing.pth")


def test_a_file_without_a_state_dict_is_rejected(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="holds no state_dict.*list"):
        weights.load_checkpoint(path)
    torch.save({"epoch": 3, "arch": "resnet"}, path)
    with pytest.raises(CheckpointError, match=r"holds no state_dict.*\['epoch', 'arch'\]"):
        weights.load_checkpoint(path)


def test_numpy_training_metadata_loads_with_the_safe_loader(tmp_path, res18_state):
    # mmcv-style training metadata holds numpy scalars and arrays: plain data, no code to run.
    path = tmp_path / "with_meta.pth"
    meta = {"hook_msgs": {"best_score": np.float64(0.718)}, "epoch": np.int64(210), "mean": np.zeros(3)}
    torch.save({"meta": meta, "state_dict": res18_state}, path)
    state = weights.load_checkpoint(path)
    assert all(torch.equal(state[k], res18_state[k]) for k in res18_state)


class Exploit:
    """Unpickling this runs ``Path(marker).write_text(...)``: any code could run instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "arbitrary code ran"))


def test_a_pickle_that_runs_code_is_refused_without_running_it(tmp_path, res18_state):
    marker = tmp_path / "owned"
    path = tmp_path / "innocent_looking.pth"
    torch.save({"state_dict": res18_state, "extra": Exploit(marker)}, path)
    with pytest.raises(CheckpointError, match="without a verified sha256"):
        weights.load_weights(pose_resnet(18), path)
    assert not marker.exists()
    # Only the caller of the low-level reader can ask for full unpickling (a verified file).
    weights.load_checkpoint(path, trusted=True)
    assert marker.read_text() == "arbitrary code ran"


def _registered(monkeypatch, name: str, path: Path, sha256: str) -> None:
    entry = dataclasses.replace(
        weights.get_weights("pose_resnet_50_256x192_mmpose"), name=name, depth=18, filename=path.name,
        url=f"http://127.0.0.1:9/{path.name}", sha256=sha256,
    )
    monkeypatch.setitem(weights.WEIGHTS, name, entry)


def test_trust_comes_from_a_full_verified_sha256_only(cache, res18_state, monkeypatch):
    cache.mkdir(parents=True)
    marker = cache.parent / "owned"
    path = cache / "tiny18.pth"
    torch.save({"state_dict": res18_state, "extra": Exploit(marker)}, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    # A name and a place in the cache, even with a matching 8-digit prefix (forgeable), are not trust.
    _registered(monkeypatch, "tiny18", path, digest[:8])
    with pytest.raises(CheckpointError, match="without a verified sha256"):
        weights.load_weights(pose_resnet(18), "tiny18")
    assert not marker.exists()
    # The full digest, verified on this file: fully unpickled.
    _registered(monkeypatch, "tiny18", path, digest)
    _assert_loaded(weights.load_weights(pose_resnet(18), "tiny18"), res18_state)
    assert marker.exists()


def test_a_file_placed_in_the_cache_under_a_registered_name_is_not_trusted(cache, res18_state):
    cache.mkdir(parents=True)
    marker = cache.parent / "owned"
    # The official releases publish no checksum: whatever sits under their name is read safely.
    torch.save({"state_dict": res18_state, "extra": Exploit(marker)}, cache / "pose_resnet_50_256x192.pth.tar")
    with pytest.raises(CheckpointError, match="holds Python objects besides tensors"):
        weights.load_weights(pose_resnet(50), "pose_resnet_50_256x192")
    assert not marker.exists()


def _zip_checkpoint(path: Path, pickled: bytes, records: dict[str, bytes]) -> Path:
    """A checkpoint in torch's zip layout with the given data.pkl and storage records."""
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", pickled)
        archive.writestr("archive/version", "3\n")
        for name, data in records.items():
            archive.writestr(f"archive/data/{name}", data)
    return path


def test_a_small_file_declaring_huge_storage_is_refused_before_loading(tmp_path, monkeypatch):
    import io
    import pickle

    class Storage:
        pass

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):  # how torch.save refers to a storage: its element count is declared
            return ("storage", "FloatStorage", "0", "cpu", 2**40) if isinstance(obj, Storage) else None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump({"final_layer.weight": Storage()})
    path = _zip_checkpoint(tmp_path / "bomb.pth", buffer.getvalue(), {"0": bytes(16)})
    assert path.stat().st_size < 2000

    def must_not_load(*args, **kwargs):
        raise AssertionError("torch.load was reached")

    monkeypatch.setattr(torch, "load", must_not_load)
    with pytest.raises(CheckpointError, match=r"declares 8192\.0 GiB of tensors in a 0\.0 MiB file.*refused unread"):
        weights.load_checkpoint(path)


def test_a_zip_bomb_tensor_index_is_refused_before_it_is_unpacked(tmp_path):
    import zipfile

    path = tmp_path / "index_bomb.pth"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", bytes(65 * 2**20))  # compresses to ~64 kB
    assert path.stat().st_size < 2**20
    with pytest.raises(CheckpointError, match=r"declares a 65 MiB tensor index \(data\.pkl\).*refused unread"):
        weights.load_checkpoint(path)


def test_real_checkpoints_pass_the_size_check(tmp_path, res18_state):
    for legacy in (False, True):
        path = tmp_path / f"res18_{legacy}.pth"
        torch.save({"state_dict": res18_state, "optimizer": {"exp_avg": list(res18_state.values())}}, path,
                   _use_new_zipfile_serialization=not legacy)
        weights.check_declared_sizes(path)  # no error
        with pytest.raises(CheckpointError, match="refused unread"):
            weights.check_declared_sizes(path, limit=path.stat().st_size // 4)


# --- what the checkpoint says about its preprocessing --------------------------------------------


def _mmpose_keys(state: dict, head: str) -> dict:
    return {(head if k.startswith(HEAD_PREFIXES) else "backbone.") + k: v for k, v in state.items()}


@pytest.mark.parametrize(
    "content, key_format, data_parallel, order",
    [
        (lambda s: s, "official", False, "bgr"),
        (lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}, "perf": 0.7, "epoch": 3}, "official",
         True, "bgr"),
        (lambda s: {"state_dict": _mmpose_keys(s, "keypoint_head."), "meta": {}}, "mmpose 0.x", False, "rgb"),
        (lambda s: {"state_dict": _mmpose_keys(s, "head."), "meta": {}}, "mmpose 1.x", False, "rgb"),
        (lambda s: {"model": s, "optimizer": {}}, "official", False, None),
        (lambda s: {"state_dict_ema": s}, "official", False, None),
    ],
    ids=["official-release", "official-trainer-dataparallel", "mmpose0x", "mmpose1x", "other-trainer", "ema"],
)
def test_reading_reports_the_key_format_and_the_channel_order_it_implies(
    tmp_path, res18_state, content, key_format, data_parallel, order
):
    path = tmp_path / "any_name.pth"
    torch.save(content(res18_state), path)
    checkpoint = weights.read_checkpoint(path)
    assert (checkpoint.key_format, checkpoint.data_parallel, checkpoint.channel_order) == (
        key_format, data_parallel, order)
    assert list(checkpoint.state_dict) == list(res18_state)


def test_the_model_is_fed_as_its_checkpoint_says_unless_told_otherwise(tmp_path, res18_state):
    mmpose = tmp_path / "my_model.pth"
    torch.save({"state_dict": _mmpose_keys(res18_state, "head.")}, mmpose)
    official = tmp_path / "my_other_model.pth"
    torch.save(res18_state, official)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # both orders are known: no warning
        assert weights.load_weights(pose_resnet(18), mmpose).input_spec.channel_order == "rgb"
        assert weights.load_weights(pose_resnet(18), official).input_spec.channel_order == "bgr"
    assert weights.load_weights(pose_resnet(18), mmpose, channel_order="bgr").input_spec.channel_order == "bgr"
    # A registry entry wins by its file name: this release name is mmpose's, trained on RGB.
    renamed = tmp_path / "res50_coco_384x288-e6f795e9_20200709.pth"
    renamed.write_bytes(official.read_bytes())
    spec = weights.load_weights(pose_resnet(18), renamed).input_spec
    assert (spec.channel_order, spec.input_size) == ("rgb", (288, 384))


def test_one_warning_when_the_channel_order_cannot_be_known(tmp_path, res18_state):
    path = tmp_path / "from_elsewhere.pth"
    torch.save({"model": res18_state}, path)
    with pytest.warns(UserWarning, match="cannot be known.*'model' container.*channel_order='rgb'") as record:
        model = weights.load_weights(pose_resnet(18), path)
    assert len(record) == 1 and model.input_spec.channel_order == "bgr"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert weights.load_weights(pose_resnet(18), path, channel_order="rgb").input_spec.channel_order == "rgb"


def test_posekit_checkpoints_carry_their_input_spec(tmp_path, res18_state):
    source = pose_resnet(18, num_joints=17)
    source.load_state_dict(res18_state)
    source.input_spec = source.input_spec.replace(channel_order="rgb", input_size=(96, 128), mean=(0.5, 0.5, 0.5))
    path = weights.save_checkpoint(source, tmp_path / "finetuned.pth")
    model = weights.load_model(weights.resolve_weights(path))
    assert model.input_spec == source.input_spec
    _assert_loaded(model, res18_state)


def test_load_model_builds_the_architecture_of_the_checkpoint(tmp_path):
    source = pose_resnet(34, num_joints=5)
    path = tmp_path / "five_joints.pth"
    torch.save(source.state_dict(), path)
    model = weights.load_model(weights.resolve_weights(path))
    assert weights.describe_state_dict(model.state_dict()) == "pose_resnet_34 with 5 joints"
    assert model.input_spec.num_keypoints == 5 and model.input_spec.flip_pairs == ()


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_architecture_is_recognised_from_the_official_manifest(depth):
    manifest = json.loads((Path(__file__).parent / "data" / "official_pose_resnet.json").read_text())
    state = {k: torch.empty(shape, device="meta") for k, shape in manifest[f"pose_resnet_{depth}_pytorch"].items()}
    assert weights.describe_state_dict(state) == f"pose_resnet_{depth} with 17 joints"
    assert weights.describe_state_dict({"conv.weight": torch.zeros(1)}) == "no PoseResNet (keys start ['conv.weight'])"


def test_unknown_source_is_named_in_the_error():
    with pytest.raises(CheckpointError, match="'nowhere.pth' are neither a registered name.*existing file nor a URL"):
        weights.load_weights(pose_resnet(18), "nowhere.pth")


# --- CLI --------------------------------------------------------------------------------------

def test_cli_weights_list_shows_registry_and_cache_status(cache, capsys):
    cache.mkdir(parents=True)
    (cache / "pose_resnet_101_384x288.pth.tar").write_bytes(b"x")
    assert main(["weights", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert header == ["name", "depth", "input", "channels", "AP", "source", "cached"]
    rows = {line.split()[0]: line.split() for line in lines[1:] if line.startswith("pose_resnet")}
    assert set(rows) == set(REPORTED_AP)
    assert rows["pose_resnet_50_256x192"][:5] == ["pose_resnet_50_256x192", "50", "256x192", "BGR", "0.704"]
    assert rows["pose_resnet_152_384x288_mmpose"][1:5] == ["152", "384x288", "RGB", "0.750"]
    assert rows["pose_resnet_101_384x288"][-1] == "yes"
    assert sum(row[-1] == "no" for row in rows.values()) == 11
