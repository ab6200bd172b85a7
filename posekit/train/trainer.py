"""Training and fine-tuning SimpleBaseline with the paper's recipe, on one CPU or many GPUs (torchrun).

The recipe, the data and the loss are in :mod:`posekit.train.data`, where a run starts in
:mod:`posekit.train.init_weights`; here: validation (through the top-down core, as inference),
checkpoints, resume and the loop. Every option is checked before anything trains, and the output
folder belongs to one run at a time (:mod:`posekit.train.run_folder`).

Under ``torchrun`` (``WORLD_SIZE`` set) every process trains a DistributedDataParallel replica
(NCCL on CUDA, gloo on CPU) on its share of a DistributedSampler; rank 0 validates, logs and
writes checkpoints. A process that dies or stops answering ends the others with one error
(:data:`posekit.train.distributed.COLLECTIVE_TIMEOUT` at most), never a hang.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn

from posekit.core import topdown, validate as check
from posekit.core.keypoints import COCO17
from posekit.errors import ArgumentError, CheckpointError, PosekitError
from posekit.io.files import atomic_write
from posekit.io.images import load_image
from posekit.models.pose_resnet import pose_resnet
from posekit.models.weights import SPEC_KEY, check_fits, safe_torch_load
from posekit.train import distributed
from posekit.train.data import (
    HALF_BODY_PROBABILITY,
    SCHEDULES,
    KeypointPeople,
    ModelSpec,
    Schedule,
    collate_people,
    default_sigma,
    joints_mse,
    training_batch,
)
from posekit.train.init_weights import build_model
from posekit.train.run_folder import RunLock, check_out_folder

# PCK threshold as a fraction of the person box's longer side.
PCK_THRESHOLD = 0.1
CHECKPOINT_FORMAT = "posekit-train-1"
DEFAULT_DEPTH = 50
DEFAULT_INPUT_SIZE = (192, 256)


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def read_training_checkpoint(path: str | os.PathLike) -> tuple[dict, nn.Module, ModelSpec]:
    """A checkpoint written by :class:`Trainer`: its content, its model (CPU, train mode, loaded) and spec.

    The file goes through the weights module's size-checked, tensor-only loader (nothing in it
    can run code); its saved spec must describe its weights (architecture, joint count).

    Raises:
        CheckpointError: missing, truncated, corrupt or unsafe file, another kind of checkpoint,
            or a spec that does not fit the weights.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint; expected the last.pth or best.pth of a posekit train run")
    try:
        content = safe_torch_load(path, trusted=False)
    except CheckpointError as error:  # the loader's advice (download it again) is for weights files
        raise CheckpointError(f"{str(error).removesuffix(': download it again')}; expected the last.pth or "
                              "best.pth of a posekit train run") from None
    if not isinstance(content, dict) or content.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint written by posekit train (expected OUT/last.pth or best.pth)")
    try:
        spec = ModelSpec.from_dict(content["spec"])
        model = pose_resnet(depth=spec.depth, num_joints=spec.keypoint_set.num_keypoints)
    except (KeyError, TypeError, ValueError, PosekitError) as error:
        raise CheckpointError(f"{path}: its saved spec is unreadable ({error!r}); expected a posekit train "
                              "checkpoint as posekit writes it") from None
    check_fits(model, content.get("state_dict") or {}, "posekit train checkpoint", f"{path} (its saved spec)")
    model.load_state_dict(content["state_dict"])
    model.input_spec = spec.input_spec()
    return content, model, spec


def load_trained(path: str | os.PathLike) -> tuple[nn.Module, ModelSpec]:
    """The model of a ``posekit train`` checkpoint (eval mode, CPU) and its spec (depth, input size,
    channel order, keypoint set).

    Raises CheckpointError if the file is not a readable posekit training checkpoint.
    """
    _, model, spec = read_training_checkpoint(path)
    return model.eval(), spec


# --------------------------------------------------------------------------------------------
# Prediction and validation
# --------------------------------------------------------------------------------------------


