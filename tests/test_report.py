"""`meadkit report`: the HTML page of a prepared folder, on a hand-made OUT (fast) and a real prepare (slow)."""
import base64
import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from skimage.data import astronaut

from meadkit.commands.report import command
from meadkit.corpus.names import MEAD_FPS, TakeKey, audio_relpath, gender, video_relpath
from meadkit.manifest import read_table, write_rows
from meadkit.media.audio import write_audio
from meadkit.media.video import VideoWriter
from meadkit.records import CLIPS_SCHEMA, RECORDINGS_SCHEMA, STATUS_SCHEMA, SYNC_SCHEMA
from meadkit.report import build_report, render_report
from meadkit.report.audio import section_audio
from meadkit.report.completeness import completeness
from meadkit.report.contact_sheet import contact_cells
from meadkit.report.corpus import corpus_table
from meadkit.report.faces import section_faces
from meadkit.report.inputs import Inputs
from meadkit.report.landmarks import landmark_frames
from meadkit.report.training import long_metrics, section_training

SECTIONS = ("overview", "completeness", "problems", "sync", "faces", "audio", "curation", "training")
PNG = "data:image/png;base64,"
SRC_W, SRC_H, SRC_FRAMES = 192, 144, 40
CROP, CROP_FRAMES, START = 64, 24, 4
SR = 48000
TAKES = ["M003_neutral_1_001", "M003_happy_1_001", "M003_happy_3_001", "M003_sad_2_001", "W009_neutral_1_001", "W009_happy_3_001"]
VIEWS = ("front", "left_30")
CORRUPT = ("M003_sad_2_001", "front")  # its file is garbage: status corrupt, clip failed
XSS = "<script>alert(1)</script>"


def _marked(image: np.ndarray, value: int) -> np.ndarray:
    """The image with its top 8 rows set to `value`, so a decoded frame tells its index."""
    image = image.copy()
    image[:8] = value
    return image


def _source_frames(shift: int):
    face = cv2.resize(cv2.cvtColor(astronaut()[20:260, 120:360], cv2.COLOR_RGB2BGR), (120, 120))
    for i in range(SRC_FRAMES):
        frame = np.full((SRC_H, SRC_W, 3), 90, np.uint8)
        frame[16:136, 36 + shift : 156 + shift] = face
        yield _marked(frame, 5 * i)


def _landmarks(shift: int) -> np.ndarray:
    """68 plausible face points around the pasted face (jaw arc, brows, nose, eyes, lips)."""
    cx, cy = 96 + shift, 80
    t = np.linspace(np.pi * 0.05, np.pi * 0.95, 17)
    jaw = np.c_[cx - 45 * np.cos(t), cy + 50 * np.sin(t) - 10]
    brows = np.r_[np.c_[np.linspace(cx - 40, cx - 8, 5), np.full(5, cy - 30)], np.c_[np.linspace(cx + 8, cx + 40, 5), np.full(5, cy - 30)]]
    nose = np.r_[np.c_[np.full(4, cx), np.linspace(cy - 20, cy + 5, 4)], np.c_[np.linspace(cx - 10, cx + 10, 5), np.full(5, cy + 10)]]
    a = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    eyes = np.r_[np.c_[cx - 22 + 8 * np.cos(a), cy - 18 + 4 * np.sin(a)], np.c_[cx + 22 + 8 * np.cos(a), cy - 18 + 4 * np.sin(a)]]
    a = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    outer = np.c_[cx + 20 * np.cos(a), cy + 28 + 8 * np.sin(a)]
    a = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    inner = np.c_[cx + 12 * np.cos(a), cy + 28 + 3 * np.sin(a)]
    return np.r_[jaw, brows, nose, eyes, outer, inner].astype(np.float32)


