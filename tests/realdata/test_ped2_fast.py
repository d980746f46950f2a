"""The fast Ped2 benchmark as a regression check: every frame-level scorer, trained briefly on the real
training videos with seed 0, must reproduce its recorded development figure (bench/results/, the same
design and seed) within a margin. Only the development videos 01-06 are scored: it never reads the
labels of the test half 07-12 (bench/protocol.py).

CI reproduces `conv_ae` (the gradient-trained learner every autoencoder shares, 30 s); the other four
(st_ae, vgg_ae, pred: the same learner with other architectures; patch_knn: the fitted one, 100 s) are
the heavy tier, `./dev test -m heavy`, 4 to 5 minutes on 2 cores: run it before merging a change to a
model, the learners or decoding."""

import pytest

from bench.ped2_harness import PED2_SETTINGS, benchmark_scorer, design, training_decodes
from bench.protocol import current_digest, load_records
from vad.datasets import data_dir

pytestmark = pytest.mark.skipif(data_dir() is None, reason="UCSD Ped2 archive not found (set VAD_DATA)")

MARGIN = 0.05  # the same seed on another machine or thread count trains a little differently


def test_ped2_labels_match_the_official_ranges():
    from vad.datasets.ped2 import load_ped2

    ped2 = load_ped2()
    labels = ped2.test_labels("all")
    assert len(labels) == 12 and sum(len(v) for v in labels.values()) == 2010
    assert sum(int(v.sum()) for v in labels.values()) == 1648
    assert labels["01"][:60].sum() == 0 and labels["01"][60:].all()  # gt_frame = [61:180]
    dev = ped2.test_labels("dev")
    assert sorted(dev) == ["01", "02", "03", "04", "05", "06"] and all((dev[k] == labels[k]).all() for k in dev)
    test = ped2.test_labels("test")
    assert sorted(test) == ["07", "08", "09", "10", "11", "12"] and all((test[k] == labels[k]).all() for k in test)


def recorded_dev(name: str):
    """The development record of the fast variant's current design."""
    key = f"ped2/{name}/fast"
    digest = current_digest(key)
    for record in load_records():
        if record.key == key and record.split == "dev" and record.design_digest == digest:
            return record
    raise AssertionError(f"no dev record of {key} ({digest}): run bench/ped2.py --split dev --fast --only {name}")


CI_REPRODUCES = ("conv_ae",)


@pytest.mark.parametrize("name", [
    name if name in CI_REPRODUCES else pytest.param(name, marks=pytest.mark.heavy) for name in sorted(PED2_SETTINGS["fast"])
])
def test_scorer_reproduces_its_recorded_dev_figure(name):
    settings = PED2_SETTINGS["fast"][name]
    hparams, decode, train_spec, epochs, lr = (
        settings.hparams, settings.decode, settings.train_strides, settings.epochs, settings.lr)
    record = recorded_dev(name)
    assert design(name, "fast", hparams, decode, train_spec, epochs=epochs, lr=lr).digest == record.design_digest, (
        "the fast settings changed since they were measured: record and measure the new design")
    result = benchmark_scorer(name, hparams, decode, training_decodes(decode, train_spec), epochs=epochs, lr=lr, split="dev")
    assert result.split == "dev" and sorted(result.labels) == record.videos and result.test_clips > 40
    measured = record.figures[record.paper_normalisation]["auc_micro"][record.seeds.index(0)]
    print(f"{name}: dev micro AUC {result.auc_micro:.4f}, recorded {measured:.4f}")
    assert result.auc_micro > measured - MARGIN, (result.auc_micro, measured)
