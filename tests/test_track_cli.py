"""`posekit track` on the bundled clip and `posekit export`, offline, as a user runs them.

Offline means here: an empty posekit cache and every HTTP(S) request sent to a closed local port,
so the pose weights fall back to an untrained network (said on screen) and RAFT's are missing.
"""
from __future__ import annotations

import json
import re

import av
import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from posekit.cli import main
from posekit.data import VIDEO_SAMPLE_BOXES, VIDEO_SAMPLE_CLIP, VIDEO_SAMPLE_DIR
from posekit.models.pose_resnet import pose_resnet

BOXES_PER_FRAME = [3, 3, 3, 4, 4]  # boxes.json: three players, the goalkeeper from frame 3


def test_track_the_bundled_clip_with_given_boxes(offline, tmp_path, capsys):
    out, tracks = tmp_path / "out" / "tracked.mp4", tmp_path / "out" / "tracks.json"
    code = main(["track", str(VIDEO_SAMPLE_CLIP), "--boxes", str(VIDEO_SAMPLE_BOXES), "--propagation", "pose",
                 "--similarity", "oks", "--no-flip", "--device", "cpu", "--out", str(out), "--json", str(tracks)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "5 frames" in printed.out and "fps tracking" in printed.out and "fps end to end" in printed.out
    assert "UNTRAINED random weights" in printed.out  # offline: said on screen, not passed off as a prediction
    with av.open(str(out)) as container:  # a playable H.264 mp4 with every frame
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert sum(1 for _ in container.decode(stream)) == 5
    document = json.loads(tracks.read_text())
    assert [image["id"] for image in document["images"]] == [0, 1, 2, 3, 4]
    per_frame = [sum(a["image_id"] == i for a in document["annotations"]) for i in range(5)]
    assert per_frame == BOXES_PER_FRAME  # every given box is a person (detections are kept)
    assert all(isinstance(a["track_id"], int) and len(a["keypoints"]) == 51 for a in document["annotations"])
    assert sorted(p.name for p in out.parent.iterdir()) == ["tracked.mp4", "tracks.json"]


def test_track_a_folder_of_frames_without_a_detector_and_evaluate(offline, tmp_path, capsys):
    # Annotations placing one person's joints in a corner of every frame; the untrained network is
    # sure of no joint (all scores far under 0.4), so every annotated joint is a miss: MOTA 0.
    ground_truth = {
        "images": [{"id": 100 + i, "file_name": f"{i:06d}.jpg"} for i in range(3)],
        "annotations": [{"image_id": 100 + i, "track_id": 1, "keypoints": [5, 5, 1] * 17, "bbox_head": [0, 0, 30, 40]}
                        for i in range(3)],
    }
    truth = tmp_path / "gt.json"
    truth.write_text(json.dumps(ground_truth))
    tracks = tmp_path / "tracks.json"
    code = main(["track", str(VIDEO_SAMPLE_DIR), "--detector", "none", "--propagation", "pose", "--similarity", "iou",
                 "--no-flip", "--device", "cpu", "--max-frames", "3", "--json", str(tracks), "--eval", str(truth)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    document = json.loads(tracks.read_text())
    assert [image["file_name"] for image in document["images"]] == ["000000.jpg", "000001.jpg", "000002.jpg"]
    assert [a["bbox"] for a in document["annotations"]] == [[0, 0, 1280, 720]] * 3  # the whole frame is the person
    assert re.search(r"^MOTA +0\.0$", printed.out, re.MULTILINE)
    assert "id switches 0, misses 51, false positives 0 of 51 annotated joints" in printed.out


def test_track_without_raft_weights_offline_falls_back_to_pose_propagation_in_one_line(offline, tmp_path, capsys):
    tracks = tmp_path / "tracks.json"
    code = main(["track", str(VIDEO_SAMPLE_CLIP), "--boxes", str(VIDEO_SAMPLE_BOXES), "--no-flip", "--device", "cpu",
                 "--json", str(tracks)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    notes = [line for line in printed.err.splitlines() if "RAFT" in line or "raft_small" in line]
    assert len(notes) == 1 and "tracking with pose propagation and OKS matching instead" in notes[0]
    assert "5 frames" in printed.out and len(json.loads(tracks.read_text())["images"]) == 5


@pytest.mark.parametrize("named", [["--propagation", "flow"], ["--similarity", "flow-oks"]])
def test_track_with_flow_asked_for_by_name_offline_is_one_clear_error(offline, capsys, named):
    code = main(["track", str(VIDEO_SAMPLE_CLIP), "--boxes", str(VIDEO_SAMPLE_BOXES), "--device", "cpu", *named])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1
    assert err.startswith("posekit track: error: could not download https://download.pytorch.org/models/raft_small")
    assert str(offline / "checkpoints" / "raft_small_C_T_V2-01064c6d.pth") in err and "--propagation pose" in err


def test_track_bad_inputs_are_one_line_errors(offline, tmp_path, capsys):
    assert main(["track", str(tmp_path / "missing.mp4"), "--detector", "none"]) == 1  # before any model loads
    assert "missing.mp4: no such video file or folder" in capsys.readouterr().err
    assert main(["track", str(VIDEO_SAMPLE_CLIP), "--detector-every", "0"]) == 1
    assert "--detector-every" in capsys.readouterr().err


@pytest.fixture()
def checkpoint(tmp_path):
    """A depth-18 network with heatmaps of ordinary size (so the comparison means something), saved."""
    torch.manual_seed(0)
    network = pose_resnet(depth=18).eval()
    torch.nn.init.normal_(network.final_layer.weight, std=0.1)
    for module in network.deconv_layers.modules():
        if isinstance(module, torch.nn.ConvTranspose2d):
            torch.nn.init.normal_(module.weight, std=0.05)
    path = tmp_path / "tiny.pth"
    torch.save(network.state_dict(), path)
    return path, network


@pytest.mark.parametrize("fp16, tolerance", [(False, 1e-4), (True, 2e-2)])
def test_export_writes_a_checked_onnx_with_a_dynamic_batch_equal_to_torch(checkpoint, tmp_path, capsys, fp16, tolerance):
    path, network = checkpoint
    out = tmp_path / "model.onnx"
    code = main(["export", "--weights", str(path), "--input", "64x32", "--out", str(out)]
                + (["--fp16"] if fp16 else []))
    assert code == 0, capsys.readouterr().err
    assert "onnx.checker passed" in capsys.readouterr().out
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param == "batch" and not batch_dim.HasField("dim_value")
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    images = torch.randn(3, 3, 64, 32, generator=torch.Generator().manual_seed(1))
    (actual,) = session.run(None, {"images": images.numpy().astype(np.float16 if fp16 else np.float32)})
    with torch.no_grad():
        expected = network(images).numpy()
    assert actual.shape == (3, 17, 16, 8)
    scale = np.abs(expected).max()
    assert scale > 1e-2
    assert np.abs(actual.astype(np.float32) - expected).max() <= tolerance * scale


def test_export_rejects_an_input_size_the_network_cannot_take(checkpoint, tmp_path, capsys):
    path, _ = checkpoint
    assert main(["export", "--weights", str(path), "--input", "100x75", "--out", str(tmp_path / "m.onnx")]) == 1
    assert "multiples of 32" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_track_with_the_detector(offline, tmp_path, monkeypatch, capsys):
    """The detector path end to end: a detector with random weights, placed where torchvision keeps
    its downloads (timing and plumbing only: it finds nobody, as random weights should)."""
    from posekit.models.detect import DETECTORS

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    spec = DETECTORS["fasterrcnn_mobilenet_v3_large_fpn"]
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    network = spec.builder(weights=None, weights_backbone=None, num_classes=spec.num_classes)
    torch.save(network.state_dict(), checkpoints / spec.url.rsplit("/", 1)[-1])
    tracks = tmp_path / "tracks.json"
    code = main(["track", str(VIDEO_SAMPLE_CLIP), "--detector", "fasterrcnn_mobilenet_v3_large_fpn", "--propagation",
                 "pose", "--similarity", "oks", "--detector-every", "2", "--no-flip", "--device", "cpu",
                 "--max-frames", "3", "--json", str(tracks)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    # Nobody found, so nothing to propagate: the detector runs on every frame despite --detector-every 2.
    assert "3 frames, 0 tracks" in printed.out and "detector on 3 frames" in printed.out
    assert len(json.loads(tracks.read_text())["images"]) == 3


def test_track_without_detector_weights_offline_says_to_give_boxes(offline, capsys):
    code = main(["track", str(VIDEO_SAMPLE_CLIP), "--propagation", "pose", "--similarity", "oks", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1
    assert err.startswith("posekit track: error: could not download") and "fasterrcnn_resnet50_fpn_v2" in err
    assert "--boxes FILE" in err