@torch.inference_mode()
def predict_people(
    model: nn.Module, people: KeypointPeople, spec: ModelSpec, batch_size: int = 32, flip_test: bool = True
) -> np.ndarray:
    """Keypoints of every person of ``people`` from its box (no augmentation), through the
    top-down core inference runs (:func:`posekit.core.topdown.keypoints`), image by image.

    Flip test with the keypoint set's flip pairs and the official one-pixel shift; quarter-pixel
    decoding. The model is left in eval mode. Shape: -> (N, K, 3) float32 image px x, y, score.
    """
    model.eval()
    device = next(model.parameters()).device
    predicted = np.zeros((len(people), spec.keypoint_set.num_keypoints, 3), np.float32)
    order = np.argsort(people.image_ids, kind="stable")
    image_ids, starts = np.unique(people.image_ids[order], return_index=True)
    for image_id, mine in zip(image_ids.tolist(), np.split(order, starts[1:])):
        image = load_image(people.image_path(image_id), upright=False)  # as the annotations' pixel grid
        predicted[mine], _, _ = topdown.keypoints(
            lambda crops: model(crops).float(), spec.input_spec(), image, people.boxes[mine], flip_test,
            "quarter", batch_size, device,
        )
    return predicted


def pck(predicted: np.ndarray, people: KeypointPeople, threshold: float = PCK_THRESHOLD) -> float:
    """Fraction of labelled joints within ``threshold`` x the longer box side of the truth.

    Shape: predicted (N, K, 2 or 3) image px -> float in 0..1.
    """
    distance = np.linalg.norm(predicted[..., :2] - people.joints, axis=2)
    size = people.boxes[:, 2:].max(1, keepdims=True)
    labelled = people.visibility > 0
    return float((distance <= threshold * size)[labelled].mean())


def validate(model: nn.Module, people: KeypointPeople, spec: ModelSpec, dataset, batch_size: int) -> dict:
    """PCK@0.1 on the ground-truth boxes, and when ``dataset`` (a COCO-17
    :class:`~posekit.eval.coco.CocoPersonDataset`) is given also COCO AP through :func:`posekit.eval.coco.evaluate`."""
    metrics = {"pck": pck(predict_people(model, people, spec, batch_size), people)}
    if dataset is not None:
        from posekit.eval.coco import evaluate

        metrics["ap"] = evaluate(model, dataset, batch_size=batch_size, progress=False).stats["AP"]  # fed as model.input_spec says
    return metrics


# --------------------------------------------------------------------------------------------
# The training loop
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TrainConfig:
    """One training run; ``posekit train`` fills it from its options.

    ``epochs``, ``batch_size`` (people per process) and ``lr`` default to the schedule's.
    ``depth`` and ``input_size`` (width, height) default to 50 and 192x256 for a new run; a
    resumed run keeps its checkpoint's, and naming others is refused.
    ``half_body``: HRNet's half-body crops with probability 0.3 (off in the paper's recipe).
    ``val_every``: validate every N epochs (and after the last). ``out``: checkpoints
    ``last.pth`` / ``best.pth`` and ``log.csv`` (plus TensorBoard events when installed); a
    folder holding another run is refused unless ``resume`` is its ``last.pth`` or ``overwrite``.
    """

    ann_file: Path
    image_dir: Path
    out: Path
    val_ann_file: Path | None = None
    val_image_dir: Path | None = None
    depth: int | None = None
    input_size: tuple[int, int] | None = None
    schedule: str = "paper"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    init: str = "imagenet"
    resume: Path | None = None
    overwrite: bool = False
    workers: int = 4
    sync_bn: bool = False
    amp: bool = False
    half_body: bool = False
    seed: int = 0
    val_every: int = 10
    device: str = "auto"
    progress: bool = True


