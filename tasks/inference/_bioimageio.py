"""BioImage Model Zoo packages: run a local package as a RestorationModel, export ours as one.

Loading goes through ``bioimageio.spec`` / ``bioimageio.core`` (the ``bioimageio`` extra:
``pip install -e '.[bioimageio]'``) and only ever reads a file on local disk: a package is
never fetched from a hub at run time. The package's own pre/postprocessing runs (e.g. its
percentile scaling); its output is then mapped back to the input's intensity units:
exactly for packages exported by scopeflow (``config.scopeflow.output`` says the output is in
the input's percentile-normalised scale), else by matching the output's 1st..99.8th
percentiles to the input's (right for denoisers whose output is normalised).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from scopeflow import ConfigurationError

from ._care import PERCENTILES, CareDenoiser, percentile_range
from ._classical import check_image

__all__ = ["BioimageioRestorer", "export_bioimageio_package", "load_bioimageio_package"]

_INSTALL_HINT = "install the extra: pip install -e '.[bioimageio]'"
_SCOPEFLOW_OUTPUT = "input_percentile_scale"  # output * (p_hi - p_lo) + p_lo = input units
_TENSOR_IN, _TENSOR_OUT = "raw", "restored"


def _require_bioimageio() -> None:
    try:
        import bioimageio.core  # noqa: F401
        import bioimageio.spec  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(
            f"BioImage Model Zoo packages need bioimageio.core ({exc}); {_INSTALL_HINT}"
        ) from exc


def load_bioimageio_package(path: str | os.PathLike[str], **options: Any) -> BioimageioRestorer:
    """A RestorationModel for the package zip (or rdf.yaml) at ``path`` on local disk."""
    return BioimageioRestorer(path, **options)


class BioimageioRestorer:
    """Runs a BioImage Model Zoo model (2D, one input, one output) with bioimageio.core.

    Options: ``weights_format`` (e.g. "torchscript", "pytorch_state_dict"; default: the
    package's first that bioimageio.core can run), ``device`` (e.g. "cpu", "cuda").
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        weights_format: str | None = None,
        device: str | None = None,
    ) -> None:
        text = str(path)
        if "://" in text:
            raise ConfigurationError(
                f"bioimageio package {text!r} is a URL; scopeflow loads packages from local "
                "disk only: download the zip once and pass its path"
            )
        p = Path(text).expanduser()
        if not p.exists():
            raise ConfigurationError(
                f"bioimageio package not found: {p}; pass 'bioimageio:/path/to/package.zip'"
            )
        _require_bioimageio()
        from bioimageio.core import create_prediction_pipeline, load_model_description
        from bioimageio.spec import InvalidDescr

        descr = load_model_description(p, perform_io_checks=False)
        if isinstance(descr, InvalidDescr):
            raise ConfigurationError(f"{p} is not a valid bioimageio model package: {descr}")
        if len(descr.inputs) != 1 or len(descr.outputs) != 1:
            raise ConfigurationError(
                f"{p}: scopeflow runs models with one input and one output tensor, this one "
                f"has {len(descr.inputs)} and {len(descr.outputs)}"
            )
        self._descr = descr
        self._pipeline = create_prediction_pipeline(
            descr,
            weights_format=weights_format,  # type: ignore[arg-type]
            devices=[device] if device else None,
        )
        self._in_id = descr.inputs[0].id
        self._out_id = descr.outputs[0].id
        self._axes = [str(a.id) for a in descr.inputs[0].axes]
        self._step = _size_step(descr.inputs[0].axes)
        config = descr.config.model_dump() if hasattr(descr.config, "model_dump") else {}
        self._exact_units = (config.get("scopeflow") or {}).get("output") == _SCOPEFLOW_OUTPUT
        self.name = f"bioimageio:{descr.name}"
        digest = hashlib.sha256(p.read_bytes()).hexdigest()[:8] if p.is_file() else "folder"
        self.version = f"{descr.version or '0'}+{digest}"
        self.device = device or "cpu"

    def restore(self, image: np.ndarray, *, pixel_size_um: float | None = None) -> np.ndarray:
        from bioimageio.core import Sample, Tensor

        img = check_image(image, self.name)
        h, w = img.shape
        ph, pw = (-h) % self._step, (-w) % self._step
        padded = np.pad(img, ((0, ph), (0, pw)), mode="reflect" if min(h, w) > 1 else "edge")
        arr = padded.reshape(_full(self._axes, padded))
        sample = Sample(
            members={self._in_id: Tensor.from_numpy(arr, dims=tuple(self._axes))},
            stat={},
            id="scopeflow",
        )
        result = self._pipeline.predict_sample_without_blocking(sample)
        out = np.asarray(result.members[self._out_id].data).reshape(padded.shape)[:h, :w]
        out = out.astype(np.float32)
        lo, scale = percentile_range(img)
        if self._exact_units:
            return (out * scale + lo).astype(np.float32)
        olo, oscale = percentile_range(out)
        return ((out - olo) / oscale * scale + lo).astype(np.float32)


