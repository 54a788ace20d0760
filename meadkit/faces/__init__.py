"""Faces stage: detect, track, 68 landmarks, temporal smoothing, aligned crops (see stage.process_view)."""
from meadkit.faces.backends import FaceBackendUnavailable
from meadkit.faces.stage import (FACES_SCHEMA, STATUSES, FaceResult, FacesConfig, NoFaceError, align_image,
                                 backend_for, process_view)

__all__ = ["FACES_SCHEMA", "STATUSES", "FaceBackendUnavailable", "FaceResult", "FacesConfig", "NoFaceError",
           "align_image", "backend_for", "process_view"]
