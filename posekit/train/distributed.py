"""Many processes with torchrun: process groups, DDP, and COCO evaluation sharded over ranks.

``torchrun --nproc-per-node N -m posekit train|eval ...`` starts N processes with ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE`` set; everything here is a no-op for a single process (no
``WORLD_SIZE``, or 1). Several machines: the same command on each with ``--nnodes M
--node-rank I --rdzv-endpoint HOST:PORT`` (torchrun's rendezvous; see README).
"""
from __future__ import annotations

import copy
import datetime
import os

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


def world_size() -> int:
    """Processes in this run: ``WORLD_SIZE`` as torchrun sets it, else 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def process_rank() -> int:
    """This process's global rank: ``RANK`` as torchrun sets it, else 0."""
    return int(os.environ.get("RANK", "0"))


def setup() -> tuple[int, int]:
    """Join the run's process group if there is more than one process (NCCL with CUDA, else gloo).

    Returns (rank, world size); (0, 1) for a single process.
    """
    if world_size() <= 1:
        return 0, 1
    if not dist.is_initialized():
        # Rank 0 validates alone while the others wait at a barrier: allow a long COCO evaluation.
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", timeout=datetime.timedelta(hours=2))
    return dist.get_rank(), dist.get_world_size()


def teardown() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()


def device_for_rank(device: str | torch.device) -> torch.device:
    """``device`` resolved (see :func:`posekit.core.device.resolve_device`); under torchrun a CUDA
    device becomes this process's own GPU, ``cuda:LOCAL_RANK``."""
    from posekit.core.device import resolve_device

    chosen = resolve_device(device)
    if chosen.type == "cuda" and world_size() > 1:
        chosen = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(chosen)
    return chosen


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` as a DistributedDataParallel replica on ``device``."""
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def mean(value: float, device: torch.device) -> float:
    """The mean of ``value`` over all processes (``value`` itself for a single process)."""
    if not dist.is_initialized():
        return value
    total = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return float(total) / dist.get_world_size()


def barrier() -> None:
    """Wait for every process (no-op for a single process)."""
    if dist.is_initialized():
        dist.barrier()


def shard_images(dataset, rank: int, world: int):
    """The part of a :class:`~posekit.eval.coco.CocoPersonDataset` that process ``rank`` of ``world`` evaluates.

    The dataset's items (images with people) are split into ``world`` contiguous blocks, and
    every person goes with its image: rescoring and OKS-NMS work per person and per image, so
    each shard's kept people are exactly those the whole run keeps for its images, in order.
    """
    items = np.array_split(np.arange(len(dataset)), world)[rank]
    mine = dataset._item_image_ids[items]
    keep = np.isin(dataset.person_image_ids, mine)
    shard = copy.copy(dataset)
    for name in ("person_image_ids", "boxes", "box_scores", "annotation_ids"):
        setattr(shard, name, getattr(dataset, name)[keep])
    shard._item_image_ids = mine
    # Items are contiguous, so are their people: the slices shift by the first one's start.
    offset = dataset._slices[items[0]].start if len(items) else 0
    shard._slices = [slice(dataset._slices[i].start - offset, dataset._slices[i].stop - offset) for i in items]
    shard.image_ids = mine
    return shard


def evaluate(model, dataset, progress: bool = True, **options):
    """:func:`posekit.eval.coco.evaluate` with the images sharded over the torchrun processes.

    ``model`` is what ``coco.evaluate`` takes: a PoseEstimator, a pose network or a callable.

    Each process evaluates its :func:`shard_images`; rank 0 gathers the kept people and runs
    COCOeval on all images, which gives the AP one process gets. ``options`` go to
    ``coco.evaluate``. Returns the :class:`~posekit.eval.coco.EvalResult` on rank 0 (and for a
    single process), None on the other ranks. Leaves the process group it joined.
    """
    from posekit.eval import coco

    rank, world = setup()
    if world == 1:
        return coco.evaluate(model, dataset, progress=progress, **options)
    try:
        shard = shard_images(dataset, rank, world)
        local = coco.evaluate(model, shard, progress=progress and rank == 0, **options) if len(shard) else None
        part = (local.results, local.timing, local.num_people) if local is not None else ([], {}, 0)
        parts = [None] * world if rank == 0 else None
        dist.gather_object(part, parts, dst=0)
    finally:
        teardown()
    if rank != 0:
        return None
    results = [row for rows, _, _ in parts for row in rows]
    stats, summary = coco._coco_keypoint_stats(dataset.ann_file, results, dataset.image_ids)
    # Ranks work at the same time: the slowest one's stage times are the run's.
    stages = dict.fromkeys(stage for _, t, _ in parts for stage in t)
    timing = {stage: max(t.get(stage, 0.0) for _, t, _ in parts) for stage in stages}
    return coco.EvalResult(stats, results, timing, sum(n for _, _, n in parts), len(dataset.image_ids), summary)
