"""Training: keypoint sets, the synthetic data, the paper's batch geometry and loss, learning on a CPU,
exact resume, DDP under torchrun (gloo) and torchrun-sharded COCO evaluation.

Small everywhere (ResNet-18, 64-96 px crops, a few dozen synthetic people) so the file runs in a
few minutes on two CPU cores.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from posekit.core.crop import affine_matrix
from posekit.core.heatmaps import encode
from posekit.core.keypoints import COCO17, DEFAULT_SIGMA, KeypointSet
from posekit.core.spec import preprocess_crops
from posekit.train.synthetic import HANDS_FEET, make_synthetic_coco
from posekit.train.trainer import (
    SCHEDULES,
    KeypointPeople,
    ModelSpec,
    TrainConfig,
    Trainer,
    collate_people,
    joints_mse,
    load_trained,
    pck,
    predict_people,
    training_batch,
)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "posekit" / "data" / "coco_sample"
PYTHON = sys.executable
TORCHRUN = [PYTHON, "-m", "torch.distributed.run"]
# COCO's left/right pairs, written out here rather than imported.
COCO_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


# ---------------------------------------------------------------------------------------------
# Keypoint sets and synthetic data
# ---------------------------------------------------------------------------------------------


def test_keypoint_set_from_the_coco_sample_is_coco17():
    category = json.loads((SAMPLE / "test_coco.json").read_text())["categories"][0]
    found = KeypointSet.from_coco(category, sigmas=COCO17.sigmas)
    assert found == COCO17
    assert found.flip_pairs == COCO_PAIRS  # paired by name alone
    assert found.skeleton[0] == (15, 13)  # COCO's first limb [16, 14], 1-based


def test_keypoint_set_pairs_names_in_several_spellings_and_defaults_sigmas():
    category = {"keypoints": ["Left Paw", "nose", "Right Paw", "l_ear", "tail", "r_ear", "left-eye", "right-eye"],
                "skeleton": [[1, 2], [2, 3]]}
    found = KeypointSet.from_coco(category)
    assert found.flip_pairs == ((0, 2), (3, 5), (6, 7))
    assert found.skeleton == ((0, 1), (1, 2))
    assert found.sigmas == (DEFAULT_SIGMA,) * 8
    assert DEFAULT_SIGMA == pytest.approx(1.138 / 17)  # the mean of COCO's 17 sigmas
    assert list(found.flip_index) == [2, 1, 0, 5, 4, 3, 7, 6]
    assert KeypointSet.from_coco(category, flip_pairs=[(0, 2)]).flip_pairs == ((0, 2),)
    assert KeypointSet.from_dict(found.to_dict()) == found


def test_keypoint_set_rejects_what_does_not_fit():
    from posekit.errors import AnnotationError

    with pytest.raises(AnnotationError, match="keypoints"):
        KeypointSet.from_coco({"name": "cat"})
    with pytest.raises(AnnotationError, match="outside 0..1"):
        KeypointSet.from_coco({"keypoints": ["a", "b"], "skeleton": [[1, 3]]})
    with pytest.raises(AnnotationError, match="2 positive"):
        KeypointSet.from_coco({"keypoints": ["a", "b"]}, sigmas=[0.1])


def test_synthetic_data_is_reproducible_coco_in_any_keypoint_set(tmp_path):
    from pycocotools.coco import COCO

    settings = dict(num_images=3, people_per_image=2, image_size=(160, 120), seed=5)
    ann_a, images = make_synthetic_coco(tmp_path / "a", **settings)
    ann_b, _ = make_synthetic_coco(tmp_path / "b", **settings)
    ann_five, _ = make_synthetic_coco(tmp_path / "five", **settings, keypoint_set=HANDS_FEET)
    assert ann_a.read_text() == ann_b.read_text()
    first = "images/000000000001.png"
    assert (tmp_path / "a" / first).read_bytes() == (tmp_path / "b" / first).read_bytes() == (tmp_path / "five" / first).read_bytes()
    coco, five = COCO(str(ann_a)), COCO(str(ann_five))
    assert len(coco.getImgIds()) == 3 and len(coco.getAnnIds()) == 6
    assert five.loadCats(1)[0]["keypoints"] == ["head", "left_hand", "right_hand", "left_foot", "right_foot"]
    for ann, ann5 in zip(coco.loadAnns(coco.getAnnIds()), five.loadAnns(five.getAnnIds())):
        rows = np.reshape(ann["keypoints"], (17, 3))
        labelled = rows[rows[:, 2] > 0]
        x, y, w, h = ann["bbox"]
        assert ((labelled[:, :2] >= [x, y]) & (labelled[:, :2] <= [x + w, y + h])).all()
        # The same bodies: head = nose, hands = wrists, feet = ankles.
        np.testing.assert_array_equal(np.reshape(ann5["keypoints"], (5, 3)), rows[[0, 9, 10, 15, 16]])


def test_every_synthetic_joint_is_painted():
    from PIL import Image, ImageDraw

    from posekit.train.synthetic import body_joints, draw_figure

    rng = np.random.default_rng(0)
    facings = np.tile([1.0, -1.0], 10)
    bodies = body_joints(rng, 20) * np.stack([facings, np.ones(20)], 1)[:, None] * 100 + [150, 10]
    for facing, joints in zip(facings, bodies):
        canvas = Image.new("RGB", (300, 120))
        draw_figure(ImageDraw.Draw(canvas), joints, 100, facing, rng)
        pixels = np.asarray(canvas).astype(int).sum(2)
        assert (pixels[np.round(joints[:, 1]).astype(int), np.round(joints[:, 0]).astype(int)] > 0).all()


def test_skeletons_of_a_custom_keypoint_set_are_drawn_with_its_limbs_and_sides():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.colors import to_rgba

    from posekit.errors import PosekitError
    from posekit.viz import SIDE_COLORS, draw_skeleton

    keypoints = np.array([[[50, 10, 1], [70, 40, 1], [30, 40, 1], [60, 90, 1], [40, 90, 1]]] * 2, dtype=float)
    ax = draw_skeleton(np.zeros((100, 100, 3), np.uint8), keypoints, keypoint_set=HANDS_FEET)
    limbs = next(c for c in ax.collections if c.get_label() == "limbs")
    joints = next(c for c in ax.collections if c.get_label() == "joints")
    assert len(limbs.get_segments()) == 2 * 4  # head to each hand and foot, per person
    colors = [tuple(c[:3]) for c in joints.get_facecolors()[:5]]
    assert colors[0] == to_rgba(SIDE_COLORS["center"])[:3]
    assert colors[1] == colors[3] == to_rgba(SIDE_COLORS["left"])[:3]
    assert colors[2] == colors[4] == to_rgba(SIDE_COLORS["right"])[:3]
    with pytest.raises(PosekitError, match=r"\(5, 3\)"):
        draw_skeleton(np.zeros((100, 100, 3), np.uint8), np.zeros((17, 3)), keypoint_set=HANDS_FEET)


def test_imagenet_init_offline_fails_in_one_sentence(tmp_path, monkeypatch):
    from posekit.errors import DownloadError
    from posekit.train.trainer import build_model

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens: refused at once
    with pytest.raises(DownloadError, match=r"ImageNet resnet18 weights .* cannot be downloaded .* --init none"):
        build_model(18, COCO17, "imagenet")


# ---------------------------------------------------------------------------------------------
# The paper's batch geometry and loss, against independent computations
# ---------------------------------------------------------------------------------------------


def test_training_batch_matches_the_official_per_person_pipeline(tmp_path):
    """Flip the image, joints and centre as the official loader does, crop with OpenCV, encode:
    the same crops and targets as posekit's one-grid_sample batch with the mirror folded in."""
    ann, images = make_synthetic_coco(tmp_path, num_images=2, people_per_image=2, image_size=(160, 120), seed=1)
    size = (64, 96)
    people = KeypointPeople(ann, images, size)
    spec = ModelSpec(18, size, "rgb", 2.0, COCO17)
    indices = np.array([0, 1, 2, 3])
    augmentation = np.array([[1.2, 30.0, 1.0], [0.8, -45.0, 0.0], [1.0, 0.0, 1.0], [1.3, 80.0, 1.0]])
    augmentation = np.concatenate([augmentation, np.zeros((4, 2))], 1)  # no half-body crops
    items = [(people[i][0], i, a) for i, a in zip(indices, augmentation)]
    batch, widths, got_indices, got_aug = collate_people(items)
    inputs, targets, weights = training_batch(batch, widths, people, got_indices, got_aug, spec, torch.device("cpu"))

    for slot, (index, (multiplier, angle, flip, _, _)) in enumerate(zip(indices, augmentation)):
        image = cv2.cvtColor(cv2.imread(str(images / f"{people.image_ids[index]:012d}.png")), cv2.COLOR_BGR2RGB)
        joints, visible = people.joints[index].copy(), people.visibility[index].copy()
        center = people.centers[index].astype(np.float64).copy()
        if flip:
            image = image[:, ::-1]
            joints[:, 0] = image.shape[1] - joints[:, 0] - 1
            for left, right in COCO_PAIRS:
                joints[[left, right]] = joints[[right, left]]
                visible[[left, right]] = visible[[right, left]]
            center[0] = image.shape[1] - center[0] - 1
        matrix = affine_matrix(center, people.scales[index] * multiplier, angle, size)
        crop = cv2.warpAffine(np.ascontiguousarray(image).astype(np.float32), matrix, size, flags=cv2.INTER_LINEAR)
        expected = preprocess_crops(torch.from_numpy(crop).permute(2, 0, 1)[None], "rgb")[0]
        np.testing.assert_allclose(inputs[slot].numpy(), expected.numpy(), atol=0.02)
        in_crop = joints @ matrix[:, :2].T + matrix[:, 2]
        target, weight = encode(in_crop[None], visible[None], size, (16, 24), 2.0)
        np.testing.assert_array_equal(targets[slot].numpy(), target[0])
        np.testing.assert_array_equal(weights[slot].numpy(), weight[0])
    assert weights.sum() > 0 and targets.amax() == 1.0


