"""C3D (Tran et al., ICCV 2015): 8 3-D convolutions, fc6 4096-d features.

Loads the public `c3d.pickle` state-dict layout (Sports-1M weights, keys conv1 … conv5b, fc6-fc8)
when a user supplies it; otherwise random init, flagged by `pretrained = False` and carried into
every output row, since random C3D features are only good for plumbing tests.
"""

from __future__ import annotations

import torch
from torch import nn

from vad.models.backbones.catalog import register
from vad.models.registry import ModelMeta, Tiny

# c3d.pickle (the common PyTorch port of the Caffe model) takes RGB 0-255 minus this mean.
MEAN_RGB = (90.25, 97.66, 101.41)


class C3D(nn.Module):
    def __init__(self):
        super().__init__()
        conv = lambda cin, cout: nn.Conv3d(cin, cout, 3, padding=1)  # noqa: E731
        self.conv1, self.conv2 = conv(3, 64), conv(64, 128)
        self.conv3a, self.conv3b = conv(128, 256), conv(256, 256)
        self.conv4a, self.conv4b = conv(256, 512), conv(512, 512)
        self.conv5a, self.conv5b = conv(512, 512), conv(512, 512)
        self.pool1 = nn.MaxPool3d((1, 2, 2), (1, 2, 2))
        self.pool = nn.MaxPool3d(2, 2)
        self.pool5 = nn.MaxPool3d(2, 2, padding=(0, 1, 1))
        self.fc6, self.fc7, self.fc8 = nn.Linear(8192, 4096), nn.Linear(4096, 4096), nn.Linear(4096, 487)
        self.relu = nn.ReLU()
        self.pretrained = False
        self.register_buffer("mean", torch.tensor(MEAN_RGB).view(1, 3, 1, 1, 1))

    def load_c3d_pickle(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load the public c3d.pickle layout (read it with `torch.load(path, weights_only=True)`)."""
        expected = set(self.state_dict()) - {"mean"}
        missing = expected - set(state_dict)
        if missing:
            raise ValueError(f"not a c3d.pickle state dict: missing {sorted(missing)[:4]}")
        self.load_state_dict({**{k: state_dict[k] for k in expected}, "mean": self.mean})
        self.pretrained = True

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """RGB clips (B, T=16, 112, 112, 3) in 0-255 -> fc6 features (B, 4096), after ReLU."""
        x = clips.permute(0, 4, 1, 2, 3).float() - self.mean
        x = self.pool1(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = self.pool(self.relu(self.conv3b(self.relu(self.conv3a(x)))))
        x = self.pool(self.relu(self.conv4b(self.relu(self.conv4a(x)))))
        x = self.pool5(self.relu(self.conv5b(self.relu(self.conv5a(x)))))
        return self.relu(self.fc6(x.flatten(1)))


def c3d(*, state_dict: dict[str, torch.Tensor] | None = None) -> C3D:
    model = C3D()
    if state_dict is not None:
        model.load_c3d_pickle(state_dict)
    return model.eval()


PAPER = "Tran et al., Learning Spatiotemporal Features with 3D Convolutional Networks, ICCV 2015"
# RGB 0-255 (input_range 255) minus the Sports-1M mean; 16 frames of 112x112; fc6 is 4096-d.
register(ModelMeta("c3d", c3d, PAPER, clip_len=16, input_size=(112, 112), grayscale=False, input_range=255.0,
                   normalisation="RGB 0-255 minus the Sports-1M mean", feature_dim=4096, tiny=Tiny({}, (1, 16, 112, 112, 3))))
