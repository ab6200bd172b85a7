"""posekit.train: training and fine-tuning with the paper's recipe.

The trainer, torchrun/DDP helpers (``distributed``), synthetic people with exact keypoints
(``synthetic``). Imports from core, io, models and eval.
"""
