"""tsjnet: the TSJNet infrared/visible fusion network, trained on UMS datasets."""

from ums.core.offline import apply_offline_environment

apply_offline_environment()

__version__ = "0.1.0"
