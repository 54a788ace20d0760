"""Dense face mesh in a face box from our tracker, and its map onto the 68 iBUG points.

`MeshFitter` runs mediapipe 0.10.21's face landmark model (468 points, or 478 with the attention
model's irises) through mediapipe's own `FaceLandmarkCpu` subgraph on the region of a given box and
roll, without mediapipe's face detector (it misses turned faces a tracker already holds). The
models ship inside the mediapipe wheel: nothing is downloaded. `mesh_to_68` maps a mesh onto the
iBUG 68-point layout the rest of the faces stage uses.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from meadkit.faces.backends import MEDIAPIPE_INSTALL, Box, FaceBackendUnavailable

#: Side of the square crop the landmark model sees (its input tensor).
MODEL_SIZE = 192
#: mediapipe's region for the landmark model is the mesh's bounding box (in the face's upright frame) made square
#: and enlarged 1.5 times (`FaceLandmarkLandmarksToRoi`). Iterated to convergence from a box on the photos that
#: chose `MESH_TO_IBUG68`, that region is 1.69 (sd 0.16) dlib HOG box sides wide, 1.77 (sd 0.11) for
#: `align.box_from_landmarks` boxes (what the tracker passes), centred on the box within 0.03 sides.
ROI_SCALE = 1.75

#: Per iBUG point (0-67), the mesh vertices and weights whose weighted mean gives it. Chosen by measurement on
#: astronaut (skimage), grace_hopper (matplotlib), obama and biden against dlib's 68-point fit, and einstein
#: against its hand annotation, meshes fitted at dlib's HOG box with the roll of a first fit: per point, the
#: vertex with the least mean error over the photos (normalised by inter-ocular distance), or a mean of 2-3
#: nearby vertices (weights in quarters or thirds, vertices within 0.15 inter-ocular of each other) kept only
#: where it cut that error by over 15%. Left/right is symmetric by construction (the mirror point uses the
#: mirrored vertices, from fits on flipped photos); midline points use only midline vertices; eye and lip points
#: only vertices of mediapipe's eyelid and lip contours (the upper lid stays on the upper lid when it blinks).
#: Leave-one-photo-out NME on those photos is within 0.005 of in-sample, and below a one-vertex-per-point map's.
MESH_TO_IBUG68: tuple[tuple[tuple[int, float], ...], ...] = (
    # jaw contour, image-left to image-right
    ((127, 1),),  # 0
    ((234, 1),),  # 1
    ((177, 1),),  # 2
    ((215, 1),),  # 3
    ((172, 1),),  # 4
    ((136, 1),),  # 5
    ((149, 1),),  # 6
    ((176, 1),),  # 7
    ((152, 1),),  # 8
    ((400, 1),),  # 9
    ((378, 1),),  # 10
    ((365, 1),),  # 11
    ((397, 1),),  # 12
    ((435, 1),),  # 13
    ((401, 1),),  # 14
    ((454, 1),),  # 15
    ((356, 1),),  # 16
    # brows (upper edge), image-left then image-right
    ((124, 1 / 3), (156, 1 / 3), (70, 1 / 3)),  # 17
    ((63, 1),),  # 18
    ((105, 1),),  # 19
    ((66, 1),),  # 20
    ((107, 0.75), (55, 0.25)),  # 21
    ((336, 0.75), (285, 0.25)),  # 22
    ((296, 1),),  # 23
    ((334, 1),),  # 24
    ((293, 1),),  # 25
    ((353, 1 / 3), (383, 1 / 3), (300, 1 / 3)),  # 26
    # nose bridge 27-30, base 31-35
    ((6, 0.25), (168, 0.75)),  # 27
    ((197, 1),),  # 28
    ((5, 0.75), (195, 0.25)),  # 29
    ((1, 0.25), (4, 0.75)),  # 30
    ((240, 1),),  # 31
    ((97, 1),),  # 32
    ((2, 0.5), (164, 0.5)),  # 33
    ((326, 1),),  # 34
    ((460, 1),),  # 35
    # eyes: image-left 36-41, image-right 42-47, from the outer corner over the upper lid
    ((7, 1),),  # 36
    ((160, 0.5), (159, 0.5)),  # 37
    ((158, 0.75), (157, 0.25)),  # 38
    ((155, 1),),  # 39
    ((145, 0.25), (153, 0.75)),  # 40
    ((144, 0.75), (145, 0.25)),  # 41
    ((382, 1),),  # 42
    ((385, 0.75), (384, 0.25)),  # 43
    ((387, 0.5), (386, 0.5)),  # 44
    ((249, 1),),  # 45
    ((373, 0.75), (374, 0.25)),  # 46
    ((374, 0.25), (380, 0.75)),  # 47
    # mouth: outer lip 48-59, inner lip 60-67
    ((61, 1),),  # 48
    ((40, 0.5), (39, 0.5)),  # 49
    ((37, 1),),  # 50
    ((0, 1),),  # 51
    ((267, 1),),  # 52
    ((270, 0.5), (269, 0.5)),  # 53
    ((291, 1),),  # 54
    ((405, 0.25), (321, 0.75)),  # 55
    ((314, 1),),  # 56
    ((17, 1),),  # 57
    ((84, 1),),  # 58
    ((181, 0.25), (91, 0.75)),  # 59
    ((78, 1),),  # 60
    ((82, 1),),  # 61
    ((13, 1),),  # 62
    ((312, 1),),  # 63
    ((308, 1),),  # 64
    ((317, 1),),  # 65
    ((14, 1),),  # 66
    ((87, 1),),  # 67
)


def _map_weights() -> np.ndarray:
    """MESH_TO_IBUG68 as a (68, 468) weight matrix (each row sums to 1)."""
    w = np.zeros((68, 468))
    for i, combo in enumerate(MESH_TO_IBUG68):
        for v, weight in combo:
            w[i, v] += weight
    return w


_MAP = _map_weights()


def mesh_to_68(points: np.ndarray) -> np.ndarray:
    """The 68 iBUG points (68, 2) float32 (0-16 jaw, 17-26 brows, 27-35 nose, 36-47 eyes, 48-67 mouth) of a
    (468 or 478, 2 or 3) mesh."""
    return (_MAP @ points[:468, :2]).astype(np.float32)


def mesh_depth_68(points: np.ndarray) -> np.ndarray:
    """The mesh's relative depth z (68,) float32 at the 68 iBUG points (same map as `mesh_to_68`), for a pose fit."""
    return (_MAP @ points[:468, 2]).astype(np.float32)


