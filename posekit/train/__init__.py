"""posekit.train: training and fine-tuning with the paper's recipe.

The recipe, data and loss (``data``), where a run starts (``init_weights``), the output folder's
ownership (``run_folder``), the loop, checkpoints and validation (``trainer``), torchrun/DDP helpers
(``distributed``), synthetic people with exact keypoints (``synthetic``). Imports from core, io,
models and eval.
"""
