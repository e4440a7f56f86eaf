"""Fusion metrics, one family per file, with every convention named (``convention.py``)."""

from tsjnet.metrics.chen_varshney import chen_varshney
from tsjnet.metrics.convention import CDDFUSE, CONVENTIONS, TSJNET, Convention
from tsjnet.metrics.entropy import entropy
from tsjnet.metrics.error import mean_squared_error, psnr
from tsjnet.metrics.gradients import average_gradient, spatial_frequency
from tsjnet.metrics.mutual_information import mutual_information
from tsjnet.metrics.petrovic import nabf, qabf
from tsjnet.metrics.ssim import ssim
from tsjnet.metrics.statistics import correlation_coefficient, standard_deviation, sum_of_correlations_of_differences
from tsjnet.metrics.vif import vif

__all__ = [
    "CDDFUSE", "CONVENTIONS", "TSJNET", "Convention", "average_gradient", "chen_varshney", "correlation_coefficient", "entropy",
    "mean_squared_error", "mutual_information", "nabf", "psnr", "qabf", "spatial_frequency", "ssim", "standard_deviation",
    "sum_of_correlations_of_differences", "vif",
]