def _make_out(root: Path) -> Path:
    """A prepared OUT written by hand: raw media, four manifests, crops, faces and MFCC arrays."""
    raw, out = root / "raw", root / "out"
    crop_face = cv2.resize(cv2.cvtColor(astronaut()[30:230, 140:340], cv2.COLOR_RGB2BGR), (CROP, CROP))
    recordings, sync, clips, status = [], [], [], []
    for n, take_id in enumerate(TAKES):
        key = TakeKey.from_id(take_id)
        labels = dict(actor=key.actor, gender=gender(key.actor), emotion=key.emotion, level=key.level, take=key.take, take_id=take_id)
        cdir = out / "clips" / key.actor / take_id
        cdir.mkdir(parents=True)
        apath = raw / audio_relpath(key.actor, key.emotion, key.level, key.take)
        apath.parent.mkdir(parents=True, exist_ok=True)
        t = np.arange(int(1.5 * SR)) / SR
        write_audio(str(apath), (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 2 * t)).astype(np.float32), SR)
        recordings.append(dict(labels, kind="audio", relpath=str(apath.relative_to(raw)), source_path=str(apath), status="ok",
                               sample_rate=SR, channels=1, audio_duration_s=1.5, has_audio=True))
        mfcc = np.sin(np.arange(CROP_FRAMES)[:, None] / 3 + np.arange(28)[None] / 5).astype(np.float32)
        np.savez(cdir / "features.npz", mfcc28=mfcc, padded=np.arange(CROP_FRAMES) >= CROP_FRAMES - 2)
        views_ok = 0
        for j, view in enumerate(VIEWS):
            rel = video_relpath(key.actor, view, key.emotion, key.level, key.take)
            vpath = raw / rel
            vpath.parent.mkdir(parents=True, exist_ok=True)
            bad = (take_id, view) == CORRUPT
            base = dict(labels, view=view)
            if bad:
                vpath.write_bytes(b"not an mp4" * 50)
                recordings.append(dict(base, kind="video", relpath=rel, source_path=str(vpath), status="corrupt",
                                       error=f"cannot decode {XSS}"))
                sync.append(dict(base, status="unusable", error="unreadable video"))
                clips.append(dict(base, status="corrupt", error=f"cannot decode {XSS}", source=rel))
                continue
            with VideoWriter(str(vpath), MEAD_FPS, SRC_W, SRC_H) as w:
                for frame in _source_frames(8 * j):
                    w.write(frame)
            no_audio = take_id == "W009_happy_3_001" and view == "left_30"
            recordings.append(dict(base, kind="video", relpath=rel, source_path=str(vpath), status="no_audio" if no_audio else "ok",
                                   error="no audio stream" if no_audio else None, width=SRC_W, height=SRC_H,
                                   fps_num=MEAD_FPS.numerator, fps_den=MEAD_FPS.denominator, n_frames=SRC_FRAMES,
                                   duration_s=SRC_FRAMES / float(MEAD_FPS), has_audio=not no_audio))
            offset = 0.05 * (j + 1) + 0.01 * n
            sync.append(dict(base, offset_s=offset, offset_frames=offset * float(MEAD_FPS), confidence=0.9 - 0.1 * j,
                             method="visual" if no_audio else "audio", t0_s=0.2, start_frame=START, n_frames=CROP_FRAMES,
                             fps_num=MEAD_FPS.numerator, fps_den=MEAD_FPS.denominator, video_frames=SRC_FRAMES, status="ok"))
            crop_rel = f"clips/{key.actor}/{take_id}/{view}.mp4"
            with VideoWriter(str(out / crop_rel), MEAD_FPS, CROP, CROP) as w:
                for i in range(CROP_FRAMES):
                    w.write(_marked(crop_face, 8 * i))
            valid = np.arange(CROP_FRAMES) >= 3
            pts = np.repeat(_landmarks(8 * j)[None], CROP_FRAMES, axis=0)
            np.savez(out / f"clips/{key.actor}/{take_id}/{view}.faces.npz", landmarks_src=pts, landmarks_crop=pts / 3,
                     valid=valid, score=np.full(CROP_FRAMES, 0.9, np.float32), transform=np.zeros((CROP_FRAMES, 2, 3), np.float32))
            clips.append(dict(base, split="train", status="ok", source=rel, width=SRC_W, height=SRC_H,
                              fps_num=MEAD_FPS.numerator, fps_den=MEAD_FPS.denominator, has_audio=not no_audio,
                              offset_s=offset, sync_confidence=0.9 - 0.1 * j, sync_method="audio", t0_s=0.2, start_frame=START,
                              n_frames=CROP_FRAMES, found_ratio=valid.mean() - 0.05 * j, mean_score=0.9 - 0.01 * n,
                              jitter=0.5 + 0.1 * n, crop_size=CROP, crop_video=crop_rel,
                              faces_npz=f"clips/{key.actor}/{take_id}/{view}.faces.npz",
                              features_npz=f"clips/{key.actor}/{take_id}/features.npz", feature_sets="mfcc28", mfcc_recipe="mead", padded_rows=2))
            views_ok += 1
        status.append(dict(take_id=take_id, status="ok" if views_ok == len(VIEWS) else "partial",
                           error=None if views_ok == len(VIEWS) else f"1 view failed: {XSS}",
                           views_ok=views_ok, views_total=len(VIEWS), n_frames=CROP_FRAMES))
    recordings.append(dict(kind="other", relpath="M003/notes.txt", source_path=str(raw / "M003/notes.txt"), status="unrecognized",
                           error="not a MEAD media file (extension '.txt')"))
    m = out / "manifests"
    write_rows(recordings, RECORDINGS_SCHEMA, m / "recordings.parquet")
    write_rows(sync, SYNC_SCHEMA, m / "sync.parquet")
    write_rows(clips, CLIPS_SCHEMA, m / "clips.parquet")
    write_rows(status, STATUS_SCHEMA, m / "status.parquet")
    return out


