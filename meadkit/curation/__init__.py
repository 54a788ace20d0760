"""Curation: each clip's quality, measured from what `prepare` already has, and flags users can select on.

Per clip, in the take worker (stage `curation` of `meadkit.take.STAGES`, `measure_clip`): lip sync (the lag that best
aligns the mouth opening with the reference audio's speech envelope), head pose (`cv2.solvePnP` of the 68 points on
the generic 3D face of `meadkit.faces.model3d`), image quality of the crop, the share of valid frames; per take its
reference audio's fingerprint. Over the whole corpus, where `prepare` writes the manifests (`curate`): expression
strength against the actor's neutral face, the level-order check, duplicate takes, and the flags of `[curation]`'s
thresholds (changing them needs no take to be redone). See manifests/clips.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from meadkit.config import check_fields

#: Every flag `quality_flags` may hold, in the order it lists them.
FLAGS = ("no_landmarks", "silent", "av_offset", "pose_mismatch", "blurry", "weak_expression", "level_order", "duplicate")
#: The numeric curation columns of clips.parquet (`meadkit select --min/--max` also takes `abs_<column>`).
NUMERIC_COLUMNS = ("av_offset_frames", "av_confidence", "yaw_deg", "pitch_deg", "roll_deg", "pose_range_deg",
                   "sharpness", "exposure", "valid_ratio", "expression_strength")
#: The curation columns `prepare` fills over the whole corpus (the others come from the take worker's stage).
CORPUS_COLUMNS = ("expression_strength", "duplicate_of")
#: Every curation column of clips.parquet.
COLUMNS = NUMERIC_COLUMNS + ("duplicate_of", "quality_flags")


@dataclass(frozen=True)
class CurationConfig:
    """The thresholds that turn the curation measures into `quality_flags` (applied in `prepare`, after the takes)."""

    #: av_offset: |av_offset_frames| above this many frames (of the clip's rate).
    max_av_offset_frames: float = field(default=1.5, metadata={"min": 0.0, "max": 15.0})
    #: av_offset: only an offset found with at least this confidence (the peak correlation) is flagged.
    min_av_confidence: float = field(default=0.5, metadata={"min": -1.0, "max": 1.0})
    #: pose_mismatch: the measured yaw further than this (degrees) from the view's expected yaw.
    pose_tolerance_deg: float = field(default=20.0, metadata={"min": 1.0, "max": 180.0})
    #: blurry: sharpness (variance of the crop's Laplacian) below this.
    min_sharpness: float = field(default=15.0, metadata={"min": 0.0})
    #: weak_expression: an emotional clip whose expression_strength is below this many times the median of the
    #: same actor's and view's neutral clips.
    weak_expression_ratio: float = field(default=1.2, metadata={"min": 0.0})
    #: weak_expression, level_order: judged only on faces at least this many source pixels between the eyes
    #: (median): at ~30 px a level's landmark change is about a pixel, under tracking noise (measured: 18 of 56
    #: clean clips broke the order at 480x270, none at 960x540); MEAD's 1080p front faces are ~200 px.
    min_face_iod_px: float = field(default=50.0, metadata={"min": 0.0})
    #: duplicate: two takes of an actor whose reference-audio fingerprints correlate at least this much.
    duplicate_corr: float = field(default=0.97, metadata={"min": 0.0, "max": 1.0})

    def __post_init__(self):
        check_fields(self, "curation")