def _size_step(axes: Any) -> int:
    step = 1
    for a in axes:
        size = getattr(a, "size", None)
        if size is not None and hasattr(size, "step"):
            step = max(step, int(size.step))
    return step


def _full(axes: list[str], plane: np.ndarray) -> list[int]:
    """Sizes for ``axes``: y and x from the plane, 1 for any other axis."""
    return [plane.shape[0] if a == "y" else plane.shape[1] if a == "x" else 1 for a in axes]


# --------------------------------------------------------------------------- export


def export_bioimageio_package(
    out: str | os.PathLike[str],
    *,
    weights: str | os.PathLike[str] | None = None,
    mode: str = "care",
) -> Path:
    """Write our CARE/N2V model as a bioimageio package zip (torchscript weights); returns it.

    The package carries its percentile preprocessing (``scale_range`` 1..99.8 per sample), a
    64x64 test tensor pair, and ``config.scopeflow.output`` so scopeflow maps the output back
    to input units exactly.
    """
    _require_bioimageio()
    import torch
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5 as v

    model = CareDenoiser(mode=mode, weights=weights, device="cpu")
    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        rng = np.random.default_rng(0)
        test_in = (rng.poisson(20.0, (1, 1, 64, 64)) + 100).astype(np.float32)
        lo, scale = percentile_range(test_in)
        with torch.inference_mode():
            test_out = model.net(torch.from_numpy((test_in - lo) / scale)).numpy()
        np.save(tmp / "test_input.npy", test_in)
        np.save(tmp / "test_output.npy", test_out.astype(np.float32))
        scripted = torch.jit.trace(model.net, torch.zeros(1, 1, 64, 64))
        scripted.save(str(tmp / "weights.pt"))
        (tmp / "README.md").write_text(
            f"# scopeflow {mode} denoiser\n\nA small U-Net trained by "
            "`python -m tasks.training.train_restoration` (scopeflow). Input: one 2D "
            "fluorescence image; output: the denoised image in the input's percentile-"
            "normalised scale.\n"
        )
        y, x = v.AxisId("y"), v.AxisId("x")
        inp = v.InputTensorDescr(
            id=v.TensorId(_TENSOR_IN),
            axes=[
                v.BatchAxis(),
                v.ChannelAxis(channel_names=[v.Identifier("fluorescence")]),
                v.SpaceInputAxis(id=y, size=v.ParameterizedSize(min=16, step=8)),
                v.SpaceInputAxis(id=x, size=v.ParameterizedSize(min=16, step=8)),
            ],
            test_tensor=v.FileDescr(source=tmp / "test_input.npy"),
            preprocessing=[
                v.ScaleRangeDescr(
                    kwargs=v.ScaleRangeKwargs(
                        axes=[y, x],
                        min_percentile=PERCENTILES[0],
                        max_percentile=PERCENTILES[1],
                    )
                )
            ],
        )
        ref = v.SizeReference
        outp = v.OutputTensorDescr(
            id=v.TensorId(_TENSOR_OUT),
            axes=[
                v.BatchAxis(),
                v.ChannelAxis(channel_names=[v.Identifier("restored")]),
                v.SpaceOutputAxis(id=y, size=ref(tensor_id=v.TensorId(_TENSOR_IN), axis_id=y)),
                v.SpaceOutputAxis(id=x, size=ref(tensor_id=v.TensorId(_TENSOR_IN), axis_id=x)),
            ],
            test_tensor=v.FileDescr(source=tmp / "test_output.npy"),
        )
        descr = v.ModelDescr(
            name=f"scopeflow {mode} denoiser",
            description=f"{mode.upper()} U-Net denoiser for 2D fluorescence (scopeflow).",
            authors=[v.Author(name="scopeflow")],
            cite=[v.CiteEntry(text="scopeflow restoration models", url="https://bioimage.io")],
            license=v.LicenseId("MIT"),
            documentation=v.FileDescr(source=tmp / "README.md"),
            tags=["denoising", "fluorescence", "2d", mode],
            version="1.0.0",
            inputs=[inp],
            outputs=[outp],
            weights=v.WeightsDescr(
                torchscript=v.TorchscriptWeightsDescr(
                    source=tmp / "weights.pt",
                    pytorch_version=v.Version(str(torch.__version__).split("+")[0]),
                )
            ),
            config={"scopeflow": {"output": _SCOPEFLOW_OUTPUT, "mode": mode}},  # type: ignore[arg-type]
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        save_bioimageio_package(descr, output_path=out)
    return out
