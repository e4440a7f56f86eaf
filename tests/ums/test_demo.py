import pytest

from tests.ums.autolabel.models import TINY_SAM, tiny_sam_checkpoint, yolov7_end_to_end
from tests.ums.autolabel.models import ROWS
from ums.autolabel.detectors import DetectorConfig
from ums.autolabel.sam import SamConfig
from ums.autolabel.stage import AutolabelConfig
from ums.demo import run_demo


@pytest.mark.slow
def test_demo_end_to_end_with_tiny_models(tmp_path):
    autolabel = AutolabelConfig(
        detector=DetectorConfig(weights=yolov7_end_to_end(tmp_path / "yolov7.onnx", ROWS)),
        sam=SamConfig(checkpoint=tiny_sam_checkpoint(tmp_path / "sam.pth"), model_type="custom", architecture=TINY_SAM),
        visible_resolution="aligned")  # the fixed detections are drawn for the 640x512 grid
    result = run_demo(tmp_path / "demo", n=2, show_progress=False, autolabel=autolabel)
    assert result.ingest.paired == 2 and result.align.failed == 0
    assert result.autolabel.labelled == 2 and result.autolabel.labels == 4
    assert result.review_dataset.startswith("ums-") and (result.export / "README.md").exists()
    assert sum(result.split.counts[s]["captures"] for s in result.split.counts) == 2
    page = result.report.read_text()
    assert page.count('alt="labels"') == 2 and "4 labels" not in page and "2 labels" in page
    fusion = result.fusion
    assert fusion["steps"] == 24 and fusion["last_loss"] < fusion["first_loss"]
    assert set(fusion["metrics"]) == {"tsjnet", "mean"} and 0 < fusion["metrics"]["tsjnet"]["SSIM"] < 1
    assert len(list((tmp_path / "demo" / "fused" / "tsjnet").glob("*.png"))) == 2
    # a second run reuses everything
    again = run_demo(tmp_path / "demo", n=2, show_progress=False, autolabel=autolabel)
    assert again.ingest.read == 0 and again.crop.skipped == 2 and again.autolabel.skipped == 2
    assert again.fusion["steps"] == 24 and again.fusion["first_loss"] == fusion["first_loss"]
