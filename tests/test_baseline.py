"""The baseline: shapes, single optimisation steps, exact resume, generate's video, evaluate, the CLI on shards."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from meadkit.baseline import losses as L
from meadkit.baseline.batch import gather, make_batch, step_indices
from meadkit.baseline.checkpoint import load_checkpoint, stage_path
from meadkit.baseline.config import DEFAULT_BASELINE, BaselineConfig, load_config
from meadkit.baseline.evaluate import evaluate
from meadkit.baseline.flow import FLOW_UNIT, neutral_flow, readback_noise, warp_as_flow, warp_target
from meadkit.baseline.heatmap import landmark_heatmap, mouth_region, paste
from meadkit.baseline.inference import load_run
from meadkit.baseline.models import (
    Audio2Landmark, FaceClassifier, NeutralToEmotion, PatchDiscriminator, RefineUNet, VGG16Features, label_planes,
)
from meadkit.baseline.pca import MOUTH_IN_MOUTH_JAW, MOUTH_JAW, fit_pca, to_units
from meadkit.baseline.train import STAGE_CLASSES, STAGES, Context, TrainError, train
from meadkit.config import ConfigError
from meadkit.corpus.names import MEAD_FPS
from meadkit.media.sources import Source
from meadkit.media.probe import probe
from meadkit.media.video import iter_frames

S = 32
#: Tiny networks so that every test trains in seconds.
TINY = [
    f"train.size={S}", "train.batch_size=8", "train.log_every=2", "train.val_every=2", "train.val_samples=16",
    "train.checkpoint_every=2", "train.device='cpu'", "classifiers.width=8", "n2e.width=8", "n2e.n_res=1",
    "refine.width=8", "refine.d_width=8", "a2l.hidden=16", "a2l.layers=1", "a2l.n_coeffs=6", "n2e.batch_size=8",
    "refine.batch_size=8",
]


def _mouth_landmarks(opening: float) -> np.ndarray:
    """A 68-point layout in an S x S crop whose mouth (points 48-67) opens with `opening` in [0, 1]."""
    pts = np.zeros((68, 2), np.float32)
    t = np.linspace(-1, 1, 17)
    pts[0:17] = np.stack([0.5 + 0.4 * t, 0.55 + 0.3 * np.sqrt(1 - t**2)], 1)
    pts[17:48] = np.stack([np.linspace(0.2, 0.8, 31), np.linspace(0.3, 0.45, 31)], 1)
    a = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    pts[48:68] = np.stack([0.5 + 0.15 * np.cos(a), 0.75 + (0.02 + 0.1 * opening) * np.sin(a)], 1)
    return pts * S


class FaceSet(torch.utils.data.Dataset):
    """Samples shaped like meadkit.data.ShardDataset's: the emotion paints a colour band (brighter with the
    level), the audio window's centre row opens a dark mouth whose landmarks follow, actors differ in tone."""

    mfcc_shape = (30, 28)

    def __init__(self, n: int = 64, seed: int = 0):
        g = np.random.default_rng(seed)
        self.items = [(int(g.integers(8)), int(g.integers(3)), int(g.integers(2)), g.standard_normal((30, 28)).astype(np.float32))
                      for _ in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    @staticmethod
    def image(emotion: int, level: int, actor: int, opening: float) -> np.ndarray:
        img = np.full((3, S, S), 70 + 40 * actor, np.uint8)
        colour = np.array([(emotion * 37) % 255, (emotion * 91) % 255, (emotion * 151) % 255]) * (level + 1) / 3
        img[:, S // 4 : S // 3] = colour.astype(np.uint8)[:, None, None]
        h = 1 + int(opening * S / 10)
        img[:, 3 * S // 4 - h : 3 * S // 4 + h, S // 3 : 2 * S // 3] = 20
        return img

    def __getitem__(self, i: int) -> dict:
        e, lv, a, mfcc = self.items[i]
        opening = 1 / (1 + math.exp(-2 * float(mfcc[15, 0])))
        return {"frame": torch.from_numpy(self.image(e, lv, a, opening)), "neutral": torch.from_numpy(self.image(7, 0, a, 0.0)),
                "mfcc": torch.from_numpy(mfcc), "landmarks": torch.from_numpy(_mouth_landmarks(opening)),
                "neutral_landmarks": torch.from_numpy(_mouth_landmarks(0.0)),
                "emotion": torch.tensor(e), "level": torch.tensor(lv), "valid": torch.tensor(True)}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks run fastest on one thread (and do not fight the other tests for the cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A run of every stage trained a few steps on FaceSet."""
    run = tmp_path_factory.mktemp("run")
    train(run, load_config(None, TINY), FaceSet(64), FaceSet(16, seed=1), steps=4, log=lambda m: None)
    return run


def test_model_output_shapes():
    b, x = 2, torch.rand(2, 3, S, S) * 2 - 1
    e, lv = torch.tensor([0, 7]), torch.tensor([2, 0])
    assert [t.shape for t in FaceClassifier(8)(x, x)] == [(b, 8), (b, 3)]
    assert [t.shape for t in FaceClassifier(8, reference=True)(x, x)] == [(b, 8), (b, 3)]
    torch.manual_seed(0)
    with_ref, alone, other = FaceClassifier(8, reference=True), FaceClassifier(8), torch.rand(2, 3, S, S) * 2 - 1
    assert not torch.equal(with_ref(x, x)[0], with_ref(x, other)[0])  # the neutral frame reaches the reference classifier
    assert torch.equal(alone(x, x)[0], alone(x, other)[0])  # and not the paper's
    diff = FaceClassifier(8, reference="difference")
    stack = FaceClassifier(8, reference="stack")
    with torch.no_grad():  # the same trunk fed [frame - neutral, frame] computes what `stack` does with first-layer
        w = diff.trunk[0][0].weight  # weights (a, b) on [frame, neutral] given (a + b, -b) on [diff, frame]
        stack.load_state_dict(diff.state_dict())
        stack.trunk[0][0].weight.copy_(torch.cat([w[:, :3] + w[:, 3:], -w[:, :3]], 1))
    assert torch.allclose(diff(x, other)[0], stack(x, other)[0], atol=1e-5)
    assert FaceClassifier(8, reference=True).reference == "stack"  # runs made before the choice: their hparams say True
    with pytest.raises(ValueError, match="reference must be one of"):
        FaceClassifier(8, reference="sideways")
    assert Audio2Landmark(20, 60, 3, True, 28)(torch.randn(b, 30, 28), e, lv).shape == (b, 20)
    assert Audio2Landmark(20, 60, 3, False, 28)(torch.randn(b, 30, 28), e, lv).shape == (b, 20)
    assert NeutralToEmotion(8, 1)(x, e, lv).shape == (b, 3, S, S)
    hm = landmark_heatmap(torch.full((b, 37, 2), 10.0), S)
    assert hm.shape == (b, 1, S, S)
    out = RefineUNet(8)(x, hm)
    assert out.shape == (b, 3, S, S) and out.abs().max() < 1
    assert PatchDiscriminator(8)(x, hm).shape == (b, 1, S // 8, S // 8)
    planes = label_planes(e, lv, S)
    assert planes.shape == (b, 11, S, S) and planes[1, 7].eq(1).all() and planes[1, 8].eq(1).all() and planes[1].sum(0).eq(2).all()


def test_neutral_flow_measures_a_known_move_and_the_flow_classifier_keeps_a_gradient():
    """A face texture moved by (3, -2) px reads as that flow in FLOW_UNIT x S; the classifier reads the flow, and a
    loss through it still reaches the frame by the difference channels (what n2e's classifier loss needs)."""
    rng = np.random.default_rng(0)
    tex = cv2.GaussianBlur(rng.uniform(0, 255, (96, 96)).astype(np.float32), (0, 0), 2.0)
    tex = (tex - tex.min()) / (tex.max() - tex.min()) * 2 - 1
    neutral = torch.from_numpy(tex[16:80, 16:80].copy()).expand(3, -1, -1)[None]
    moved = torch.from_numpy(tex[18:82, 13:77].copy()).expand(3, -1, -1)[None]  # content moves right 3, up 2
    flow = neutral_flow(moved, neutral)[0] * FLOW_UNIT * 64
    inner = flow[:, 12:-12, 12:-12].reshape(2, -1).median(1).values
    assert inner.tolist() == pytest.approx([3.0, -2.0], abs=0.15)
    assert neutral_flow(neutral, neutral).abs().max() < 0.05
    target = warp_target(neutral, moved)  # n2e's warp target: sampling the neutral face at it gives the frame
    grid = F.affine_grid(torch.eye(2, 3)[None], [1, 3, 64, 64], align_corners=False)
    rebuilt = F.grid_sample(neutral, grid + target, padding_mode="border", align_corners=False)
    assert (rebuilt - moved)[..., 8:-8, 8:-8].abs().mean() < 0.1 * (neutral - moved)[..., 8:-8, 8:-8].abs().mean()
    fine = neutral_flow(moved, neutral, "fine")[0] * FLOW_UNIT * 64  # the flow-only classifier's: every pixel
    assert fine[:, 12:-12, 12:-12].reshape(2, -1).median(1).values.tolist() == pytest.approx([3.0, -2.0], abs=0.15)
    big = [F.interpolate(t, size=128, mode="bilinear", align_corners=False) for t in (moved, neutral)]
    fine_big = neutral_flow(*big, "fine")  # computed at FINE_SIDE whatever the crop size, in the crop's own units
    assert fine_big.shape == (1, 2, 128, 128)
    assert fine_big[0, :, 24:-24, 24:-24].reshape(2, -1).median(1).values.tolist() == pytest.approx(
        (fine[:, 12:-12, 12:-12].reshape(2, -1).median(1).values / (FLOW_UNIT * 64)).tolist(), abs=0.05)
    torch.manual_seed(0)
    clf = FaceClassifier(8, reference="flow")
    assert clf.trunk[0][0].weight.shape[1] == 5 and clf.image_gradient
    assert not torch.equal(clf(moved, neutral)[0], clf(neutral, neutral)[0])
    x = moved.clone().requires_grad_(True)
    clf(x, neutral)[0].sum().backward()
    assert x.grad.abs().sum() > 0
    only = FaceClassifier(8, reference="flow_only")
    assert only.trunk[0][0].weight.shape[1] == 2 and not only.image_gradient
    assert not torch.equal(only(moved, neutral)[0], only(neutral, neutral)[0])
    x = moved.clone().requires_grad_(True)  # what image_gradient says: nothing reaches the images
    assert torch.autograd.grad(only(x, neutral)[0].sum(), x, allow_unused=True) == (None,)
    as_flow = warp_as_flow(warp_target(neutral, moved, "fine"))  # n2e's warp, read as the flow the classifier sees
    assert as_flow[0, :, 12:-12, 12:-12].reshape(2, -1).median(1).values.tolist() == pytest.approx([3 / 3.2, -2 / 3.2], abs=0.05)
    w = warp_target(neutral, moved, "fine").requires_grad_(True)  # scored with a gradient to the warp, where DIS has none
    e_logits, _ = only.read_flow(warp_as_flow(w))
    assert torch.autograd.grad(e_logits[0, 1], w)[0].abs().sum() > 0
    with pytest.raises(ValueError, match="flow-only"):
        clf.read_flow(as_flow)


def test_readback_noise_is_smooth_seeded_and_of_the_std_bilinear_upsampling_gives():
    """n2e's warp is read through smooth noise (iid N(0, sigma) on 4-px cells, bilinearly upsampled): zero leaves the
    flow as it is; the same seed draws the same noise (resume); its std is sigma x 0.656 (the mean of (1-t)^2 + t^2
    over the samples t = 1/8, 3/8, 5/8, 7/8 between cells, squared for two dimensions, square-rooted), and neighbouring
    pixels move together."""
    flow = torch.randn(64, 2, 64, 64)
    assert torch.equal(readback_noise(flow, 0.0), flow)
    torch.manual_seed(3)
    a = readback_noise(flow, 0.3) - flow
    torch.manual_seed(3)
    assert torch.equal(readback_noise(flow, 0.3) - flow, a)
    inner = a[..., 4:-4, 4:-4]  # away from the border, where the upsampling clamps
    assert (inner.std() / 0.3).item() == pytest.approx(0.656, abs=0.02)
    assert (inner[..., 1:] - inner[..., :-1]).std() < 0.5 * inner.std()  # 1.41 x for independent pixels


def test_heatmap_peaks_on_the_landmarks_and_mouth_mask_covers_them():
    pts = torch.tensor([[[5.0, 20.0], [25.0, 8.0]]])
    hm = landmark_heatmap(pts, S)[0, 0]
    assert hm[20, 5] == pytest.approx(1.0) and hm[8, 25] == pytest.approx(1.0) and hm[0, 31] < 1e-3
    mouth = torch.from_numpy(_mouth_landmarks(0.5)[48:68])[None]
    mask = L.mouth_mask(mouth, S)[0, 0]
    ys, xs = mouth[0, :, 1].round().long(), mouth[0, :, 0].round().long()
    assert mask[ys, xs].eq(1).all() and mask[0, 0] == 0 and 0 < mask.mean() < 0.5


def test_paste_keeps_the_coarse_face_outside_the_mouth_and_chin_box_and_feathers_its_edge():
    size = 64
    mouth_jaw = torch.from_numpy(_mouth_landmarks(0.5)[MOUTH_JAW] * (size / S))[None]
    region = mouth_region(mouth_jaw, size)[0, 0]
    mouth, chin = mouth_jaw[0, MOUTH_IN_MOUTH_JAW], mouth_jaw[0, 8]
    assert region[mouth[:, 1].round().long(), mouth[:, 0].round().long()].eq(1).all()
    assert region[chin[1].round().long() - 1, chin[0].round().long()] == 1  # the chin moves with the mouth: inside
    assert region[:10].eq(0).all() and region[:, :5].eq(0).all()  # eyes and brows: never painted
    row = region[mouth[:, 1].mean().round().long()]  # across the mouth: a 5-px ramp each side (64 px / 16, odd)
    assert sorted(set(row.mul(5).round().int().tolist())) == [0, 1, 2, 3, 4, 5]
    assert torch.allclose(row * 5, (row * 5).round(), atol=1e-5) and (row.diff().abs() <= 0.2 + 1e-6).all()
    coarse, refined = torch.zeros(1, 3, size, size), torch.ones(1, 3, size, size)
    out = paste(coarse, refined, mouth_region(mouth_jaw, size))
    assert torch.equal(out[0, 0], region) and torch.equal(out[:, :, region == 0], coarse[:, :, region == 0])
    lost = torch.full_like(mouth_jaw, float("nan"))  # a frame without landmarks: n2e's face as it is
    assert torch.equal(paste(coarse, refined, mouth_region(lost, size)), coarse)


def test_a_run_saved_before_paste_reads_as_whole_face_refinement(tiny_run):
    old = json.loads(load_config().to_json())
    del old["refine"]["paste"]
    assert BaselineConfig.from_json(json.dumps(old)).refine.paste is False
    assert load_config().refine.paste is True and load_run(tiny_run).config.refine.paste is True


class OwnMouths(FaceSet):
    """FaceSet with one mouth per actor: each of `actors` actors has its mouth and jaw shifted and widened its own way,
    in its neutral frame and while it speaks (what identity does to a real corpus's landmarks)."""

    def __init__(self, n: int, actors: range, seed: int = 0):
        super().__init__(n, seed)
        g = np.random.default_rng(seed + 100)
        self.actor_of = g.choice(np.asarray(actors), n)
        self.shift = {a: np.random.default_rng(a).uniform(-3, 3, 2).astype(np.float32) for a in actors}
        self.width = {a: np.float32(np.random.default_rng(a + 1000).uniform(0.85, 1.15)) for a in actors}

    def _own(self, pts: torch.Tensor, a: int) -> torch.Tensor:
        out = pts.clone()
        centre = out[MOUTH_JAW].mean(0)
        out[MOUTH_JAW, 0] = (out[MOUTH_JAW, 0] - centre[0]) * self.width[a] + centre[0]
        out[MOUTH_JAW] += torch.from_numpy(self.shift[a])
        return out

    def __getitem__(self, i: int) -> dict:
        item, a = super().__getitem__(i), int(self.actor_of[i])
        item["landmarks"], item["neutral_landmarks"] = self._own(item["landmarks"], a), self._own(item["neutral_landmarks"], a)
        return item


def test_a2l_anchored_on_the_neutral_mouth_keeps_an_unseen_face_s_own_mouth(tmp_path):
    """Trained on 12 actors, tested on 6 others: starting from each face's neutral mouth (`a2l.anchor = "neutral"`)
    the mouth error is well under the paper's mean-shape start, which cannot know a new face's mouth."""
    train_set, test_set = OwnMouths(256, range(12)), OwnMouths(128, range(12, 18), seed=5)
    err = {}
    for anchor in ("neutral", "none"):
        run = tmp_path / anchor
        train(run, load_config(None, [*TINY, f"a2l.anchor='{anchor}'", "a2l.steps=150", "a2l.lr=3e-3"]), train_set,
              None, stages=["a2l"], log=lambda m: None)
        net = load_checkpoint(stage_path(run, "a2l"))
        a2l = Audio2Landmark(**net["hparams"], n_mfcc=28)
        a2l.load_state_dict(net["models"]["a2l"])
        b = make_batch(gather(test_set, list(range(len(test_set)))), S, torch.device("cpu"))
        with torch.no_grad():
            pred = a2l.predict_shape(b.mfcc, b.emotion, b.level, to_units(b.neutral_landmarks[:, MOUTH_JAW], S)) * S - 0.5
        err[anchor] = (pred - b.landmarks[:, MOUTH_JAW]).norm(dim=-1).mean().item()
    assert err["neutral"] < 0.5 * err["none"], err


def test_n2e_warp_starts_as_the_plain_transform_and_moves_pixels_by_its_flow():
    """At initialisation the flow is zero (the paper's transform, same weights, same output); a flow of one pixel to
    the right with no painted change returns the neutral face shifted by one pixel. Old runs' hparams lack `warp`."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, S, S) * 1.6 - 0.8
    e, lv = torch.tensor([0, 4]), torch.tensor([2, 1])
    warped, plain = NeutralToEmotion(8, 1, warp=True), NeutralToEmotion(8, 1)
    state = warped.state_dict()
    last = [k for k in state if k.startswith("decoder.") and k.count(".") == 2][-2:]  # the final conv's weight, bias
    plain.load_state_dict({k: v[:3] if k in last else v for k, v in state.items()})
    torch.testing.assert_close(warped(x, e, lv), plain(x, e, lv), atol=1e-5, rtol=0)
    with torch.no_grad():
        conv = warped.decoder[-1]
        conv.weight.zero_(), conv.bias.zero_()
        conv.bias[3] = math.atanh((2 / S) / warped.max_flow)  # x flow of one pixel (grid units are 2 / S per pixel)
    out = warped(x, e, lv)
    torch.testing.assert_close(out[..., :-1], x[..., 1:], atol=1e-5, rtol=0)
    assert NeutralToEmotion(8, 1).warp is False


def test_a2l_anchor_keeps_a_new_face_whole_and_falls_back_to_the_mean_shape():
    """Anchored, the PCA holds the changes from a neutral mouth, so a face none of the training faces resembles comes
    out whole (a PCA of the training faces' shapes could not hold it); a neutral frame without a face (NaN) or no
    anchor at all starts from the mean shape."""
    opening = [torch.from_numpy(_mouth_landmarks(o))[MOUTH_JAW] / S for o in np.linspace(0, 1, 10)]
    shifts = [torch.tensor([0.0, 0.0]), torch.tensor([0.02, 0.01]), torch.tensor([-0.01, 0.02])]
    shapes = torch.stack([o + d for d in shifts for o in opening])
    anchors = torch.stack([opening[0] + d for d in shifts for _ in opening])
    net = Audio2Landmark(6, 16, 1, True, 28, anchor="neutral")
    net.set_mean_shape(shapes.flatten(1).mean(0))
    net.set_statistics(fit_pca(shapes - net.start(anchors, len(shapes)), 6), torch.zeros(28), torch.ones(28),
                       torch.zeros(8, 3, 2 * len(MOUTH_JAW)))
    new_face = torch.tensor([0.12, -0.09])  # far from the three training faces
    want, neutral = opening[7] + new_face, opening[0] + new_face
    torch.nn.init.zeros_(net.head.weight)
    with torch.no_grad():
        net.head.bias.copy_(net.target(want[None], neutral[None])[0])
    e, lv, mfcc = torch.tensor([1, 2]), torch.tensor([0, 2]), torch.randn(2, 30, 28)
    out = net.predict_shape(mfcc, e, lv, torch.stack([neutral, torch.full_like(neutral, float("nan"))]))
    torch.testing.assert_close(out[0], want, atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], net.mean_shape() + want - neutral, atol=1e-5, rtol=0)
    torch.testing.assert_close(net.predict_shape(mfcc, e, lv)[0], out[1], atol=1e-6, rtol=0)
    paper = Audio2Landmark(6, 16, 1, True, 28)  # runs made before the choice: no anchor in their hparams
    assert paper.anchor == "none" and "shape_mean" not in paper.state_dict()
    with pytest.raises(ValueError, match="anchor must be one of"):
        Audio2Landmark(6, 16, 1, True, 28, anchor="chin")


def test_pca_round_trip_and_rank():
    shapes = torch.from_numpy(np.stack([_mouth_landmarks(o) for o in np.linspace(0, 1, 10)]))[:, MOUTH_JAW] / S
    pca = fit_pca(shapes, 20)
    assert pca.components.shape[0] <= 10
    torch.testing.assert_close(pca.decode(pca.encode(shapes)), shapes, atol=1e-5, rtol=0)
    torch.testing.assert_close(pca.components @ pca.components.T, torch.eye(pca.components.shape[0]), atol=1e-5, rtol=0)


def test_vgg16_features_use_torchvision_layer_indices(tmp_path):
    net = VGG16Features()
    convs = sorted(int(k.split(".")[0]) for k in net.features.state_dict() if k.endswith("weight"))
    assert convs == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21]  # torchvision vgg16().features conv indices up to relu4_3
    state = {f"features.{k}": torch.randn_like(v) for k, v in net.features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(4, 4)
    torch.save(state, tmp_path / "vgg16.pth")
    loaded = L.load_vgg16(tmp_path / "vgg16.pth")
    torch.testing.assert_close(loaded.features[21].weight, state["features.21.weight"])
    feats = loaded(torch.zeros(1, 3, 32, 32))
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512]
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(L.VGGWeightsError):
        L.load_vgg16(tmp_path / "bad.pth")


def test_config_overrides_and_errors(tmp_path):
    cfg = load_config(None, ["refine.w_tv=1e-4", "train.views=front,left_30", "train.amp=true"])
    assert cfg.refine.w_tv == 1e-4 and cfg.train.views == ("front", "left_30") and cfg.train.amp is True
    assert cfg.refine.w_l1 == cfg.refine.w_adv == cfg.n2e.w_perceptual == 1.0 and load_config().refine.w_tv == 1e-5
    for bad in (["refine.nope=1"], ["nope.x=1"], ["train.size=big"], ["train.size=6.5"]):
        with pytest.raises(ConfigError):
            load_config(None, bad)
    assert load_config(DEFAULT_BASELINE) == load_config()


def test_cuda_without_a_gpu_is_a_readable_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the cuda path runs instead")
    with pytest.raises(TrainError, match="no CUDA device"):
        train(tmp_path, load_config(None, [*TINY, "train.device='cuda'"]), FaceSet(8), None, log=lambda m: None)


def test_batches_are_a_function_of_seed_stage_and_step():
    assert step_indices(50, 8, 0, 1, 3) == step_indices(50, 8, 0, 1, 3)
    assert step_indices(50, 8, 0, 1, 3) != step_indices(50, 8, 0, 2, 3)
    epoch = sorted(sum((step_indices(48, 8, 0, 1, s) for s in range(6)), []))
    assert epoch == list(range(48))  # one epoch visits every sample once


@pytest.mark.parametrize("amp", [False, True])
@pytest.mark.parametrize("stage", STAGES)
def test_one_step_reduces_the_loss_on_a_fixed_batch(tiny_run, tmp_path, stage, amp):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    cfg = load_config(None, [*TINY, f"train.amp={str(amp).lower()}", "n2e.flow_noise=0.0"])  # no noise draw in n2e's loss
    ctx = Context(run, cfg, torch.device("cpu"), FaceSet(64), None, log=lambda m: None)
    torch.manual_seed(0)
    st = STAGE_CLASSES[stage](ctx)
    st.prepare()
    batch = make_batch(gather(FaceSet(64), list(range(16))), S, torch.device("cpu"))
    keys = {"classifiers": ("loss_emotion", "loss_level"), "a2l": ("loss_pca",), "n2e": ("l1", "perceptual", "flow", "classifier"),
            "refine": ("l1", "mouth_l1", "keep", "perceptual", "classifier")}[stage]  # the unit-weight terms
    before = sum(st.train_step(batch).get(k, 0.0) for k in keys)  # losses are measured before each update
    after = sum(st.train_step(batch).get(k, 0.0) for k in keys)
    assert after < before


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_resume_gives_identical_next_steps(tiny_run, tmp_path, stage):
    """4 steps straight == killed after the step-2 checkpoint, resumed to 4: same weights, optimizer state, log rows."""
    cfg = load_config(None, TINY)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    for d in (straight, resumed):
        shutil.copytree(tiny_run, d)
        stage_path(d, stage).unlink()
    quiet = lambda m: None  # noqa: E731
    train(straight, cfg, FaceSet(64), FaceSet(16, seed=1), stages=[stage], steps=4, log=quiet)

    def kill_at_step_4(msg: str) -> None:  # the step-4 log line comes before the step-4 checkpoint
        if "step 4/4" in msg:
            raise Killed

    with pytest.raises(Killed):
        train(resumed, cfg, FaceSet(64), FaceSet(16, seed=1), stages=[stage], steps=4, log=kill_at_step_4)
    assert load_checkpoint(stage_path(resumed, stage))["step"] == 2
    with pytest.raises(RuntimeError, match="--resume"):
        train(resumed, cfg, FaceSet(64), FaceSet(16, seed=1), stages=[stage], steps=4, log=quiet)
    train(resumed, cfg, FaceSet(64), FaceSet(16, seed=1), stages=[stage], steps=4, resume=True, log=quiet)
    a, b = load_checkpoint(stage_path(straight, stage)), load_checkpoint(stage_path(resumed, stage))
    assert a["step"] == b["step"] == 4
    for kind in ("models", "optimizers"):
        for name in a[kind]:
            ta, tb = a[kind][name], b[kind][name]
            flat_a = {k: v for k, v in _flatten(ta)}
            flat_b = {k: v for k, v in _flatten(tb)}
            assert flat_a.keys() == flat_b.keys()
            for k, va in flat_a.items():
                same = torch.equal(va, flat_b[k]) if isinstance(va, torch.Tensor) else va == flat_b[k]
                assert same, (kind, name, k)
    log_a = (straight / "logs" / f"{stage}.csv").read_text().splitlines()
    log_b = (resumed / "logs" / f"{stage}.csv").read_text().splitlines()
    assert log_a == log_b and len(log_a) > 1


class Killed(Exception):
    """Stands for the process being killed mid-stage."""


def _flatten(obj, prefix=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flatten(v, f"{prefix}{k}.")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _flatten(v, f"{prefix}{i}.")
    else:
        yield prefix, obj


def test_checkpoints_load_with_weights_only_and_hold_the_pca(tiny_run):
    ck = torch.load(stage_path(tiny_run, "a2l"), weights_only=True)
    comps = ck["models"]["a2l"]["pca_components"]
    assert comps.shape == (6, 2 * len(MOUTH_JAW)) and comps.abs().sum() > 0
    model = load_run(tiny_run)
    labels = torch.tensor([0, 4, 7])
    assert model.size == S and model.mouth_jaw(torch.randn(3, 30, 28), labels, labels % 3).shape == (3, len(MOUTH_JAW), 2)


def test_evaluate_reports_every_class_and_its_confusions(tiny_run):
    """The accuracies and confusion matrices equal the model's own predictions on the evaluated samples, per
    emotion and per level (rows: true class, columns: predicted)."""
    from meadkit.baseline.batch import fixed_indices, gather, make_batch
    from meadkit.corpus.names import PAPER_EMOTIONS

    data, model = FaceSet(24, seed=2), load_run(tiny_run)
    m = evaluate(model, data, max_samples=20, batch_size=8)
    assert m["n_samples"] == 20 and m["n_landmark_frames"] == 20
    idx = fixed_indices(len(data), 20, 0)
    true_e = np.array([data.items[i][0] for i in idx])
    true_l = np.array([data.items[i][1] for i in idx])
    b = make_batch(gather(data, idx), model.size, "cpu")
    with torch.no_grad():
        pe, pl = (p.numpy() for p in model.classify(b.frame, b.neutral))
    expect = np.zeros((8, 8), int)
    np.add.at(expect, (true_e, pe), 1)
    conf = m["emotion_confusion_real"]
    assert conf["labels"] == list(PAPER_EMOTIONS) and np.array_equal(conf["matrix"], expect)
    assert m["emotion_accuracy_real"] == pytest.approx(np.mean(pe == true_e))
    assert m["intensity_accuracy_real"] == pytest.approx(np.mean(pl == true_l))
    for k, name in enumerate(PAPER_EMOTIONS):
        if (true_e == k).any():
            assert m["emotion_accuracy_real_per_emotion"][name] == pytest.approx(np.mean(pe[true_e == k] == k))
    for lv in range(3):
        sel = true_l == lv
        assert m["intensity_accuracy_real_per_level"][f"level_{lv + 1}"] == pytest.approx(np.mean(pl[sel] == lv))
        assert m["emotion_accuracy_real_per_level"][f"level_{lv + 1}"] == pytest.approx(np.mean(pe[sel] == true_e[sel]))
    assert np.array(m["emotion_confusion_generated"]["matrix"]).sum() == 20
    assert m["a2l_mouth_error_px"] > 0 and m["mean_shape_mouth_error_px"] > 0 and m["psnr_db"] > 0
    mouth = [MOUTH_JAW[k] for k in MOUTH_IN_MOUTH_JAW]  # the neutral frame's own mouth, as a prediction of the frame's
    own = (b.neutral_landmarks[:, mouth] - b.landmarks[:, mouth]).norm(dim=-1).mean(1).mean().item()
    assert m["neutral_frame_mouth_error_px"] == pytest.approx(own) and m["a2l_anchor"] == "neutral"


def test_class_weights_balance_the_frames_of_each_class():
    from meadkit.baseline.batch import class_weights

    data = FaceSet(64)
    counts = np.bincount([e for e, *_ in data.items], minlength=8)
    w = class_weights(data, "emotion", 8).numpy()
    per_class = w * counts
    assert np.allclose(per_class[counts > 0], per_class[counts > 0][0]) and np.isclose(per_class.sum(), counts.sum())
    assert (w[counts == 0] == 0).all()


def test_same_seed_same_threads_same_checkpoints_and_figures(tiny_run, tmp_path):
    """Two runs from scratch with one seed on one thread: bit-identical checkpoints and evaluation; another seed
    differs (so the comparison can fail)."""
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        runs[name] = tmp_path / name
        train(runs[name], load_config(None, TINY + [f"train.seed={seed}"]), FaceSet(64), FaceSet(16, seed=1), steps=4,
              log=lambda m: None)
    evals = {k: evaluate(load_run(r), FaceSet(24, seed=2), max_samples=20, batch_size=8) for k, r in runs.items()}
    assert evals["a"] == evals["b"] and evals["a"] != evals["c"]
    for stage in STAGES:
        a, b, c = (load_checkpoint(stage_path(runs[k], stage)) for k in "abc")
        flat = {k: dict(_flatten(ck["models"])) for k, ck in (("a", a), ("b", b), ("c", c))}
        assert all(torch.equal(v, flat["b"][k]) for k, v in flat["a"].items() if isinstance(v, torch.Tensor)), stage
        assert not all(torch.equal(v, flat["c"][k]) for k, v in flat["a"].items() if isinstance(v, torch.Tensor)), stage


@pytest.mark.slow
def test_generate_writes_a_playable_mp4_with_audio_of_the_right_length(tiny_run, tmp_path, monkeypatch):
    """... and a2l starts every frame's mouth from the photo's own landmarks."""
    from meadkit.baseline.inference import TrainedBaseline
    from meadkit.inputs import align_face

    skimage_data = pytest.importorskip("skimage.data")
    anchors, mouth_jaw = [], TrainedBaseline.mouth_jaw
    monkeypatch.setattr(TrainedBaseline, "mouth_jaw", lambda self, *a: anchors.append(a[3]) or mouth_jaw(self, *a))
    face = tmp_path / "astronaut.png"
    cv2.imwrite(str(face), cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR))
    sr, seconds = 48000, 1.3
    t = np.arange(int(sr * seconds)) / sr
    speech = (0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    sf.write(tmp_path / "speech.wav", speech, sr)
    out = tmp_path / "out.mp4"
    from meadkit.cli import main

    res = CliRunner().invoke(main, ["generate", str(tiny_run), "--image", str(face), "--audio", str(tmp_path / "speech.wav"),
                                    "--emotion", "happy", "--level", "3", "-o", str(out)])
    assert res.exit_code == 0, res.output
    p = probe(Source(str(out)))
    assert p.has_audio and p.video_codec == "h264" and (p.width, p.height) == (S, S)
    assert abs(p.audio_duration_s - seconds) < 0.05
    frames = list(iter_frames(Source(str(out))))
    assert len(frames) == round(seconds * MEAD_FPS)
    assert abs(len(frames) / float(MEAD_FPS) - seconds) < 1 / float(MEAD_FPS)
    assert frames[0].image.std() > 1  # a face, not a blank frame
    crop, landmarks = align_face(cv2.imread(str(face)))
    want = (torch.from_numpy(landmarks) + 0.5) * S / crop.shape[1] - 0.5
    assert sum(map(len, anchors)) == len(frames) and all(torch.allclose(a, want.expand_as(a)) for a in anchors)
    bad = CliRunner().invoke(main, ["generate", str(tiny_run), "--image", str(face), "--audio", str(tmp_path / "speech.wav"),
                                    "--emotion", "bored", "-o", str(tmp_path / "x.mp4")])
    assert bad.exit_code != 0 and "unknown emotion" in bad.output and not (tmp_path / "x.mp4").exists()


@pytest.mark.slow
def test_cli_trains_on_the_shard_train_split_and_evaluates_the_test_split(tmp_path):
    from fakes import make_prepared

    from meadkit.cli import main
    from meadkit.shards import ShardConfig, build_shards

    from meadkit.inputs import pipeline_settings
    from meadkit.config import load_pipeline

    prepared, shards, run = tmp_path / "out", tmp_path / "shards", tmp_path / "run"
    make_prepared(prepared)
    made_with = load_pipeline(overrides=["faces.crop_size=192"]).to_toml()  # as prepare records it
    (prepared / "config.toml").write_text(made_with)
    build_shards(prepared, shards, ShardConfig(size=S))
    r = CliRunner().invoke(main, ["train", str(shards), "-o", str(run), "--steps", "2", *sum((["--set", s] for s in TINY), [])])
    assert r.exit_code == 0, r.output
    assert (run / "pipeline.toml").read_text() == made_with  # generate's default: the settings that made the shards
    assert pipeline_settings(run / "pipeline.toml")[0].crop_size == 192
    log = (run / "train.log").read_text()  # the default flow-only classifier passes no gradient: the losses through it are off
    assert "train samples" in r.output and "perceptual loss: OFF" in log and "refine: classifier loss OFF" in log
    assert "SUBSTITUTE" not in log and "classifier=0 " in log  # refine's logged classifier loss
    n2e_lines = [line for line in log.splitlines() if line.startswith("n2e step")]
    assert n2e_lines and all(" classifier=" in line for line in n2e_lines)  # n2e's warp scored by the classifier
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["size"] == S
    again = CliRunner().invoke(main, ["train", str(shards), "-o", str(run), "--stage", "a2l", "--steps", "2"])
    assert again.exit_code != 0 and "--resume" in again.output
    r = CliRunner().invoke(main, ["evaluate", str(run), str(shards), "--split", "test", "-o", str(tmp_path / "eval.json")])
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "eval.json").read_text())
    assert metrics["split"] == "test" and metrics["n_available"] == 18  # the one test clip (M003 sad, 18 frames)
    other = tmp_path / "run-flow"  # a classifier that reads the images too: the substitute perceptual loss, no n2e read
    sets = [*TINY, "classifiers.reference='flow'", "n2e.flow='medium'"]
    r = CliRunner().invoke(main, ["train", str(shards), "-o", str(other), "--steps", "2", *sum((["--set", s] for s in sets), [])])
    assert r.exit_code == 0, r.output
    log = (other / "train.log").read_text()
    assert "SUBSTITUTE" in log and "OFF" not in log
    assert [line for line in log.splitlines() if line.startswith("n2e step") and " classifier=" in line] == []
    r = CliRunner().invoke(main, ["evaluate", str(other), str(shards), "--split", "test", "-o", str(tmp_path / "eval2.json")])
    assert r.exit_code == 0 and json.loads((tmp_path / "eval2.json").read_text())["n_available"] == 18, r.output


@pytest.mark.parametrize("pipeline, says", [
    ("[timebase]\nfps = 25\n", "[timebase] fps = 25 (the paper's: 'source')"),
    ("[faces]\ncrop = \"fixed\"\n", "[faces] crop = 'fixed' (the paper's: 'aligned')"),
    ("[features]\nsets = [\"mel80\"]\n", "feature sets mel80 lack mfcc28"),
    ("[features]\ncontext = 25\n", "[features] context = 25 (the paper's: 30)"),
    ("[timebase]\nfps = \"source\"\n[faces]\ncrop = \"aligned\"\n", None),
])
def test_train_refuses_shards_not_made_with_the_papers_recipe(shard_set, tmp_path, pipeline, says):
    """A recorded [timebase] fps other than "source", [faces] crop other than "aligned", or a shard set without
    mfcc28 is refused in one line (exit code 1, no traceback); missing tables mean the paper's settings."""
    from meadkit.baseline.batch import check_paper_recipe
    from meadkit.cli import main

    shards = tmp_path / "shards"
    shutil.copytree(shard_set, shards)
    meta = json.loads((shards / "meta.json").read_text())
    meta["pipeline"] = pipeline
    if "mel80" in pipeline:
        meta["feature_sets"] = ["mel80"]
    (shards / "meta.json").write_text(json.dumps(meta))
    if says is None:
        check_paper_recipe(meta, shards)
        return
    r = CliRunner().invoke(main, ["train", str(shards), "-o", str(tmp_path / "run"), "--verify", "none"])
    assert r.exit_code == 1 and "Traceback" not in r.output and not (tmp_path / "run").exists()
    assert r.output.count("\n") == 1 and says in r.output and "paper's recipe" in r.output, r.output


class FacelessFrames(FaceSet):
    """FaceSet where every fourth frame has no face: landmarks NaN and valid false, as the shards store such frames
    (a partial clip: the face lost for a few frames); another fourth has a neutral reference frame without one."""

    def __getitem__(self, i: int) -> dict:
        item = super().__getitem__(i)
        if i % 4 == 0:
            item["landmarks"] = torch.full_like(item["landmarks"], float("nan"))
            item["valid"] = torch.tensor(False)
        if i % 4 == 1:  # and a neutral reference frame without one
            item["neutral_landmarks"] = torch.full_like(item["neutral_landmarks"], float("nan"))
        return item


@pytest.mark.parametrize("stage", STAGES)
def test_frames_without_a_face_do_not_poison_training(tiny_run, tmp_path, stage):
    """A partial clip's faceless frames (NaN landmarks) once turned the audio-to-landmarks loss NaN ~170 steps into a
    real run, and the refinement's heatmap NaN: every loss stays finite, the weights too, and the a2l loss is the one
    of the frames with a face alone."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    ctx = Context(run, load_config(None, TINY), torch.device("cpu"), FacelessFrames(64), None, log=lambda m: None)
    torch.manual_seed(0)
    st = STAGE_CLASSES[stage](ctx)
    st.prepare()
    batch = make_batch(gather(FacelessFrames(64), list(range(16))), S, torch.device("cpu"))
    assert batch.landmarks[~batch.valid].isnan().all() and batch.valid.sum() == 12
    if stage == "a2l":
        faced = make_batch(gather(FacelessFrames(64), [i for i in range(16) if i % 4]), S, torch.device("cpu"))
        st.net.eval()  # no dropout: the same forward pass twice
        with torch.no_grad():
            anchor = to_units(faced.neutral_landmarks[:, MOUTH_JAW], S)
            want = ((st.net(faced.mfcc, faced.emotion, faced.level) - st.net.target(
                to_units(faced.landmarks[:, MOUTH_JAW], S), anchor)) ** 2).mean().item()
        st.net.train()
        assert st.train_step(batch)["loss_pca"] == pytest.approx(want, rel=1e-5)
    for _ in range(2):
        assert all(math.isfinite(v) for v in st.train_step(batch).values())
    assert all(torch.isfinite(p).all() for m in st.models.values() for p in m.parameters())
    assert all(math.isfinite(v) for v in st.validate(batch).values())


def test_jitter_greys_a_fraction_of_the_pairs_alike():
    """A frame and its neutral reference get the same draw: both grey (three equal channels) or neither."""
    from meadkit.baseline.batch import jitter

    torch.manual_seed(0)
    x = torch.rand(2000, 6, 8, 8) * 2 - 1
    out = jitter(x, grey=0.3)
    grey = [(out[:, k:k + 3].std(1) < 1e-6).flatten(1).all(1) for k in (0, 3)]
    assert torch.equal(grey[0], grey[1]) and abs(grey[0].float().mean().item() - 0.3) < 0.03
    assert not (jitter(x)[:, :3].std(1) < 1e-6).flatten(1).all(1).any()  # grey=0: none