@dataclass
class MeshFit:
    """One face's mesh: `points` (N, 3) float32, x and y in image pixels, z mediapipe's relative depth in the
    same pixel scale (smaller is nearer the camera); `presence` the model's own face-presence score in [0, 1]
    (the sigmoid of its face flag: always >= 0.5 here, as lower scores give no fit)."""

    points: np.ndarray
    presence: float


_GRAPH = """
input_stream: "IMAGE:image"
input_stream: "ROI:roi"
output_stream: "LANDMARKS:landmarks"
input_side_packet: "WITH_ATTENTION:with_attention"
node {
  calculator: "FaceLandmarkCpu"
  input_stream: "IMAGE:image"
  input_stream: "ROI:roi"
  output_stream: "LANDMARKS:landmarks"
  input_side_packet: "WITH_ATTENTION:with_attention"
}
"""


def _landmark_graph(refine: bool):
    """A mediapipe graph of FaceLandmarkCpu, expanded so its inference runs on one thread and its face-presence
    score is an output; returns (graph, name of the presence stream, the whole-image ROI)."""
    try:
        import mediapipe
        from google.protobuf import text_format
        from mediapipe.calculators.tensor import inference_calculator_pb2
        from mediapipe.framework import calculator_pb2
        from mediapipe.framework.formats import rect_pb2
        from mediapipe.python import solution_base
        from mediapipe.python._framework_bindings import resource_util, validated_graph_config
    except ImportError as e:
        raise FaceBackendUnavailable(
            f"the face mesh needs mediapipe 0.10.21 ({e}): {MEDIAPIPE_INSTALL}") from None
    resource_util.set_resource_dir(os.path.dirname(os.path.dirname(mediapipe.__file__)))  # models' root
    validated = validated_graph_config.ValidatedGraphConfig()
    validated.initialize(graph_config=text_format.Parse(_GRAPH, calculator_pb2.CalculatorGraphConfig()))
    config = calculator_pb2.CalculatorGraphConfig.FromString(validated.binary_config)
    presence = None
    for node in config.node:
        if node.calculator == "InferenceCalculatorCpu":
            options = node.options.Extensions[inference_calculator_pb2.InferenceCalculatorOptions.ext]
            options.delegate.xnnpack.num_threads = 1
        elif node.calculator == "TensorsToFloatsCalculator":  # sigmoid of the model's face flag
            presence = node.output_stream[0].split(":")[-1]
    if presence is None:
        raise FaceBackendUnavailable(f"this mediapipe's FaceLandmarkCpu has no face-presence score; run {MEDIAPIPE_INSTALL}")
    del config.executor[:]
    config.num_threads = 1
    config.output_stream.append(f"PRESENCE:{presence}")
    graph = solution_base.SolutionBase(graph_config=config, side_inputs={"with_attention": refine},
                                       outputs=["landmarks", presence])
    return graph, presence, rect_pb2.NormalizedRect(x_center=0.5, y_center=0.5, width=1.0, height=1.0)


#: A NormalizedLandmark with x, y, z set and nothing else, as protobuf writes it inside a NormalizedLandmarkList:
#: field 1 (length-delimited, 15 bytes), then fields 1-3 as 32-bit floats (tags 0x0d, 0x15, 0x1d).
_LANDMARK_WIRE = np.dtype([("tag", "u1"), ("size", "u1"), ("tx", "u1"), ("x", "<f4"), ("ty", "u1"), ("y", "<f4"),
                           ("tz", "u1"), ("z", "<f4")])
_LANDMARK_TAGS = {"tag": 0x0A, "size": 15, "tx": 0x0D, "ty": 0x15, "tz": 0x1D}


