"""Every loss weight, with the official code's values by default and the paper's as a preset
(docs/reference/tsjnet.md §3: the code adds 20 L_int + 20 L_grad, weights SSIM by gradient energy x10, puts 6 on the
visible reconstruction and uses objectness too; Eq. 6-12 do not)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

PAPER = {"intensity": 0.0, "gradient": 0.0, "ssim": 1.0, "ssim_weighting": "equal", "diversity": 0.1,
         "visible_reconstruction": 1.0, "infrared_reconstruction": 6.0, "segmentation": 1.0, "detection": 1.0,
         "detection_terms": ("loss_box_reg", "loss_rpn_box_reg")}


class LossConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    preset: Literal["code", "paper"] = "code"
    intensity: float = 20.0  # L1(F, max(I, V))
    gradient: float = 20.0  # L1(|∇F|, max(|∇I|, |∇V|)), Sobel
    ssim: float = 10.0  # 1 - (w_V SSIM(V, F) + w_I SSIM(I, F))
    ssim_weighting: Literal["gradient", "equal"] = "gradient"  # w from mean gradient energy, or 1/2 each
    diversity: float = 0.1  # mean(1 - max_h att) + mean(att) on the fused pass's attention maps
    visible_reconstruction: float = 6.0  # MSE(V, decoder(encoder(V)))
    infrared_reconstruction: float = 1.0
    segmentation: float = 1.0  # cross-entropy of the segmenter on F
    detection: float = 1.0  # Faster R-CNN terms on F
    detection_terms: tuple[str, ...] = ("loss_box_reg", "loss_objectness", "loss_rpn_box_reg")
    # "infrared"/"visible" add the detector on the sources: no gradient for the fusion net, so they
    # run under no_grad and are logged, never added to the loss
    detection_sources: tuple[Literal["fused", "infrared", "visible"], ...] = ("fused",)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") == "paper":
            return {**PAPER, **data}
        return data

    @property
    def needs_reconstruction(self) -> bool:
        return bool(self.visible_reconstruction or self.infrared_reconstruction)
