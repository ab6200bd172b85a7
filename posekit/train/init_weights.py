"""Where a training run starts: torchvision's ImageNet trunk, pose weights, or PyTorch's initialisation."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from posekit.core.keypoints import KeypointSet
from posekit.errors import CheckpointError, DownloadError
from posekit.models.pose_resnet import pose_resnet
from posekit.models.weights import WEIGHTS, resolve_weights


def imagenet_trunk(depth: int) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet ResNet weights (IMAGENET1K_V1, the file the paper starts from) without the classifier.

    Downloaded once into torch's hub cache. Raises DownloadError offline, in one sentence.
    """
    import torchvision

    weights = torchvision.models.get_model_weights(f"resnet{depth}").IMAGENET1K_V1
    try:
        state = weights.get_state_dict(progress=True)
    except (OSError, RuntimeError) as error:
        raise DownloadError(
            f"the ImageNet resnet{depth} weights are not in torch's cache ({torch.hub.get_dir()}/checkpoints) and "
            f"cannot be downloaded ({error}); connect once, copy {Path(weights.url).name} there, or use --init none"
        ) from None
    return {key: value for key, value in state.items() if not key.startswith("fc.")}


def build_model(depth: int, keypoint_set: KeypointSet, init: str) -> tuple[nn.Module, str]:
    """A PoseResNet for ``keypoint_set`` started from ``init``, and the channel order it expects.

    ``init``: ``"none"`` (PyTorch's initialisation, RGB), ``"imagenet"`` (torchvision's trunk,
    RGB, the head as the paper initialises it) or pose weights (a registered name or a
    checkpoint file, posekit-trained ones included): trunk and deconvolutions are loaded, the
    final 1x1 layer too when it has K outputs, else it is re-initialised for the K joints.

    Raises CheckpointError when the file does not fit a ResNet of ``depth``.
    """
    model = pose_resnet(depth=depth, num_joints=keypoint_set.num_keypoints)
    if init == "none":
        return model, "rgb"
    if init == "imagenet":
        missing, unexpected = model.load_state_dict(imagenet_trunk(depth), strict=False)
        if unexpected or any(not k.startswith(("deconv_layers.", "final_layer.")) for k in missing):
            raise CheckpointError(f"torchvision's resnet{depth} does not fit pose_resnet_{depth}: {unexpected or missing}")
        return model, "rgb"
    state, channel_order = _pose_state(init)
    if state.get("final_layer.weight", torch.empty(0)).shape[:1] != (keypoint_set.num_keypoints,):
        state = {k: v for k, v in state.items() if not k.startswith("final_layer.")}
    expected = model.state_dict()
    wrong = [k for k, v in state.items() if k not in expected or expected[k].shape != v.shape]
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")
               and not k.startswith("final_layer.")]
    if wrong or missing:
        raise CheckpointError(
            f"{init} does not fit pose_resnet_{depth}: {len(wrong)} unexpected or wrong-shape key(s) "
            f"({', '.join(wrong[:3])}), {len(missing)} missing ({', '.join(missing[:3])}); check --depth"
        )
    model.load_state_dict(state, strict=False)
    return model, channel_order


def _pose_state(init: str) -> tuple[dict[str, torch.Tensor], str]:
    """(state_dict, channel order) of registered or local pose weights (see :func:`posekit.models.weights.resolve_weights`)."""
    if init not in WEIGHTS and not init.startswith(("http://", "https://")) and not Path(init).is_file():
        raise CheckpointError(f"--init {init!r} is neither imagenet, none, a registered name ({', '.join(WEIGHTS)}), "
                              "a URL nor a file")
    resolved = resolve_weights(init)
    return resolved.checkpoint.state_dict, resolved.spec.channel_order