def test_half_body_boxes_follow_hrnets_rule():
    from posekit.train.trainer import half_body_boxes

    rng = np.random.default_rng(0)
    joints = rng.uniform(0, 200, (300, 17, 2))
    visibility = (rng.random((300, 17)) < rng.uniform(0.2, 1.0, (300, 1))).astype(float)
    prefer = rng.random(300) < 0.69
    upper = np.arange(17) < 11  # nose ... wrists
    centers, scales, usable = half_body_boxes(joints, visibility, upper, prefer, 0.75)
    # HRNet's half_body_transform, person by person.
    for n in range(300):
        seen = visibility[n] > 0
        ups, lows = joints[n][seen & upper], joints[n][seen & ~upper]
        chosen = ups if prefer[n] and len(ups) > 2 else (lows if len(lows) > 2 else ups)
        expect = seen.sum() > 8 and len(chosen) >= 2
        assert usable[n] == expect
        if expect:
            chosen = chosen.astype(np.float32)
            w, h = chosen.max(0) - chosen.min(0)
            w, h = (w, w / 0.75) if w > 0.75 * h else (h * 0.75, h)
            np.testing.assert_allclose(centers[n], chosen.mean(0), rtol=1e-6)
            np.testing.assert_allclose(scales[n], np.array([w, h]) / 200 * 1.5, rtol=1e-6)
    assert 0.2 < usable.mean() < 0.9


