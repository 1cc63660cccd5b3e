"""A synthetic SEM/TEM mosaic with ground truth: textured tissue, a scanning beam's noise and
blur, and the faults QC must catch, each labelled on the tile it was injected into.

The sample is one stationary field in stage coordinates (nm pixels): cells whose membranes are
level sets of a smooth random field, dark organelles, granular cytoplasm. Each tile crops the
field at its stage position (plus its drift), so neighbouring tiles agree in their overlap. The
beam: a Gaussian probe (nominal 0.7-0.9 px; defocus and astigmatism widen it, the latter along
one direction), Poisson counting of ``dose`` electrons per pixel, a per-line gain and offset
jitter of the scan, and an 8-bit detector (brightness + contrast, clipped).

Injected faults (``FAULTS``), with their severity ranges:
- ``defocus``: probe sigma 2.2-3.5 px; ``astigmatism``: 2.2-3.5 px along a random direction,
  nominal across it;
- ``noise``: dose divided by 5-8 (a beam current drop);
- ``brightness``: offset +-(40-60) grey levels (a third to a half of the mean);
  ``contrast``: gain x0.4-0.55;
- ``saturation``: gain x1.9-2.4 (the bright tail clips at 255);
- ``charging``: 2-4 bright streaks along the scan (+45-90 grey, decaying over 150-600 px);
- ``scan_lines``: 1-3 bands of 8-40 lines shifted sideways by 4-9 px (lost line sync);
- ``drift``: the tile's content 0.25-0.4 of its overlap away from its stage position (needs a
  neighbour: never the first tile);
- ``truncated``: the file is cut at 30-90 % of its bytes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import ndimage

__all__ = ["FAULTS", "EMMosaicSimulator", "Fault", "SimTile", "write_sem_tiff"]

Fault = Literal[
    "defocus",
    "astigmatism",
    "noise",
    "brightness",
    "contrast",
    "saturation",
    "charging",
    "scan_lines",
    "drift",
    "truncated",
]
FAULTS: tuple[Fault, ...] = (
    "defocus",
    "astigmatism",
    "noise",
    "brightness",
    "contrast",
    "saturation",
    "charging",
    "scan_lines",
    "drift",
    "truncated",
)

_COARSE = 8  # the sample's smooth fields are drawn at 1/8 of the pixel grid


@dataclass(frozen=True)
class SimTile:
    """One tile: its pixels, where the stage put it, and what was done to it (ground truth)."""

    index: int
    row: int
    col: int
    pixels: np.ndarray
    stage_x_um: float
    stage_y_um: float
    pixel_size_um: float
    faults: tuple[Fault, ...]
    drift_px: tuple[float, float] = (0.0, 0.0)  # (dy, dx) of the content, for drift
    truncate_at: float | None = None  # fraction of the file's bytes kept, for truncated
    params: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return EMMosaicSimulator.tile_name(self.index, self.row, self.col)


class EMMosaicSimulator:
    """Tiles of a ``rows`` x ``cols`` mosaic (raster order), ``tile`` px square, ``overlap``
    fraction shared with each neighbour, at ``pixel_size_nm``. ``faults``: tile index -> the
    faults injected there (``random_faults`` draws such a plan)."""

    def __init__(
        self,
        *,
        rows: int,
        cols: int,
        tile: int = 512,
        overlap: float = 0.15,
        pixel_size_nm: float = 4.0,
        seed: int = 0,
        faults: dict[int, Sequence[Fault]] | None = None,
        dose: float = 30.0,
        regions: int = 1,
    ) -> None:
        if tile < 128 or tile % _COARSE:
            raise ValueError(f"tile must be a multiple of {_COARSE} and >= 128, got {tile}")
        self.rows, self.cols, self.tile = rows, cols, tile
        self.overlap = overlap
        self.step = round(tile * (1 - overlap))
        self.pixel_size_um = pixel_size_nm / 1000.0
        self.seed = seed
        self.dose = dose
        self.faults = {int(k): tuple(v) for k, v in (faults or {}).items()}
        self._rng = np.random.default_rng(seed)
        margin = tile  # room for drift around the mosaic
        self._origin = margin
        height = (rows - 1) * self.step + tile + 2 * margin
        width = (cols - 1) * self.step + tile + 2 * margin
        self._field = _Sample(height, width, self._rng)

    @staticmethod
    def random_faults(
        n_tiles: int, *, seed: int, rate: float = 0.3, kinds: Sequence[Fault] = FAULTS
    ) -> dict[int, tuple[Fault, ...]]:
        """A fault plan: about ``rate`` of the tiles (never tile 0, which anchors the mosaic)
        get one fault, the kinds in turn so each kind appears about equally often."""
        rng = np.random.default_rng(seed + 7919)
        chosen = [i for i in range(1, n_tiles) if rng.random() < rate]
        order = list(kinds)
        rng.shuffle(order)
        return {i: (order[k % len(order)],) for k, i in enumerate(chosen)}

    def __len__(self) -> int:
        return self.rows * self.cols

    @staticmethod
    def tile_name(index: int, row: int, col: int) -> str:
        """The file name a tile is written under (Atlas-like: row, column, index)."""
        return f"tile_r{row:03d}-c{col:03d}_{index:05d}.tif"

    def tiles(self) -> Iterator[SimTile]:
        for index in range(len(self)):
            yield self.render(index)

    def render(self, index: int) -> SimTile:
        row, col = divmod(index, self.cols)
        faults = self.faults.get(index, ())
        rng = np.random.default_rng((self.seed, index))
        params: dict[str, float] = {}
        dy = dx = 0.0
        if "drift" in faults:
            angle = rng.uniform(0, 2 * math.pi)
            size = rng.uniform(0.25, 0.4) * (self.tile - self.step)
            dy, dx = round(size * math.sin(angle)), round(size * math.cos(angle))
        y0 = self._origin + row * self.step + int(dy)
        x0 = self._origin + col * self.step + int(dx)
        scene = self._field.crop(y0, x0, self.tile)
        sigma = rng.uniform(0.7, 0.9)
        sigmas, theta = (sigma, sigma), 0.0
        if "defocus" in faults:
            s = rng.uniform(2.2, 3.5)
            sigmas, params["sigma_px"] = (s, s), s
        if "astigmatism" in faults:
            s, theta = rng.uniform(2.2, 3.5), rng.uniform(0, math.pi)
            sigmas, params["sigma_px"], params["angle_rad"] = (s, sigma), s, theta
        blurred = _blur(scene, sigmas, theta)
        dose = self.dose * rng.uniform(0.9, 1.1)
        if "noise" in faults:
            dose /= rng.uniform(5, 8)
            params["dose"] = dose
        counts = rng.poisson(np.clip(blurred, 0, None) * dose).astype(np.float32) / dose
        offset = 22.0 + rng.normal(0, 2.0)
        gain = 185.0 * rng.uniform(0.97, 1.03)
        if "brightness" in faults:
            params["offset_shift"] = rng.choice([-1, 1]) * rng.uniform(40, 60)
            offset += params["offset_shift"]
        if "contrast" in faults:
            params["gain_factor"] = rng.uniform(0.4, 0.55)
            gain *= params["gain_factor"]
            offset += 0.5 * 185.0 * (1 - params["gain_factor"])  # same mean grey
        if "saturation" in faults:
            params["gain_factor"] = rng.uniform(1.9, 2.4)
            gain *= params["gain_factor"]
            offset -= 0.35 * 185.0 * (params["gain_factor"] - 1)
        line_gain = 1 + rng.normal(0, 0.004, (self.tile, 1)).astype(np.float32)
        line_offset = rng.normal(0, 0.6, (self.tile, 1)).astype(np.float32)
        grey = offset + gain * counts * line_gain + line_offset
        if "charging" in faults:
            _charging_streaks(grey, rng)
        if "scan_lines" in faults:
            _shift_line_bands(grey, rng)
        pixels = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
        truncate = rng.uniform(0.3, 0.9) if "truncated" in faults else None
        return SimTile(
            index=index,
            row=row,
            col=col,
            pixels=pixels,
            stage_x_um=col * self.step * self.pixel_size_um,
            stage_y_um=row * self.step * self.pixel_size_um,
            pixel_size_um=self.pixel_size_um,
            faults=faults,
            drift_px=(float(dy), float(dx)),
            truncate_at=truncate,
            params=params,
        )


class _Sample:
    """The tissue: smooth fields drawn coarse once; fine texture from a periodic patch."""

    def __init__(self, height: int, width: int, rng: np.random.Generator) -> None:
        ch, cw = height // _COARSE + 2, width // _COARSE + 2
        cells = ndimage.gaussian_filter(rng.standard_normal((ch, cw)), 10)  # ~0.6 µm cells
        self._cells = (cells / cells.std()).astype(np.float32)
        organelles = ndimage.gaussian_filter(rng.standard_normal((ch, cw)), 1.8)
        self._organelles = (organelles / organelles.std()).astype(np.float32)
        shade = ndimage.gaussian_filter(rng.standard_normal((ch, cw)), 40)
        self._shade = (shade / (shade.std() + 1e-9)).astype(np.float32)
        grain = ndimage.gaussian_filter(rng.standard_normal((509, 509)), 1.2, mode="wrap")
        self._grain = (grain / grain.std()).astype(np.float32)

    def crop(self, y0: int, x0: int, size: int) -> np.ndarray:
        """The sample's intensity (0..1) over ``size``² pixels from (y0, x0)."""
        cells = self._fine(self._cells, y0, x0, size)
        organelles = self._fine(self._organelles, y0, x0, size)
        shade = self._fine(self._shade, y0, x0, size)
        membrane = np.exp(-((cells * 14.0) ** 2))  # thin dark walls on the zero level set
        dark = np.clip(organelles - 1.3, 0, None)
        gy = (np.arange(y0, y0 + size) % 509)[:, None]
        gx = (np.arange(x0, x0 + size) % 509)[None, :]
        grain = self._grain[gy, gx]
        out = 0.56 + 0.025 * shade + 0.09 * grain - 0.32 * membrane - 0.30 * np.tanh(2 * dark)
        return np.clip(out, 0.02, 1.0).astype(np.float32)

    @staticmethod
    def _fine(coarse: np.ndarray, y0: int, x0: int, size: int) -> np.ndarray:
        cy, cx = y0 / _COARSE, x0 / _COARSE
        ys = cy + np.arange(size, dtype=np.float32) / _COARSE
        xs = cx + np.arange(size, dtype=np.float32) / _COARSE
        iy, ix = ys.astype(np.int64), xs.astype(np.int64)
        fy, fx = (ys - iy)[:, None], (xs - ix)[None, :]
        a = coarse[iy][:, ix]
        b = coarse[iy][:, ix + 1]
        c = coarse[iy + 1][:, ix]
        d = coarse[iy + 1][:, ix + 1]
        return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def _blur(image: np.ndarray, sigmas: tuple[float, float], theta: float) -> np.ndarray:
    """A Gaussian probe with ``sigmas`` (along ``theta``, across it), applied in Fourier space."""
    from scipy import fft

    h, w = image.shape
    fy = fft.fftfreq(h)[:, None].astype(np.float32)
    fx = fft.rfftfreq(w)[None, :].astype(np.float32)
    u = fx * math.cos(theta) + fy * math.sin(theta)
    v = -fx * math.sin(theta) + fy * math.cos(theta)
    otf = np.exp(-2 * math.pi**2 * (sigmas[0] ** 2 * u**2 + sigmas[1] ** 2 * v**2))
    return fft.irfft2(fft.rfft2(image) * otf, s=(h, w), workers=1).astype(np.float32)


