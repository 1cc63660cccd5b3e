"""Training the shipped networks: simulated slides and restoration pairs, batches drawn by
worker processes, Noise2Void masking, and the trainers (run as scripts)::

    python -m tasks.training.train_unet --seed 0 --out unet.pt
    python -m tasks.training.train_restoration --mode care --seed 0 --out care.pt
    python -m tasks.training.train_virtual_stain --seed 0 --out virtual_stain.pt

The trainers' configs and ``train``/``save`` are imported from their modules
(``tasks.training.train_unet``, ``tasks.training.train_restoration``), so that running them
with ``-m`` does not import them twice. The weights they write are loaded by ``tasks.inference``
(``UNET_DEFAULT_WEIGHTS``, ``RESTORATION_DEFAULT_WEIGHTS``).
"""

from __future__ import annotations

from ._batches import training_batches
from ._crops import normalised_pair, random_crop_window, random_flip_rotation
from ._n2v import N2V_MASK_FRACTION, N2V_RADIUS, n2v_mask
from ._restoration_data import (
    ConfocalNoise,
    NoiseModel,
    add_camera_noise,
    add_confocal_noise,
    estimate_noise_gain,
    random_confocal_noise,
    random_noise_model,
    sim_pair,
    synthetic_clean,
    tissue_clean,
)
from ._training_data import (
    STARDIST_DSB_HINT,
    FrameSettings,
    SimFrame,
    load_stardist_dsb_example,
    random_settings,
    simulated_frame,
    simulated_frames,
)
from ._virtual_stain_data import StainFrame, stain_frames

__all__ = [
    "N2V_MASK_FRACTION",
    "N2V_RADIUS",
    "STARDIST_DSB_HINT",
    "ConfocalNoise",
    "FrameSettings",
    "NoiseModel",
    "SimFrame",
    "StainFrame",
    "add_camera_noise",
    "add_confocal_noise",
    "estimate_noise_gain",
    "load_stardist_dsb_example",
    "n2v_mask",
    "normalised_pair",
    "random_confocal_noise",
    "random_crop_window",
    "random_flip_rotation",
    "random_noise_model",
    "random_settings",
    "sim_pair",
    "simulated_frame",
    "simulated_frames",
    "stain_frames",
    "synthetic_clean",
    "tissue_clean",
    "training_batches",
]