def test_joints_mse_is_the_official_per_joint_loss():
    generator = torch.Generator().manual_seed(0)
    heatmaps, targets = torch.rand(3, 5, 8, 6, generator=generator), torch.rand(3, 5, 8, 6, generator=generator)
    weights = (torch.rand(3, 5, generator=generator) > 0.3).float()
    # Per joint: MSE over people and pixels of weight-masked maps, halved; then the mean over joints.
    per_joint = [
        0.5 * torch.nn.functional.mse_loss(heatmaps[:, j] * weights[:, j, None, None], targets[:, j] * weights[:, j, None, None])
        for j in range(5)
    ]
    assert torch.allclose(joints_mse(heatmaps, targets, weights), torch.stack(per_joint).mean())


def test_augmentation_follows_the_paper_ranges(tmp_path):
    ann, images = make_synthetic_coco(tmp_path, num_images=2, people_per_image=2, image_size=(160, 120))
    people = KeypointPeople(ann, images, (64, 64), SCHEDULES["paper"], seed=3)
    draws = []
    for epoch in range(200):
        people.set_epoch(epoch)
        draws += [people.augmentation(i) for i in range(len(people))]
    scale, angle, flip, half_body, prefer_upper = np.transpose(draws)
    # N(1, 0.3) clipped at one sigma: std 0.3 * sqrt(P(|z| > 1) + E[z^2; |z| < 1]) = 0.2155.
    assert scale.min() >= 0.7 and scale.max() <= 1.3 and scale.std() == pytest.approx(0.2155, abs=0.02)
    assert np.abs(angle).max() <= 80 and 0.55 < (angle != 0).mean() < 0.65  # rotated with probability 0.6
    assert 0.45 < flip.mean() < 0.55
    assert half_body.sum() == 0  # off in the paper's recipe
    assert 0.64 < prefer_upper.mean() < 0.74  # HRNet's N(0, 1) < 0.5: 69%
    # The same person and epoch always get the same draw: no hidden state to resume.
    people.set_epoch(7)
    assert np.array_equal(people.augmentation(1), draws[7 * len(people) + 1])
    people.schedule = dataclasses.replace(SCHEDULES["paper"], half_body_probability=0.3)
    assert 0.25 < np.mean([_draw(people, epoch)[3] for epoch in range(800)]) < 0.35


