"""The object scorer's parts: moving-region boxes, the attribute maths on squares of known speed,
YOLOX output decoding, densities and calibration, the fitted-scorer protocol, the weights checks."""

import numpy as np
import pytest
import torch

from vad.models.scorers import build_scorer
from vad.models.scorers.objects.attributes import Flow, describe, flow_velocity, geometry, track_velocity
from vad.models.scorers.objects.density import GaussianDensity, NearestDensity, calibration
from vad.models.scorers.objects.detector import (
    Boxes, DetectorError, anchor_grid, decode_output, load_detector, merge_boxes, moving_regions, nms,
)


def square_clip(frames: int = 8, speed: float = 3.0, size: int = 16, height: int = 96, width: int = 160, seed: int = 0) -> np.ndarray:
    """A textured square crossing a smooth background at `speed` px/frame: (T, H, W) uint8."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(40, 215, (size, size)).astype(np.uint8)
    background = np.tile(np.linspace(90, 140, width, dtype=np.float32), (height, 1)).astype(np.uint8)
    clip = np.repeat(background[None], frames, 0).copy()
    for t in range(frames):
        x = int(round(20 + speed * t))
        clip[t, 40 : 40 + size, x : x + size] = texture
    return clip


def test_moving_regions_box_what_changed_and_nothing_else():
    clip = square_clip(speed=4.0)
    boxes = moving_regions(clip[0], clip[1], threshold=15, min_area=20)
    assert len(boxes) == 1 and boxes.source.tolist() == [1]
    x0, y0, x1, y1 = boxes.xyxy[0]
    assert 14 <= x0 <= 22 and 34 <= y0 <= 42 and 38 <= x1 <= 46 and 54 <= y1 <= 62  # the square at x 20 and 24, y 40, 16 px
    assert len(moving_regions(clip[0], clip[0])) == 0


def test_flow_velocity_measures_a_square_of_known_speed():
    for speed in (2.0, 5.0):
        clip = square_clip(speed=speed)
        flow = Flow("medium")(clip[2], clip[3])
        x = 20 + speed * 2
        box = np.array([[x + 2, 42, x + 14, 54]], np.float32)  # inside the square
        measured = float(flow_velocity(flow, box)[0, 0])
        assert abs(measured - speed) < 0.5, (speed, measured)
        bins = flow_velocity(flow, box, bins=4)[0]
        assert bins.argmax() == 0 and abs(bins.sum() - measured) < 1e-4  # moving right: the first sector
    still = square_clip(speed=0.0)
    assert float(flow_velocity(Flow("medium")(still[0], still[1]), np.array([[20, 40, 36, 56]], np.float32))[0, 0]) < 0.2


def test_track_velocity_and_geometry_are_exact():
    a = np.array([[10, 10, 20, 30], [100, 100, 110, 110]], np.float32)
    b = np.array([[16, 18, 26, 38]], np.float32)  # the first box moved (6, 8) in 2 frames
    assert track_velocity(a, b, gap=2).tolist() == [5.0, 0.0]
    g = geometry(np.array([[0, 0, 40, 20]], np.float32), height=100, width=200)[0]
    assert np.allclose(g, [0.1, 0.1, np.log(0.2), np.log(2.0)])
    boxes = Boxes(a, np.ones(2, np.float32), np.zeros((2, 80), np.float32), np.zeros(2, np.int8))
    attrs = describe(boxes, None, later=Boxes(b, np.ones(1, np.float32), np.zeros((1, 80), np.float32), np.zeros(1, np.int8)), gap=2, height=100, width=200)
    assert attrs["speed"].tolist() == [5.0, 0.0] and attrs["relative_speed"][0] == pytest.approx(0.25)


def test_yolox_output_decoding_and_nms():
    cells, strides = anchor_grid()
    assert len(cells) == 3549 and strides[0] == 8 and strides[-1] == 32
    raw = np.zeros((3549, 85), np.float32)
    i = 52 * 10 + 20  # stride-8 cell x 20, y 10
    raw[i, :4] = [0.5, 0.5, np.log(4.0), np.log(8.0)]  # centre (164, 84), 32 x 64 in the letterboxed frame
    raw[i, 4], raw[i, 5 + 1] = 0.9, 0.8  # a bicycle, score 0.72
    raw[i + 1, :4] = [0.5, 0.5, np.log(4.0), np.log(8.0)]  # a weaker copy one cell right: suppressed? IoU 0.6 > 0.45
    raw[i + 1, 4], raw[i + 1, 5 + 1] = 0.9, 0.5
    boxes = decode_output(raw, ratio=2.0, score_threshold=0.3)
    assert len(boxes) == 1 and boxes.classes[0].argmax() == 1 and boxes.score[0] == pytest.approx(0.72)
    assert np.allclose(boxes.xyxy[0], [(164 - 16) / 2, (84 - 32) / 2, (164 + 16) / 2, (84 + 32) / 2])
    # NMS works within a class: the same box as a person is kept
    keep = nms(np.array([[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 10, 10]], np.float32), np.array([0.9, 0.8, 0.7]), np.array([0, 1, 0]), 0.45)
    assert keep.tolist() == [0, 1]


def test_moving_regions_the_detector_covers_are_dropped():
    det = Boxes(np.array([[10, 10, 30, 50]], np.float32), np.ones(1, np.float32), np.eye(80, dtype=np.float32)[:1], np.zeros(1, np.int8))
    mov = Boxes(np.array([[12, 12, 28, 48], [100, 10, 120, 30]], np.float32), np.ones(2, np.float32), np.zeros((2, 80), np.float32), np.ones(2, np.int8))
    merged = merge_boxes(det, mov)
    assert merged.source.tolist() == [0, 1] and merged.xyxy[1, 0] == 100


def test_densities_rank_the_unusual_higher_and_survive_a_state_dict_round_trip():
    rng = np.random.default_rng(0)
    normal = rng.normal([1.0, 0.0], [0.2, 0.2], (2000, 2))
    gmm = GaussianDensity(2, 4)
    gmm.fit(normal)
    near, far = gmm.score(np.array([[1.0, 0.0], [3.0, 0.0]]))
    assert far > near + 10
    from sklearn.mixture import GaussianMixture

    reference = GaussianMixture(4, covariance_type="full", reg_covar=1e-4, random_state=0, max_iter=200).fit(normal)
    assert np.allclose(gmm.score(normal[:50]), -reference.score_samples(normal[:50]), atol=1e-3)
    twin = GaussianDensity(2, 4)
    twin.load_state_dict(gmm.state_dict())
    assert np.allclose(twin.score(normal[:5]), gmm.score(normal[:5]))
    bank = NearestDensity(3, bank_size=50)
    bank.fit(rng.normal(0, 0.1, (500, 3)))
    assert len(bank.bank) == 50 and bank.score(np.array([[2.0, 0, 0]]))[0] > 1.5
    low, high = calibration(np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]]), 0.5)
    assert low.tolist() == [1.0, 5.0] and high.tolist() == [2.0, 6.0]  # a constant column: high = low + 1


def test_the_scorer_flags_the_fast_square_and_says_why():
    """Fitted (the `FittedScorer` protocol, through `vad.training.local.fit`) on squares at 2 px/frame,
    a square at 8 px/frame scores far above normal, its reason names its speed, its box is masked."""
    from vad.training.local import fit

    normal = np.stack([np.repeat(square_clip(speed=2.0, seed=s)[..., None], 3, -1) for s in range(12)])
    model = build_scorer("objects", boxes="motion", clip_len=8, every=1, components=2, motion_threshold=15, flow_preset="medium",
                         attributes=["velocity"])
    result = fit(model, normal, val_fraction=0.34, seed=0)
    assert model.high[0] > model.low[0] and float(model.readable_high[0]) > 1.5  # speed of the motion box ~2 px/frame
    fast = torch.from_numpy(np.repeat(square_clip(speed=8.0, seed=20)[..., None], 3, -1)[None]).float() / 255
    slow = torch.from_numpy(np.repeat(square_clip(speed=2.0, seed=21)[..., None], 3, -1)[None]).float() / 255
    out_fast, out_slow = model.score(fast), model.score(slow)
    assert float(out_fast.score[0]) > 3 * max(1.0, float(out_slow.score[0])) and float(out_fast.score[0]) > result.threshold
    assert "speed" in out_fast.reasons[0] and "px/frame" in out_fast.reasons[0] and out_fast.objects[0][0]["attribute"] == "velocity"
    assert out_fast.mask[0].any() and not out_slow.mask[0].any()
    obj = out_fast.objects[0][0]
    assert obj["speed"] > 4 and obj["source"] == "motion"
    twin = build_scorer("objects", **model.hparams())
    twin.load_state_dict(model.state_dict())
    assert torch.allclose(twin.score(fast).score, out_fast.score)


def onnx_identity(shape: list[int]) -> bytes:
    """A one-node ONNX model (Identity, float input and output of `shape`), protobuf written by hand."""

    def varint(n: int) -> bytes:
        out = b""
        while True:
            byte, n = n & 0x7F, n >> 7
            out += bytes([byte | (0x80 if n else 0)])
            if not n:
                return out

    def field(number: int, payload: bytes) -> bytes:
        return varint(number << 3 | 2) + varint(len(payload)) + payload

    def integer(number: int, value: int) -> bytes:
        return varint(number << 3) + varint(value)

    dims = b"".join(field(1, integer(1, d)) for d in shape)
    tensor_type = field(1, integer(1, 1) + field(2, dims))  # elem_type FLOAT, shape
    def value(name): return field(1, name.encode()) + field(2, tensor_type)
    node = field(1, b"x") + field(2, b"y") + field(4, b"Identity")
    graph = field(1, node) + field(2, b"g") + field(11, value("x")) + field(12, value("y"))
    return integer(1, 8) + field(8, field(1, b"") + integer(2, 13)) + field(7, graph)


def test_bad_detector_weights_fail_in_one_line_naming_the_file(tmp_path):
    missing = tmp_path / "nope.onnx"
    with pytest.raises(DetectorError, match=f"{missing}: no such file"):
        build_scorer("objects", detector=str(missing)).bind_storage(None)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a model at all")
    with pytest.raises(DetectorError, match=f"{corrupt}: not a readable ONNX model") as caught:
        load_detector(str(corrupt))
    assert "\n" not in str(caught.value)
    wrong = tmp_path / "wrong.onnx"
    wrong.write_bytes(onnx_identity([1, 3, 320, 320]))
    with pytest.raises(DetectorError, match=rf"{wrong}: expected a YOLOX model .* found input \[1, 3, 320, 320\]"):
        load_detector(str(wrong))


def test_without_weights_the_scorer_uses_moving_regions(caplog):
    with caplog.at_level("WARNING"):
        model = build_scorer("objects", detector=None)
    assert model.boxes == "motion" and "moving-region boxes only" in caplog.text
    with pytest.raises(ValueError, match="attributes must be"):
        build_scorer("objects", boxes="motion", attributes=["colour"])


def test_a_third_fitted_scorer_needs_only_the_protocol():
    """`vad.training.fitting` fits any `FittedScorer` without knowing it (no scorer is named in its code):
    a toy third scorer, the distance of a clip's mean pixel to the normal clips', is fitted as it is."""
    from pathlib import Path

    import vad.training.fitting as fitting
    from vad.models.registry import LearningType, ModelMeta
    from vad.models.scorers import FittedScorer, ScoreOutput
    from vad.training.local import fit

    class Toy(FittedScorer):
        name = "toy_mean"
        max_candidates = 1000
        meta = ModelMeta(name="toy_mean", builder=None, paper="-", learning_type=LearningType.FITTED)

        def __init__(self):
            super().__init__()
            self.register_buffer("centre", torch.zeros(()))
            self.register_buffer("scale", torch.ones(()))

        def fit_rows(self, clips):
            return clips.float().mean(dim=(1, 2, 3))[:, None]

        def fit(self, rows):
            self.centre = rows.mean()
            return {"train/loss": float(rows.std())}

        def calibration_values(self, clips):
            return (clips.float().mean(dim=(1, 2, 3)) - self.centre).abs()

        def calibrate_values(self, values):
            self.scale = values.max().clamp_min(1e-6)
            return (values / self.scale).numpy()[:, None], {"val/loss": float(values.mean())}

        def score(self, clips):
            s = (clips.float().mean(dim=(1, 2, 3)) - self.centre).abs() / self.scale
            return ScoreOutput(score=s, frame_scores=s[:, None].expand(-1, clips.shape[1]))

    rng = np.random.default_rng(0)
    normal = (rng.random((20, 4, 8, 8)) * 40 + 100).astype(np.uint8)
    model = Toy()
    result = fit(model, normal, val_fraction=0.25)
    assert abs(float(model.centre) - 120 / 255) < 0.02 and result.history[0]["val/loss"] >= 0 and np.isfinite(result.threshold)
    bright = torch.full((1, 4, 8, 8), 250 / 255)
    assert float(model.score(bright).score[0]) > 10 * result.threshold
    source = Path(fitting.__file__).read_text()
    code = source.split('"""', 2)[2]  # past the module docstring, which names examples
    assert "patch_knn" not in code and "objects" not in code and "build_bank" not in code
