"""ums: DJI Matrice 30T infrared/visible dataset builder.

Importing the package applies the offline settings first, so that any library imported afterwards
(ultralytics, FiftyOne, albumentations) starts without reaching for the network.
"""

from ums.core.offline import apply_offline_environment

apply_offline_environment()

__version__ = "0.1.0"