def _draw(people: KeypointPeople, epoch: int) -> np.ndarray:
    people.set_epoch(epoch)
    return people.augmentation(0)


# ---------------------------------------------------------------------------------------------
# Learning, resume, checkpoints
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _config(root: Path, train: tuple[Path, Path], val: tuple[Path, Path] | None = None, **changes) -> TrainConfig:
    settings = dict(ann_file=train[0], image_dir=train[1], out=root / "out", depth=18, input_size=(64, 96),
                    init="none", workers=0, device="cpu", progress=False, batch_size=16, val_every=100)
    if val is not None:
        settings.update(val_ann_file=val[0], val_image_dir=val[1])
    return TrainConfig(**{**settings, **changes})


# Measured on this generator (seed 1 train, seed 2 validation): PCK@0.1 at initialisation 0.068
# (COCO-17) and 0.000 (5 joints): a joint lands near the truth only by chance; after 12 epochs
# 0.525 and 0.407, the loss from 0.0128 to 0.0071 and from 0.0120 to 0.0077.
@pytest.mark.parametrize("keypoint_set", [None, HANDS_FEET], ids=["coco17", "hands_feet"])
def test_a_small_model_learns_synthetic_people_on_the_cpu(tmp_path, torch_threads, keypoint_set):
    train = make_synthetic_coco(tmp_path / "train", num_images=40, people_per_image=3, image_size=(192, 144),
                                seed=1, keypoint_set=keypoint_set)
    val = make_synthetic_coco(tmp_path / "val", num_images=8, people_per_image=3, image_size=(192, 144),
                              seed=2, keypoint_set=keypoint_set)
    trainer = Trainer(_config(tmp_path, train, val, epochs=12))
    before = pck(predict_people(trainer.model, trainer.val_people, trainer.spec), trainer.val_people)
    history = trainer.run()
    after = history[-1]["pck"]
    print(f"PCK@0.1 {before:.3f} -> {after:.3f}; loss {history[0]['loss']:.5f} -> {history[-1]['loss']:.5f}")
    assert before < 0.15
    assert after > 0.3 and after > 3 * before
    assert history[-1]["loss"] < 0.75 * history[0]["loss"]
    # The checkpoint rebuilds the same model, with its keypoint set and input size.
    model, spec = load_trained(tmp_path / "out" / "last.pth")
    assert spec.keypoint_set == trainer.spec.keypoint_set and spec.input_size == (64, 96)
    assert pck(predict_people(model, trainer.val_people, spec), trainer.val_people) == after
    if keypoint_set is None:
        assert 0.0 <= history[-1]["ap"] <= 1.0  # COCO AP through posekit.eval.coco.evaluate
    log = (tmp_path / "out" / "log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,lr,loss,seconds") and len(log) == 13