def landmarks_xyz(landmarks) -> np.ndarray:
    """(N, 3) float64 x, y, z of a mediapipe NormalizedLandmarkList, or of its serialised bytes. Read from the bytes in
    one numpy call where every landmark has exactly x, y and z (the mesh's case: 0.01 ms against 0.36 ms for 478
    attribute reads in Python); any other layout is read point by point."""
    raw = landmarks if isinstance(landmarks, bytes) else landmarks.SerializeToString()
    if len(raw) % _LANDMARK_WIRE.itemsize == 0:
        rec = np.frombuffer(raw, _LANDMARK_WIRE)
        if all((rec[k] == v).all() for k, v in _LANDMARK_TAGS.items()):  # then the bytes are len(rec) such landmarks
            return np.column_stack([rec["x"], rec["y"], rec["z"]]).astype(np.float64)
    if isinstance(landmarks, bytes):
        from mediapipe.framework.formats import landmark_pb2

        landmarks = landmark_pb2.NormalizedLandmarkList.FromString(raw)
    return np.array([(q.x, q.y, q.z) for q in landmarks.landmark], np.float64).reshape(-1, 3)


def roi_for_box(box: Box) -> tuple[np.ndarray, float]:
    """Centre (x, y) and side in pixels of the square region the model sees for a face `box`."""
    x0, y0, x1, y1 = box
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2]), ROI_SCALE * max(x1 - x0, y1 - y0)


class MeshFitter:
    """mediapipe's face landmark model on the region of a given face box; each `fit` is independent of the others
    (the graph keeps no state between calls). One graph per fitter: use one fitter per thread.

    The region is cut out, turned upright and resized to the model's input here, and handed to the graph as a
    whole image: cheaper than giving mediapipe the full frame and a region to cut."""

    def __init__(self, refine: bool = True):
        from mediapipe.python import packet_creator
        from mediapipe.python._framework_bindings import _packet_getter, image_frame

        self.refine = refine
        self._graph, self._presence, self._whole = _landmark_graph(refine)
        self._roi = packet_creator.create_proto(self._whole)
        self._image = lambda rgb: packet_creator.create_image_frame(rgb, image_format=image_frame.ImageFormat.SRGB)
        self._getter = _packet_getter

    def fit(self, image: np.ndarray, box: Box, angle: float = 0.0, mirror: bool = False) -> Optional[MeshFit]:
        """The mesh of the face in `box` (x0, y0, x1, y1 pixels, like dlib's HOG box) on a BGR or grey uint8
        `image` (`mirror`: of the region mirrored left-right, points mapped back but labelled as on the mirrored
        face: a second opinion for the gate); `angle` is the face's roll (`roll_angle` of the previous frame's points) so the model sees it
        upright. None when the model finds no face there."""
        centre, side = roi_for_box(box)
        k = MODEL_SIZE / side
        c, s = np.cos(angle) * k, np.sin(angle) * k
        rot = np.array([[c, s], [-s, c]])  # source offsets from the centre -> crop pixels
        m = np.hstack([rot, (MODEL_SIZE / 2 - rot @ centre)[:, None]])
        crop = cv2.warpAffine(image, m, (MODEL_SIZE, MODEL_SIZE), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        crop = cv2.cvtColor(crop, cv2.COLOR_GRAY2RGB if crop.ndim == 2 else cv2.COLOR_BGR2RGB)
        if mirror:
            crop = np.ascontiguousarray(crop[:, ::-1])
        found = self._run(crop)
        if found is None:
            return None
        p, presence = found[0] * MODEL_SIZE, found[1]  # crop pixels
        if mirror:  # back to the unmirrored crop (vertex labels stay those of the mirrored face)
            p[:, 0] = MODEL_SIZE - p[:, 0]
        xy = (p[:, :2] - MODEL_SIZE / 2) @ rot / k ** 2 + centre  # rot's inverse is rot.T / k**2
        return MeshFit(np.column_stack([xy, p[:, 2] / k]).astype(np.float32), presence)

    def _run(self, crop: np.ndarray) -> Optional[tuple[np.ndarray, float]]:
        """The graph on one RGB crop: (normalised points, presence), or None without a face. What `SolutionBase.process`
        does, less its per-call Python (a namedtuple class made each call, the landmarks parsed into a Python message
        and serialised again): the same bytes, ~0.6 ms (~11%) less a fit."""
        solution = self._graph
        solution._graph_outputs.clear()
        solution._simulated_timestamp += 33333
        at, graph = solution._simulated_timestamp, solution._graph
        graph.add_packet_to_input_stream(stream="image", packet=self._image(crop).at(at))
        graph.add_packet_to_input_stream(stream="roi", packet=self._roi.at(at))
        graph.wait_until_idle()
        out = solution._graph_outputs
        if "landmarks" not in out or out["landmarks"].is_empty():  # no face: an empty packet, or none
            return None
        return (landmarks_xyz(self._getter._get_serialized_proto(out["landmarks"])),
                float(self._getter.get_float(out[self._presence])))

    def close(self) -> None:
        """Stop the mediapipe graph (its threads); the fitter cannot fit after this."""
        self._graph.close()

    def __enter__(self) -> MeshFitter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
