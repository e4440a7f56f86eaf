"""IR/visible registration: the ``register`` API, flows in pixels, and the ``align`` stage."""

from ums.align.ecc import RegistrationFailure
from ums.align.registration import METHODS, Registration, register

__all__ = ["METHODS", "Registration", "RegistrationFailure", "register"]
