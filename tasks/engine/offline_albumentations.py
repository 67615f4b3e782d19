"""Albumentations with its update check off: on import it asks PyPI for a newer version,
and the suite runs offline.  Modules that augment import it from here
(``from tasks.engine.offline_albumentations import albumentations as A``)."""
import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations  # noqa: E402  (the variable must be set first)

__all__ = ["albumentations"]
