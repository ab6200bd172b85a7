"""Run by tests/test_train.py under ``torchrun --nproc-per-node 2``: a few DDP steps of posekit's
Trainer; after every step each rank saves its parameters and the gradients the step applied
(DDP's average over ranks) to OUT/rank<r>_step<t>.pt as {"params": ..., "grads": ...}.

Usage: python ddp_train_worker.py ANN_FILE IMAGE_DIR OUT STEPS BATCH_PER_RANK
"""
import sys
from pathlib import Path

import torch

from posekit.train import distributed
from posekit.train.trainer import TrainConfig, Trainer

ann_file, image_dir, out, steps, batch = sys.argv[1:6]
torch.set_num_threads(1)
trainer = Trainer(TrainConfig(
    ann_file=Path(ann_file), image_dir=Path(image_dir), out=Path(out), depth=18, input_size=(64, 64),
    batch_size=int(batch), init="none", workers=0, device="cpu", progress=False,
))
for step, batch_tensors in zip(range(int(steps)), trainer.batches(0)):
    trainer.step(*batch_tensors)
    named = list(trainer.model.named_parameters())
    torch.save({"params": {name: p.detach().clone() for name, p in named},
                "grads": {name: p.grad.clone() for name, p in named}}, Path(out) / f"rank{trainer.rank}_step{step}.pt")
distributed.teardown()
