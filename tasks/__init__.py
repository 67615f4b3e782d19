"""The task packages and the engine they share.

Albumentations asks PyPI for a newer version when it is imported; the suite works offline,
so every task that imports it starts with the check turned off.
"""
import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