def check_config(config: TrainConfig) -> None:
    """Refuse options that cannot train, before anything is read or trained (a bad value found
    after an epoch would lose it).

    Raises:
        ArgumentError: a number out of range or of the wrong kind, an unknown schedule, an input
            size that is not a multiple of 32.
    """
    if config.schedule not in SCHEDULES:
        raise ArgumentError(f"schedule {config.schedule!r} is unknown; expected one of {', '.join(SCHEDULES)}")
    for name, meaning, minimum in (("epochs", "epochs to train", 1), ("batch_size", "people per process and step", 1),
                                   ("depth", "ResNet depth", 1)):
        if getattr(config, name) is not None:
            check.whole_number(getattr(config, name), name, meaning, minimum)
    check.whole_number(config.workers, "workers", "DataLoader worker processes", minimum=0)
    check.whole_number(config.val_every, "val_every", "epochs between validations")
    check.whole_number(config.seed, "seed", "seed of initialisation, order and augmentation", minimum=0)
    if config.lr is not None and not (isinstance(config.lr, (int, float)) and math.isfinite(config.lr) and config.lr > 0):
        raise ArgumentError(f"lr must be a finite number > 0 (Adam's learning rate), got {config.lr!r}")
    if config.input_size is not None:
        width, height = config.input_size
        if min(width, height) < 32 or width % 32 or height % 32:
            raise ArgumentError(f"input {height}x{width}: expected a height and width that are positive multiples "
                                "of 32 (the ResNet's stride), e.g. 256x192")


