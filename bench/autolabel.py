"""Autolabel speed on CPU (or GPU with --device cuda): detection and SAM masks.

    python bench/autolabel.py [--boxes 12] [--repeat 3] [--device cpu]

Models are randomly initialised from the libraries' own definitions at their real sizes
(ultralytics yolov8n.yaml; SAM vit_b): speed does not depend on the weights' values.
Rows:
  detector yolov8n @640            one 640x512 image per call
  SAM set_image (vit_b)            the image embedding, shared by all prompts of an image
  SAM prompts, one call per box    the baseline
  SAM prompts, batched             all boxes in one predict_torch call (what autolabel does)
The last column is the baseline's time over the row's.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from timing import median_seconds  # noqa: E402  (bench/timing.py)

from ums.detections import Detections  # noqa: E402
from ums.autolabel.detectors import DetectorConfig, load_detector  # noqa: E402
from ums.autolabel.sam import SamConfig, load_sam, segment_boxes  # noqa: E402


def detector_row(image: np.ndarray, scratch: Path, args) -> tuple[str, float, int]:
    from ums.core.offline import configure_ultralytics

    configure_ultralytics()
    from ultralytics import YOLO

    YOLO("yolov8n.yaml").save(str(scratch / "yolov8n.pt"))
    detector = load_detector(DetectorConfig(weights=scratch / "yolov8n.pt", device=args.device))
    detector.detect(image)  # warm-up
    return ("detector yolov8n @640", median_seconds(lambda: detector.detect(image), args.repeat), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--boxes", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-detector", action="store_true",
                        help="SAM rows only (a GPU image without ultralytics and its dependencies)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (512, 640, 3), dtype=np.uint8)
    scratch = Path(tempfile.mkdtemp(prefix="ums-autolabel-bench-"))

    rows = [] if args.no_detector else [detector_row(image, scratch, args)]

    from segment_anything import sam_model_registry

    torch.save(sam_model_registry["vit_b"]().state_dict(), scratch / "sam_vit_b.pth")
    predictor = load_sam(SamConfig(checkpoint=scratch / "sam_vit_b.pth", model_type="vit_b", device=args.device))
    corners = rng.uniform(0, 400, (args.boxes, 2))
    boxes = Detections(np.hstack([corners, corners + rng.uniform(20, 200, (args.boxes, 2))]),
                       np.ones(args.boxes), np.zeros(args.boxes), "ums")
    rgb = image[..., ::-1].copy()
    rows.append(("SAM set_image (vit_b)", median_seconds(lambda: predictor.set_image(rgb), 1), 1))

    def one_by_one():
        for box in boxes.boxes:
            predictor.predict(box=box, multimask_output=False)

    def batched():
        transformed = predictor.transform.apply_boxes_torch(torch.as_tensor(boxes.boxes, dtype=torch.float32,
                                                                            device=predictor.device), image.shape[:2])
        predictor.predict_torch(point_coords=None, point_labels=None, boxes=transformed, multimask_output=False)

    with torch.no_grad():
        baseline = median_seconds(one_by_one, args.repeat)
        rows.append((f"SAM prompts, one call per box ({args.boxes})", baseline, args.boxes))
        rows.append((f"SAM prompts, batched ({args.boxes})", median_seconds(batched, args.repeat), args.boxes))
        # the whole mask step of one image, as autolabel runs it
        rows.append(("SAM image + batched prompts (segment_boxes)",
                     median_seconds(lambda: segment_boxes(predictor, image, boxes), 1), args.boxes))

    if args.device.startswith("cuda"):
        device = torch.cuda.get_device_name(0)
    else:
        device = f"{platform.machine()} CPU, torch threads {torch.get_num_threads()}"
    print(f"\ndevice: {device}; torch {torch.__version__}")
    print(f"{'row':<46} {'seconds':>8} {'items/s':>8} {'vs one-by-one':>14}")
    for name, seconds, items in rows:
        ratio = f"{baseline / seconds:13.2f}x" if name.startswith("SAM prompts") else f"{'':>14}"
        print(f"{name:<46} {seconds:8.3f} {items / seconds:8.2f} {ratio}")


if __name__ == "__main__":
    main()
