"""Holding out whole videos for validation, and saying so when the split is not what was asked for."""

from __future__ import annotations


def split_videos(videos: list, val_fraction: float) -> tuple[list, list]:
    """(training, validation) videos: every k-th video (k = 1 / val_fraction) is held out, so no clip
    of a validation video is ever trained on. With fewer than 2 videos there is no validation set."""
    if val_fraction <= 0 or len(videos) < 2:
        return list(videos), []
    every = max(2, int(round(1 / val_fraction)))
    val = [v for i, v in enumerate(videos) if i % every == every - 1] or [videos[-1]]
    return [v for v in videos if v not in val], val


def split_warning(what: str, train: list, val: list, val_fraction: float) -> str | None:
    """A warning when the held-out share is far from `val_fraction` (under half or over twice it), or
    when none could be held out although some was asked for; None when the split is as asked."""
    total = len(train) + len(val)
    if val_fraction <= 0 or total == 0:
        return None
    share = len(val) / total
    if not val:
        return (
            f"{what}: train.val_fraction is {val_fraction:g} but {total} video(s) leave none to hold out: no val/loss, "
            "so the model cannot be promoted by validation (add videos, or promote it by hand: vad promote)"
        )
    if share > 2 * val_fraction or share < val_fraction / 2:
        return (
            f"{what}: train.val_fraction {val_fraction:g} held out {len(val)} of {total} videos ({share:.0%}), whole videos "
            "being the unit; add videos or change val_fraction if that is not what you want"
        )
    return None