def _charging_streaks(grey: np.ndarray, rng: np.random.Generator) -> None:
    h, w = grey.shape
    for _ in range(int(rng.integers(2, 5))):
        row = int(rng.integers(0, h - 4))
        height = int(rng.integers(2, 6))
        start = int(rng.integers(0, w // 2))
        length = rng.uniform(150, 600)
        amp = rng.uniform(45, 90)
        x = np.arange(w - start, dtype=np.float32)
        grey[row : row + height, start:] += amp * np.exp(-x / length)


def _shift_line_bands(grey: np.ndarray, rng: np.random.Generator) -> None:
    h, _ = grey.shape
    for _ in range(int(rng.integers(1, 4))):
        height = int(rng.integers(8, 41))
        row = int(rng.integers(0, h - height))
        shift = int(rng.choice([-1, 1]) * rng.integers(4, 10))
        grey[row : row + height] = np.roll(grey[row : row + height], shift, axis=1)


def write_sem_tiff(path: Path, tile: SimTile, *, vendor: str = "zeiss") -> Path:
    """``tile`` as the microscope writes it: a ZEISS SmartSEM TIFF (CZ_SEM tag 34118, pixel
    size and stage position) or a Thermo Fisher one (FEI tag 34682); ``vendor="none"``: a plain
    TIFF with no metadata. A ``truncated`` tile is cut short. Written whole, then renamed."""
    import tifffile

    extratags = []
    if vendor == "zeiss":
        text = "\r\n".join(
            [
                "",
                "AP_IMAGE_PIXEL_SIZE",
                f"Image Pixel Size = {tile.pixel_size_um * 1000:.4f} nm",
                "AP_STAGE_AT_X",
                f"Stage at X = {tile.stage_x_um / 1000:.9f} mm",
                "AP_STAGE_AT_Y",
                f"Stage at Y = {tile.stage_y_um / 1000:.9f} mm",
                "",
            ]
        )
        extratags.append((34118, "s", 0, text, True))
    elif vendor == "fei":
        text = (
            "[User]\r\nDate=01/02/2026\r\n[Scan]\r\n"
            f"PixelWidth={tile.pixel_size_um * 1e-6:.6e}\r\n"
            f"PixelHeight={tile.pixel_size_um * 1e-6:.6e}\r\n"
            f"[Stage]\r\nStageX={tile.stage_x_um * 1e-6:.9e}\r\n"
            f"StageY={tile.stage_y_um * 1e-6:.9e}\r\n"
        )
        extratags.append((34682, "s", 0, text, True))
    partial = path.with_name(f".{path.name}.part")
    tifffile.imwrite(partial, tile.pixels, extratags=extratags)
    if tile.truncate_at is not None:
        data = partial.read_bytes()
        partial.write_bytes(data[: int(len(data) * tile.truncate_at)])
    partial.rename(path)
    return path