@pytest.fixture(scope="module")
def handmade(tmp_path_factory) -> Path:
    return _make_out(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    steps = np.arange(0, 200, 10)
    pd.DataFrame({"step": steps, "loss": 1 / (1 + steps / 50), "l1": np.exp(-steps / 80), "phase": "train"}).to_csv(run / "train_log.csv", index=False)
    (run / "logs").mkdir()
    long = [(s, split, m, v) for s in steps for split in ("train", "val") for m, v in (("l1", 1 / (1 + s)), ("acc", s / 200))]
    pd.DataFrame(long, columns=["step", "split", "metric", "value"]).to_csv(run / "logs" / "a2l.csv", index=False)
    (run / "eval_test.json").write_text(json.dumps({
        "landmark_mse": 0.0123, "emotion_accuracy_real_per_emotion": {"happy": 0.5, "angry": 0.75},
        "emotion_accuracy_generated_per_emotion": {"happy": 0.25, "angry": 0.5}, "frames": [1, 2, 3]}))
    return run


def _sections(text: str) -> dict[str, str]:
    """Section id -> its HTML, without the <wbr> line-break hints tables put after '/'."""
    return dict(re.findall(r'<section id="(\w+)">(.*?)</section>', text.replace("<wbr>", ""), flags=re.S))


def _images(fragment: str) -> list[np.ndarray]:
    """Decode every embedded PNG of an HTML fragment (fails if one is not a valid PNG)."""
    images = []
    for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', fragment):
        image = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape[0] > 50 and image.shape[1] > 50
        images.append(image)
    return images


def test_report_has_every_section_with_images(handmade, run_dir, tmp_path):
    path = tmp_path / "sub" / "report.html"
    result = CliRunner().invoke(command, [str(handmade), "-o", str(path), "--run", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert f"wrote {path}" in result.output
    text = path.read_text(encoding="utf-8")
    sections = _sections(text)
    assert tuple(sections) == SECTIONS
    expected = {"completeness": 2, "sync": 1, "faces": 3, "audio": 1, "training": 3}
    for name, n in expected.items():
        assert len(_images(sections[name])) == n, name
    assert text.count(PNG) == sum(expected.values())
    assert "<script" not in text and "src=\"http" not in text  # self-contained, no active content
    # problems: each non-ok row with its file and escaped reason
    problems = sections["problems"]
    assert "M003/video/front/sad/level_2/001.mp4" in problems and "M003/notes.txt" in problems
    assert "cannot decode &lt;script&gt;alert(1)&lt;/script&gt;" in problems
    for status in ("corrupt", "unrecognized", "no_audio", "unusable", "partial"):
        assert f"<b>{status}</b>" in problems
    assert "landmark_mse" in sections["training"] and "0.0123" in sections["training"]
    assert "emotion_accuracy_real_per_emotion.happy" in sections["training"] and "logs/a2l.csv" in sections["training"]


def test_corpus_table_and_completeness_count_usable_videos(handmade):
    inp = Inputs.load(handmade)
    row = corpus_table(inp.recordings, inp.clips)
    usable = len(TAKES) * len(VIEWS) - 1  # the corrupt file does not count
    assert row["clips"] == str(usable) and row["prepared clips (ok)"] == str(usable)
    assert (row["actors"], row["emotions"], row["views"], row["intensities"]) == ("2", "3", "2", "3")
    assert row["resolution"] == f"{SRC_W}x{SRC_H}"
    per_actor_s = [4 * SRC_FRAMES / float(MEAD_FPS), 2 * SRC_FRAMES / float(MEAD_FPS)]
    assert row["avg duration per actor"] == f"{np.mean(per_actor_s) / 60:.2f} min"
    by_view, by_el = completeness(inp.recordings)
    assert by_view["found"].loc["M003", "front"] == 3 and by_view["found"].loc["M003", "left_30"] == 4
    assert by_view["found"].loc["W009", "down"] == 0 and (by_view["nominal"] == 670).all().all()
    assert by_el["found"].loc["M003", "sad 2"] == 1  # found through its left_30 view
    assert by_el["found"].loc["W009", "happy 1"] == 0 and by_el["nominal"].loc["W009", "neutral 1"] == 40
    assert list(by_el["found"].columns)[:3] == ["angry 1", "angry 2", "angry 3"] and by_el["found"].shape == (2, 22)


def test_contact_sheet_uses_middle_crop_frame(handmade):
    view, cells = contact_cells(Inputs.load(handmade), n_actors=3)
    assert view == "front"
    assert set(cells) == {(TakeKey.from_id(t).actor, TakeKey.from_id(t).emotion, TakeKey.from_id(t).level)
                          for t in TAKES if (t, "front") != CORRUPT}
    for image in cells.values():
        assert image.shape == (CROP, CROP, 3)
        assert abs(float(image[2:6, 8:56].mean()) - 8 * (CROP_FRAMES // 2)) < 6  # the index mark of the middle frame


def test_landmark_frames_decode_start_plus_k(handmade):
    frames = landmark_frames(Inputs.load(handmade), "M003_happy_1_001")
    assert [f.view for f in frames] == list(VIEWS)
    for j, f in enumerate(frames):
        assert f.window_index == CROP_FRAMES // 2  # valid and nearest to min(30, T/2)
        assert f.frame_index == START + f.window_index
        assert f.image.shape == (SRC_H, SRC_W, 3)
        assert abs(float(f.image[2:6, 20:170].mean()) - 5 * f.frame_index) < 6
        np.testing.assert_allclose(f.points, _landmarks(8 * j))


def test_missing_parts_are_named_not_fatal(handmade, tmp_path):
    # prepare --until index: only recordings
    only_index = tmp_path / "index_only"
    (only_index / "manifests").mkdir(parents=True)
    shutil.copy(handmade / "manifests" / "recordings.parquet", only_index / "manifests")
    sections = _sections(render_report(only_index))
    assert len(_images(sections["completeness"])) == 2
    for name in ("sync", "faces", "audio"):
        assert "Not available" in sections[name] and "does not exist" in sections[name]
    assert "No training run given" in sections["training"]
    # every take failed: clips without any output, sync without offsets
    failed = tmp_path / "all_failed"
    shutil.copytree(only_index, failed)
    clips = read_table(handmade / "manifests" / "clips.parquet")
    clips = clips.assign(status="failed", error="no usable reference audio", found_ratio=None, crop_video=None,
                         faces_npz=None, features_npz=None, offset_s=None)
    write_rows(clips.astype(object).where(clips.notna(), None).to_dict("records"), CLIPS_SCHEMA, failed / "manifests" / "clips.parquet")
    sync = read_table(handmade / "manifests" / "sync.parquet").assign(offset_s=None, status="unsynced", error="no reference audio")
    write_rows(sync.astype(object).where(sync.notna(), None).to_dict("records"), SYNC_SCHEMA, failed / "manifests" / "sync.parquet")
    sections = _sections(render_report(failed))
    assert "no view was synced" in sections["sync"]
    assert "did not run" in sections["faces"] and "failed 12" in sections["faces"]
    assert "No features file found" in sections["audio"]
    assert "no usable reference audio" in sections["problems"]
    assert "could not be built" not in "".join(sections.values())
    # an empty folder
    sections = _sections(render_report(tmp_path / "nothing"))
    assert tuple(sections) == SECTIONS and "could not be built" not in "".join(sections.values())


def test_pictures_without_recordings(handmade):
    """Without recordings (no source paths) the MFCC is still drawn, the landmarks say why not."""
    inp = Inputs.load(handmade)
    inp.recordings, inp.missing["recordings"] = None, "removed for the test"
    audio = section_audio(inp)
    assert len(_images(audio)) == 1 and "waveform not shown" in audio
    faces = section_faces(inp)
    assert len(_images(faces)) == 2 and "recordings: removed for the test" in faces


def test_loss_logs_long_and_wide_give_the_same_rows():
    wide = pd.DataFrame({"step": [0, 10], "l1": [1.0, 0.5], "note": ["a", "b"]})
    long = pd.DataFrame({"step": [0, 10], "split": ["train", "train"], "metric": ["l1", "l1"], "value": [1.0, 0.5]})
    assert long_metrics(wide)[["step", "metric", "value"]].values.tolist() == [[0, "l1", 1.0], [10, "l1", 0.5]]
    assert long_metrics(long).values.tolist() == [[0, "train", "l1", 1.0], [10, "train", "l1", 0.5]]
    assert long_metrics(pd.DataFrame({"loss": [3.0, 2.0]}))["step"].tolist() == [0, 1]


def test_training_section_tolerates_bad_run_files(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "losses.csv").write_text("step,note\n1,a\n")
    (run / "eval_test.json").write_text("{not json")
    section = section_training(run)
    assert "losses.csv has no numeric values" in section
    assert "eval_test.json cannot be read" in section
    assert "does not exist" in section_training(tmp_path / "nowhere")


@pytest.mark.slow
def test_report_of_a_prepared_synthetic_corpus(tiny_corpus, tmp_path):
    """The real pipeline's outputs (prepare on the synthetic corpus) give every section its pictures."""
    from meadkit.config import load_pipeline
    from meadkit.corpus.synth import read_truth, truth_landmarks
    from meadkit.prepare import run_prepare

    raw, truth_path = tiny_corpus
    out = tmp_path / "out"
    run_prepare(raw, out, load_pipeline(), n_jobs=1, progress=False)
    text = build_report(out, tmp_path / "report.html").read_text(encoding="utf-8")
    sections = _sections(text)
    assert tuple(sections) == SECTIONS
    for name, n in {"completeness": 2, "sync": 1, "faces": 3, "audio": 1}.items():
        assert len(_images(sections[name])) == n, (name, re.sub(r"<[^>]+>", " ", sections[name])[:500])
    assert "could not be built" not in text
    truth = read_truth(truth_path)
    videos = truth[truth["view"].notna() & truth["written"]]
    table1 = corpus_table(read_table(out / "manifests" / "recordings.parquet"))
    assert table1["clips"] == f"{len(videos):,}" and table1["actors"] == str(videos["actor"].nunique())
    assert table1["views"] == str(videos["view"].nunique())
    # the drawn landmarks sit on the decoded source frame: they match the true landmarks of that frame
    frames = landmark_frames(Inputs.load(out))
    assert {f.view for f in frames} == set(videos["view"])
    for f in frames:
        true = truth_landmarks(truth_path, f.take_id, f.view)
        # all but the jaw: the synthetic truth projects the 3D jaw, behind the cheek on turned views
        err = np.linalg.norm(true[:, 17:] - f.points[None, 17:], axis=2).mean(axis=1)
        inter_ocular = np.linalg.norm(true[f.frame_index, 36:42].mean(0) - true[f.frame_index, 42:48].mean(0))
        assert err[f.frame_index] < 0.08 * inter_ocular, (f.view, err[f.frame_index], inter_ocular)


def test_the_evaluation_confusion_matrices_are_pictures_not_table_rows(run_dir, tmp_path):
    from meadkit.report.training import section_training

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    data = json.loads((run / "eval_test.json").read_text())
    data["emotion_confusion_real"] = {"labels": ["happy", "angry"], "matrix": [[3, 1], [0, 4]]}
    (run / "eval_test.json").write_text(json.dumps(data))
    with_matrix = section_training(run)
    assert "confusion matrices (row %)" in with_matrix and "emotion_confusion_real" not in _table_keys(with_matrix)
    assert len(_images(with_matrix)) == len(_images(section_training(run_dir))) + 1


def _table_keys(fragment: str) -> str:
    """The text of the tables' cells."""
    return " ".join(re.findall(r"<td[^>]*>(.*?)</td>", fragment, flags=re.S))