def test_resume_continues_exactly(tmp_path, torch_threads):
    train = make_synthetic_coco(tmp_path / "train", num_images=4, people_per_image=2, image_size=(160, 120), seed=4)
    small = dict(input_size=(64, 64), batch_size=4)
    straight = Trainer(_config(tmp_path / "a", train, epochs=2, **small))
    straight.run()
    Trainer(_config(tmp_path / "b", train, epochs=1, **small)).run()
    resumed = Trainer(_config(tmp_path / "b", train, epochs=2, resume=tmp_path / "b" / "out" / "last.pth", **small))
    assert resumed.epoch == 1 and resumed.scheduler.last_epoch == 1
    resumed.run()
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    losses = [[row["loss"] for row in trainer.history] for trainer in (straight, resumed)]
    assert losses[0] == losses[1] and len(losses[0]) == 2
    # The checkpoint also loads where any checkpoint does (its "model" entry is the state_dict).
    from posekit.estimator import PoseEstimator

    estimator = PoseEstimator(tmp_path / "b" / "out" / "last.pth", depth=18, device="cpu")
    for (name, a), b in zip(estimator.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    # ... and is fed as it was trained: 64x64 RGB crops, COCO-17 joints.
    assert estimator.model.input_spec == resumed.spec.input_spec()
    assert estimator.model.input_spec.input_size == (64, 64) and estimator.model.input_spec.channel_order == "rgb"


def test_finetune_from_a_checkpoint_with_another_joint_count_reinitialises_only_the_head(tmp_path, torch_threads):
    coco = make_synthetic_coco(tmp_path / "coco", num_images=2, people_per_image=2, image_size=(160, 120), seed=6)
    five = make_synthetic_coco(tmp_path / "five", num_images=2, people_per_image=2, image_size=(160, 120), seed=6,
                               keypoint_set=HANDS_FEET)
    Trainer(_config(tmp_path / "first", coco, epochs=1, input_size=(64, 64))).run()
    first = tmp_path / "first" / "out" / "last.pth"
    tuned = Trainer(_config(tmp_path / "second", five, epochs=1, input_size=(64, 64), init=str(first), schedule="finetune"))
    source, _ = load_trained(first)
    for name, value in tuned.model.state_dict().items():
        if name.startswith("final_layer."):
            assert value.shape[0] == 5
        else:
            assert torch.equal(value, source.state_dict()[name]), name
    assert tuned.schedule.epochs == 1 and tuned.schedule.lr_steps == (9, 12)
    # The fine-tuned 5-joint model runs in PoseEstimator straight from its checkpoint.
    tuned.run()
    from posekit.estimator import PoseEstimator

    estimator = PoseEstimator(tmp_path / "second" / "out" / "last.pth", device="cpu")
    assert estimator.model.input_spec.keypoint_names == HANDS_FEET.names
    assert estimator.model.input_spec.flip_pairs == HANDS_FEET.flip_pairs
    assert estimator.keypoints(np.zeros((120, 160, 3), np.uint8), np.array([[10.0, 10, 50, 80]])).shape == (1, 5, 3)


def test_cli_trains_and_reports_bad_options_in_one_line(tmp_path):
    train = make_synthetic_coco(tmp_path / "data", num_images=2, people_per_image=2, image_size=(160, 120))
    base = [PYTHON, "-m", "posekit", "train", "--data", str(train[0]), "--images", str(train[1]), "--depth", "18",
            "--init", "none", "--workers", "0", "--device", "cpu", "--no-progress", "--batch-size", "4"]
    done = subprocess.run(base + ["--input", "64x64", "--epochs", "1", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=_env(), timeout=600)
    assert done.returncode == 0, done.stderr
    assert "trained 1 epochs" in done.stdout and (tmp_path / "out" / "last.pth").is_file()
    coco = [PYTHON, "-m", "posekit", "train", "--data", "coco", "--images", str(tmp_path / "nowhere")]
    for command, message in ((base + ["--input", "60x48"], "multiples of 32"),
                             (base + ["--input", "64x64", "--amp"], "CUDA"),
                             (base + ["--input", "64x64", "--resume", str(train[0])], "not a checkpoint"),
                             (coco, "person_keypoints_train2017.json")):
        failed = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=600)
        assert failed.returncode == 1 and failed.stderr.startswith("posekit train: error: ") and message in failed.stderr
        assert len(failed.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# torchrun: DDP training and sharded evaluation (gloo, CPU)
# ---------------------------------------------------------------------------------------------


def test_ddp_ranks_agree_and_equal_one_process_on_the_global_batch(tmp_path, torch_threads):
    """2 processes x 2 people per step against one process on the same 4 people, step by step.

    BatchNorm in training mode normalises with the statistics of the batch it sees: each DDP
    rank with its own 2 people (torch's SyncBatchNorm, which would pool them, needs CUDA). So
    the one-process reference runs the global batch as the two ranks' halves, each through the
    network on its own, and averages their losses: exactly what DDP's gradient averaging
    computes, with nothing shared but the data order (DistributedSampler hands rank r the
    positions r, r + 2, ... of the same permutation).
    """
    train = make_synthetic_coco(tmp_path / "data", num_images=4, people_per_image=2, image_size=(160, 120), seed=8)
    steps = 2
    done = subprocess.run(
        TORCHRUN + ["--nproc-per-node", "2", "--master-port", "29517", str(ROOT / "tests" / "ddp_train_worker.py"),
                    str(train[0]), str(train[1]), str(tmp_path), str(steps), "2"],
        capture_output=True, text=True, env=_env(), timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    reference = Trainer(_config(tmp_path / "ref", train, input_size=(64, 64), batch_size=4))
    for step, (inputs, targets, weights) in zip(range(steps), reference.batches(0)):
        ranks = [torch.load(tmp_path / f"rank{r}_step{step}.pt") for r in (0, 1)]
        if step:  # each step from the weights DDP reached, so rounding cannot pile up over steps
            reference.model.load_state_dict(torch.load(tmp_path / f"rank0_step{step - 1}.pt")["params"], strict=False)
        reference.model.train()
        halves = [joints_mse(reference.model(inputs[r::2]), targets[r::2], weights[r::2]) for r in (0, 1)]
        reference.optimizer.zero_grad()
        (sum(halves) / 2).backward()
        for name, value in reference.model.named_parameters():
            assert torch.equal(ranks[0]["params"][name], ranks[1]["params"][name]), f"step {step}: ranks differ in {name}"
            # Summation order differs (all-reduce of two halves vs one backward): float32 rounding.
            error = (ranks[0]["grads"][name] - value.grad).abs().max() / value.grad.abs().max()
            assert error < 1e-4, f"step {step}: {name} gradient off by {error:.2g} of its largest element"
        if step == 0:
            reference.optimizer.step()  # the same Adam step from the same start: the same weights
            for name, value in reference.model.named_parameters():
                torch.testing.assert_close(ranks[0]["params"][name], value.detach(), atol=1e-5, rtol=0, msg=name)
    assert step == steps - 1, "every DDP step was compared"


def test_torchrun_eval_gives_the_one_process_results(tmp_path):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    shutil.copytree(SAMPLE, root / "val2017")
    shutil.copy(SAMPLE / "test_coco.json", root / "annotations" / "person_keypoints_val2017.json")
    from posekit.models.pose_resnet import pose_resnet

    torch.manual_seed(0)
    weights = tmp_path / "random_res50.pth"
    torch.save(pose_resnet(50).state_dict(), weights)
    args = ["-m", "posekit", "eval", "--coco-root", str(root), "--weights", str(weights), "--workers", "0",
            "--device", "cpu", "--max-batch", "4"]
    env = {**_env(), "POSEKIT_HOME": str(tmp_path / "cache")}
    single = subprocess.run([PYTHON, *args, "--out", str(tmp_path / "one.json")], capture_output=True, text=True,
                            env=env, timeout=600)
    assert single.returncode == 0, single.stderr
    multi = subprocess.run(TORCHRUN + ["--nproc-per-node", "2", "--master-port", "29518", *args,
                                       "--out", str(tmp_path / "two.json")],
                           capture_output=True, text=True, env=env, timeout=600)
    assert multi.returncode == 0, multi.stderr[-3000:]
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    # Random weights: AP is ~0, so the strong check is person by person, after OKS-NMS.
    assert len(one) == len(two) > 0
    assert [(r["image_id"], r["score"]) for r in one] == [(r["image_id"], r["score"]) for r in two]
    np.testing.assert_allclose([r["keypoints"] for r in one], [r["keypoints"] for r in two], atol=1e-4)
    table = lambda text: [line for line in text.splitlines() if line.startswith(("AP", "AR"))]  # noqa: E731
    assert table(single.stdout) == table(multi.stdout) and len(table(single.stdout)) == 10