class Trainer:
    """Sets up a run (processes, data, model, optimiser; or everything from ``resume``) and trains it."""

    def __init__(self, config: TrainConfig) -> None:
        from posekit.core.device import resolve_device

        check_config(config)
        self.config = config
        checkpoint = self._load_resume(config) if config.resume else None
        check_out_folder(config.out, config.resume, config.overwrite)
        self.rank, self.world = distributed.setup()
        self.device = distributed.device_for_rank(resolve_device(config.device))
        if config.amp and self.device.type != "cuda":
            raise PosekitError(f"--amp needs a CUDA device; this run is on {self.device}")
        if config.sync_bn and self.device.type != "cuda":
            raise PosekitError(f"--sync-bn needs CUDA devices (torch's SyncBatchNorm); this run is on {self.device}")
        if checkpoint is None:
            overrides = {"epochs": config.epochs, "batch_size": config.batch_size, "lr": config.lr,
                         "half_body_probability": HALF_BODY_PROBABILITY if config.half_body else None}
            self.schedule = dataclasses.replace(
                SCHEDULES[config.schedule], **{k: v for k, v in overrides.items() if v is not None}
            )
        else:  # the run continues as it was set up; only its length may change
            content, model, self.spec = checkpoint
            saved = {**content["schedule"], "lr_steps": tuple(content["schedule"]["lr_steps"])}
            self.schedule = dataclasses.replace(Schedule(**saved), epochs=config.epochs or saved["epochs"])
        self.seed = int(checkpoint[0]["seed"]) if checkpoint is not None else config.seed
        torch.manual_seed(self.seed)  # the head's (and a random trunk's) initialisation
        input_size = self.spec.input_size if checkpoint is not None else tuple(config.input_size or DEFAULT_INPUT_SIZE)
        self.train_people = KeypointPeople(config.ann_file, config.image_dir, input_size, self.schedule, self.seed)
        if checkpoint is None:
            depth = config.depth or DEFAULT_DEPTH
            model, channel_order = build_model(depth, self.train_people.keypoint_set, config.init)
            self.spec = ModelSpec(depth, input_size, channel_order, default_sigma(input_size),
                                  self.train_people.keypoint_set)
        if self.spec.keypoint_set.num_keypoints != self.train_people.keypoint_set.num_keypoints:
            raise PosekitError(f"{config.ann_file} has {self.train_people.keypoint_set.num_keypoints} joints; "
                               f"the checkpoint's model has {self.spec.keypoint_set.num_keypoints}")
        self.train_people.keypoint_set = self.spec.keypoint_set
        model.input_spec = self.spec.input_spec()
        self.val_people = self.val_dataset = None
        if config.val_ann_file is not None:
            self.val_people = KeypointPeople(config.val_ann_file, config.val_image_dir or config.image_dir,
                                             self.spec.input_size, keypoint_set=self.spec.keypoint_set)
            if self.spec.keypoint_set.names == COCO17.names:  # also COCO AP: its file is read now, not after an epoch
                from posekit.eval.coco import CocoPersonDataset

                self.val_dataset = CocoPersonDataset(config.val_ann_file, self.val_people.image_dir)
        if config.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model.to(self.device)
        self.ddp = distributed.wrap(self.model, self.device) if self.world > 1 else self.model
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.schedule.lr)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=list(self.schedule.lr_steps), gamma=self.schedule.lr_factor
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.amp)
        self.epoch, self.best, self.history = 0, -math.inf, []
        if checkpoint is not None:
            content = checkpoint[0]
            self.optimizer.load_state_dict(content["optimizer"])
            self.scheduler.load_state_dict(content["scheduler"])
            self.scaler.load_state_dict(content["scaler"])
            self.epoch, self.best, self.history = content["epoch"], content["best"], content["history"]
        self.sampler = torch.utils.data.DistributedSampler(
            self.train_people, num_replicas=self.world, rank=self.rank, shuffle=True, seed=self.seed
        )
        # Last, once nothing above can refuse the run: the output folder is this run's until run() ends;
        # checked again under the lock, as a run that started meanwhile may have written it.
        self.lock = RunLock(config.out) if self.rank == 0 else None
        if self.lock is not None:
            try:
                check_out_folder(config.out, config.resume, config.overwrite)
            except PosekitError:
                self.lock.release()
                raise
        self._replacing = config.overwrite and config.resume is None

    @staticmethod
    def _load_resume(config: TrainConfig) -> tuple[dict, nn.Module, ModelSpec]:
        """The resumed run's checkpoint, model and spec; refuses options that contradict it."""
        content, model, spec = read_training_checkpoint(config.resume)
        for option, given, saved, shown in (
            ("depth", config.depth, spec.depth, f"pose_resnet_{spec.depth}"),
            ("input", config.input_size and tuple(config.input_size), spec.input_size,
             f"{spec.input_size[1]}x{spec.input_size[0]} input"),
        ):
            if given is not None and given != saved:
                raise PosekitError(
                    f"resume={str(config.resume)!r} is a {shown} run; {option} {given} differs: a resumed run keeps "
                    f"its checkpoint's architecture, so drop {option} (or start a new run without resume)",
                    cli_message=f"--resume {config.resume} is a {shown} run; --{option} differs: a resumed run keeps "
                                f"its checkpoint's architecture, so drop --{option} (or start a new run without --resume)",
                )
        epochs = config.epochs or content["schedule"]["epochs"]
        if epochs <= content["epoch"]:
            raise PosekitError(
                f"resume={str(config.resume)!r} has trained {content['epoch']} of its {content['schedule']['epochs']} "
                f"epochs: nothing is left to train; pass epochs above {content['epoch']} to train more",
                cli_message=f"--resume {config.resume} has trained {content['epoch']} of its "
                            f"{content['schedule']['epochs']} epochs: nothing is left to train; pass --epochs above "
                            f"{content['epoch']} to train more",
            )
        return content, model, spec

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """This process's prepared batches of ``epoch``: (inputs, targets, weights) on the device."""
        self.sampler.set_epoch(epoch)
        self.train_people.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(
            self.train_people, batch_size=self.schedule.batch_size, sampler=self.sampler,
            num_workers=self.config.workers, collate_fn=collate_people, pin_memory=self.device.type == "cuda",
        )
        for images, widths, indices, augmentation in loader:
            yield training_batch(images, widths, self.train_people, indices, augmentation, self.spec, self.device)

    def step(self, inputs: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> float:
        """One optimisation step on this process's batch; returns its loss."""
        self.ddp.train()
        amp = torch.autocast("cuda", dtype=torch.float16) if self.config.amp else nullcontext()
        with amp:
            loss = joints_mse(self.ddp(inputs), targets, weights)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach())

    def run(self) -> list[dict]:
        """Train from ``self.epoch`` to the schedule's last epoch; returns the log rows (one per epoch)."""
        from tqdm.auto import tqdm

        config = self.config
        writer = _tensorboard(config.out) if self.rank == 0 else None
        try:
            for epoch in range(self.epoch, self.schedule.epochs):
                start, losses = time.perf_counter(), []
                lr = self.optimizer.param_groups[0]["lr"]
                bar = tqdm(self.batches(epoch), total=math.ceil(len(self.sampler) / self.schedule.batch_size),
                           desc=f"epoch {epoch + 1}/{self.schedule.epochs}", disable=not config.progress or self.rank != 0)
                with distributed.peers_answer(self.rank, f"{config.out / 'last.pth'} (epoch {epoch})"):
                    for inputs, targets, weights in bar:
                        losses.append(self.step(inputs, targets, weights))
                        bar.set_postfix(loss=f"{losses[-1]:.3g}")
                    loss = distributed.mean(float(np.mean(losses)), self.device)
                self.scheduler.step()
                self.epoch = epoch + 1
                row = {"epoch": self.epoch, "lr": lr, "loss": loss, "seconds": round(time.perf_counter() - start, 3)}
                last = self.epoch == self.schedule.epochs
                if self.rank == 0 and self.val_people is not None and (self.epoch % config.val_every == 0 or last):
                    row.update(validate(self.model, self.val_people, self.spec, self.val_dataset, self.schedule.batch_size))
                self.history.append(row)
                if self.rank == 0:
                    self._save(row, writer)
                with distributed.peers_answer(self.rank, f"{config.out / 'last.pth'} (epoch {self.epoch})"):
                    distributed.barrier()
        finally:
            if writer is not None:
                writer.close()
            if self.lock is not None:
                self.lock.release()
        return self.history

    def _save(self, row: dict, writer: object | None) -> None:
        """Rank 0: the log (CSV, TensorBoard) and the checkpoints of the epoch just finished."""
        out = self.config.out
        metric = row.get("ap", row.get("pck"))
        improved = metric is not None and metric > self.best
        self.best = max(self.best, metric) if metric is not None else self.best
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            # posekit's checkpoint layout (weights.save_checkpoint), so PoseEstimator(path) feeds the
            # model right; SyncBatchNorm keeps BatchNorm's keys: the state loads into a plain PoseResNet.
            "state_dict": self.model.state_dict(),
            SPEC_KEY: dataclasses.asdict(self.spec.input_spec()),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "best": self.best,
            "history": self.history,
            "spec": self.spec.to_dict(),
            "schedule": {**dataclasses.asdict(self.schedule), "lr_steps": list(self.schedule.lr_steps)},
            "seed": self.seed,
        }
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        if self._replacing and not improved:  # --overwrite: the replaced run's best.pth is not this run's
            (out / "best.pth").unlink(missing_ok=True)
        self._replacing = False
        for name in ("last.pth",) + (("best.pth",) if improved else ()):
            with atomic_write(out / name) as file:
                file.write(buffer.getvalue())
        with atomic_write(out / "log.csv", "w") as file:
            columns = list(dict.fromkeys(key for r in self.history for key in r))
            table = csv.DictWriter(file, fieldnames=columns)
            table.writeheader()
            table.writerows(self.history)
        if writer is not None:
            for key, value in row.items():
                if key != "epoch":
                    writer.add_scalar(key, value, row["epoch"])
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())
        print(shown, file=sys.stderr)


def _tensorboard(out: Path) -> object | None:
    """A TensorBoard writer in ``out/tensorboard`` if the tensorboard package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional: the CSV log has the same numbers
        return None
    return SummaryWriter(str(out / "tensorboard"))


def train(config: TrainConfig) -> list[dict]:
    """Run a whole training (see :class:`TrainConfig`); returns the log rows. Ends the process group it started."""
    try:
        return Trainer(config).run()
    finally:
        distributed.teardown()
