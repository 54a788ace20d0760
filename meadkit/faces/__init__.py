"""Faces stage: detect, track, 68 landmarks, temporal smoothing, aligned crops (see stage.process_view)."""
from meadkit.faces.backends import FaceBackendUnavailable
from meadkit.faces.stage import (STATUSES, FaceResult, FacesConfig, NoFaceError, align_image,
                                 backend_for, process_view)

__all__ = ["STATUSES", "FaceBackendUnavailable", "FaceResult", "FacesConfig", "NoFaceError",
           "align_image", "backend_for", "process_view"]
