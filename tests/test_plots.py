"""Saved records (glimpse .npz, metrics.csv) and the figures made from them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from foveal.evaluation import (
    GlimpseRecord,
    glimpse_coverage,
    load_glimpse_record,
    plot_accuracy_vs,
    plot_curves,
    plot_glimpse_examples,
    plot_glimpse_heatmaps,
    plot_speedup,
    plot_training_summary,
    read_metrics,
    save_glimpse_record,
)
from foveal.evaluation.plots import speedup_over_reference
from foveal.retina import observation_mask

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
METRICS_CSV = """iteration,split,name,value
0,train,loss,2.5
0,train,accuracy,0.1
10,train,loss,2.0
10,val,accuracy,0.3
10,val,ce,1.9
20,train,loss,1.5
20,val,accuracy,0.6
20,val,ce,1.1
"""


def record_kwargs(channels: int = 1, num_scales: int = 2) -> dict:
    rng = np.random.default_rng(0)
    N, T, H, W = 6, 3, 16, 20
    labels = rng.integers(0, 3, N)
    return dict(
        locations=rng.uniform(-1, 1, (N, T, 2)).astype(np.float32), labels=labels,
        predictions=np.where(np.arange(N) % 2 == 0, labels, (labels + 1) % 3), image_size=(H, W),
        glimpse_size=4, num_scales=num_scales, factor=2,
        images=rng.random((4, channels, H, W)).astype(np.float32), class_names=["cat", "dog", "a very long class name"],
        log_prob=rng.normal(size=(N, T)).astype(np.float32), extra={"probs": rng.random((N, T, 3))},
    )


@pytest.fixture
def record_path(tmp_path: Path) -> Path:
    return save_glimpse_record(tmp_path / "records" / "glimpses_test.npz", **record_kwargs())


@pytest.fixture
def metrics_path(tmp_path: Path) -> Path:
    path = tmp_path / "run" / "metrics.csv"
    path.parent.mkdir()
    path.write_text(METRICS_CSV)
    return path


def assert_png(path: Path) -> None:
    import matplotlib.image

    assert path.exists(), path
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert path.stat().st_size > 5000
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels[..., :3].var() > 0  # not a blank canvas


# ------------------------------------------------------------------------------------------- coverage


def test_glimpse_coverage_exact_on_two_8x8_images():
    # 4 px glimpses on 8x8 images: centre c = (l + 1) / 2 * 8, top-left floor(c - 2 + 0.5).
    locations = np.array([
        [[0.0, 0.0], [0.0, 0.0], [1.0, -1.0]],      # image A: rows/cols 2..5, 2..5, then rows 6..9 x cols -2..1
        [[-1.0, -1.0], [-0.25, -0.25], [1.0, 1.0]],  # image B: -2..1 (off the border), 1..4, then 6..9 x 6..9
    ], dtype=np.float32)
    expected = np.zeros((3, 8, 8))
    expected[0, 2:6, 2:6] += 0.5
    expected[0, 0:2, 0:2] += 0.5  # only the on-image quarter of B's first glimpse counts
    expected[1, 2:6, 2:6] += 0.5
    expected[1, 1:5, 1:5] += 0.5  # overlap 2..4 x 2..4 reaches 1.0
    expected[2, 6:8, 0:2] += 0.5
    expected[2, 6:8, 6:8] += 0.5
    coverage = glimpse_coverage(locations, (8, 8), 4)
    np.testing.assert_array_equal(coverage, expected)
    assert coverage[1, 3, 3] == 1.0 and coverage[1, 1, 1] == 0.5 and coverage[1, 5, 5] == 0.5
    # The same geometry as the retina's observation mask, one step at a time.
    for t in range(3):
        mask = observation_mask(torch.from_numpy(locations[:, t : t + 1]), (8, 8), 4)  # [2, 1, 8, 8]
        np.testing.assert_array_equal(coverage[t], mask.mean(0)[0].numpy())


def test_glimpse_coverage_shapes_and_empty():
    assert glimpse_coverage(torch.zeros(3, 5, 2), (6, 7), 2).shape == (5, 6, 7)
    assert not glimpse_coverage(np.zeros((0, 2, 2)), (4, 4), 2).any()
    with pytest.raises(ValueError, match=r"\[N, T, 2\]"):
        glimpse_coverage(np.zeros((3, 2)), (4, 4), 2)


# ------------------------------------------------------------------------------------------- records


def test_record_round_trip_without_pickles(tmp_path: Path):
    kwargs = record_kwargs(channels=3, num_scales=3)
    kwargs["locations"] = torch.from_numpy(kwargs["locations"])  # torch inputs are accepted too
    path = save_glimpse_record(tmp_path / "r.npz", **kwargs)
    rec = load_glimpse_record(path)
    np.testing.assert_array_equal(rec.locations, kwargs["locations"].numpy())
    assert rec.locations.dtype == np.float32 and rec.labels.dtype == np.int64 and rec.predictions.dtype == np.int64
    for name in ("labels", "predictions", "images", "log_prob"):
        np.testing.assert_array_equal(getattr(rec, name), kwargs[name])
    np.testing.assert_array_equal(rec.extra["probs"], kwargs["extra"]["probs"])
    assert (rec.image_size, rec.glimpse_size, rec.num_scales, rec.factor) == ((16, 20), 4, 3, 2)
    assert rec.class_names == kwargs["class_names"]
    assert (rec.num_images, rec.num_glimpses) == (6, 3) and rec.accuracy == 0.5
    with np.load(path, allow_pickle=False) as data:  # nothing in the file needs pickle
        assert data["class_names"].dtype.kind == "U"
        assert data["glimpse_size"].shape == ()
        for key in data.files:
            assert data[key].dtype != object


def test_record_optional_fields_and_suffix(tmp_path: Path):
    kwargs = {k: v for k, v in record_kwargs().items() if k in ("locations", "labels", "predictions", "image_size")}
    path = save_glimpse_record(tmp_path / "deep" / "r.glimpses", glimpse_size=4, **kwargs)
    assert path.exists()  # no ".npz" appended to another suffix
    rec = load_glimpse_record(path)
    assert rec.images is None and rec.class_names is None and rec.log_prob is None and rec.extra == {}
    assert (rec.num_scales, rec.factor) == (1, 2) and rec.class_name(2) == "2"


def test_record_shape_errors(tmp_path: Path):
    kwargs = record_kwargs()
    kwargs["labels"] = kwargs["labels"][:-1]
    with pytest.raises(ValueError, match="labels.*expected shape \\(6,\\)"):
        save_glimpse_record(tmp_path / "r.npz", **kwargs)


def test_record_missing_key_names_file_and_key(tmp_path: Path):
    path = tmp_path / "broken.npz"
    np.savez(path, locations=np.zeros((2, 3, 2), np.float32), predictions=np.zeros(2, np.int64))
    with pytest.raises(ValueError) as err:
        load_glimpse_record(path)
    message = str(err.value)
    assert str(path) in message and "'labels'" in message and "found ['locations', 'predictions']" in message


# ------------------------------------------------------------------------------------------- metrics


def test_read_metrics(metrics_path: Path):
    metrics = read_metrics(metrics_path)
    assert sorted(metrics) == ["train", "val"] and sorted(metrics["val"]) == ["accuracy", "ce"]
    iterations, values = metrics["train"]["loss"]
    np.testing.assert_array_equal(iterations, [0, 10, 20])
    np.testing.assert_array_equal(values, [2.5, 2.0, 1.5])
    assert iterations.dtype == np.int64 and values.dtype == np.float64
    np.testing.assert_array_equal(metrics["val"]["accuracy"][1], [0.3, 0.6])


def test_read_metrics_bad_header_names_file_and_headers(tmp_path: Path):
    path = tmp_path / "metrics.csv"
    path.write_text("step,split,metric,value\n0,train,loss,1.0\n")
    with pytest.raises(ValueError) as err:
        read_metrics(path)
    message = str(err.value)
    assert str(path) in message and "'iteration,split,name,value'" in message and "'step,split,metric,value'" in message


# ------------------------------------------------------------------------------------------- figures


@pytest.mark.parametrize("channels", [1, 3, 2])
def test_glimpse_figures(tmp_path: Path, channels: int):
    record_path = save_glimpse_record(tmp_path / "r.npz", **record_kwargs(channels=channels))
    assert_png(plot_glimpse_heatmaps(record_path, tmp_path / "figs" / "heat.png"))
    assert_png(plot_glimpse_examples(record_path, tmp_path / "figs" / "examples.png", max_images=3, ncols=2))


def test_glimpse_figures_accept_a_record_without_images(tmp_path: Path, record_path: Path):
    rec = load_glimpse_record(record_path)
    rec.images = None
    assert isinstance(rec, GlimpseRecord)
    assert_png(plot_glimpse_heatmaps(rec, tmp_path / "heat.png", title="custom title"))
    with pytest.raises(ValueError, match="no images"):
        plot_glimpse_examples(rec, tmp_path / "examples.png")


def test_examples_without_images_names_the_file(tmp_path: Path):
    kwargs = record_kwargs()
    del kwargs["images"]
    path = save_glimpse_record(tmp_path / "no_images.npz", **kwargs)
    with pytest.raises(ValueError, match="no_images.npz.*no images"):
        plot_glimpse_examples(path, tmp_path / "examples.png")


def test_curve_figures(tmp_path: Path, metrics_path: Path):
    assert_png(plot_training_summary(metrics_path, tmp_path / "summary.png"))
    assert_png(plot_curves(metrics_path, tmp_path / "one.png"))
    other = read_metrics(metrics_path)
    other["val"]["accuracy"] = (other["val"]["accuracy"][0], other["val"]["accuracy"][1] * 0.5)
    assert_png(plot_curves({"REINFORCE": metrics_path, "partial supervision": other}, tmp_path / "two.png",
                           metric="ce"))
    with pytest.raises(ValueError, match="run 'b'.*'val' metric 'top5'"):
        plot_curves({"b": metrics_path}, tmp_path / "bad.png", metric="top5")


def test_training_summary_without_validation(tmp_path: Path):
    path = tmp_path / "metrics.csv"
    path.write_text("iteration,split,name,value\n0,train,ce,2.0\n5,train,ce,1.0\n")
    assert_png(plot_training_summary(path, tmp_path / "summary.png"))


RESULTS = [
    {"label": "per-sample loop, batch 32", "batch_size": 32, "ms_per_batch": 40.0},
    {"label": "batched gather, batch 32", "batch_size": 32, "ms_per_batch": 0.5},
    {"label": "batched gather, batch 128", "batch_size": 128, "ms_per_batch": 2.0},
    {"label": "per-sample loop, batch 128", "batch_size": 128, "ms_per_batch": 160.0},
]


def test_speedup_reference_is_the_loop_of_the_same_batch_size():
    assert speedup_over_reference(RESULTS) == [None, 80.0, 80.0, None]
    no_loop = [{"label": "a", "batch_size": 1, "ms_per_batch": 3.0},
               {"label": "b", "batch_size": 1, "ms_per_batch": 6.0}]
    assert speedup_over_reference(no_loop) == [2.0, None]  # the slowest is the reference


def test_speedup_figure(tmp_path: Path):
    assert_png(plot_speedup(RESULTS[:2], tmp_path / "list.png"))
    json_path = tmp_path / "retina.json"
    json_path.write_text(json.dumps({"meta": {"setting": "60x60 images"}, "results": RESULTS}))
    assert_png(plot_speedup(json_path, tmp_path / "json.png"))
    with pytest.raises(ValueError, match="lacks \\['ms_per_batch'\\]"):
        plot_speedup([{"label": "x", "batch_size": 1}], tmp_path / "bad.png")


def test_accuracy_vs_figure(tmp_path: Path):
    lines = {"RAM": ([1, 2, 3], [0.3, 0.5, 0.6]), "near-optimal": ([1, 2, 3], [0.4, 0.6, 0.7])}
    assert_png(plot_accuracy_vs(lines, tmp_path / "acc.png", xlabel="glimpses"))
    with pytest.raises(ValueError, match="'RAM' has 2 x values and 1 y values"):
        plot_accuracy_vs({"RAM": ([1, 2], [0.5])}, tmp_path / "bad.png", xlabel="glimpses")


def test_figures_leave_no_pyplot_state(tmp_path: Path, record_path: Path):
    import matplotlib.pyplot as plt

    before = plt.get_backend()
    plot_glimpse_heatmaps(record_path, tmp_path / "heat.png")
    assert plt.get_fignums() == [] and plt.get_backend() == before


# ------------------------------------------------------------------------------- what a figure says


@pytest.fixture
def drawn(monkeypatch):
    """Keeps every figure the plot functions make (drawn, not cleared) in a list, for reading its artists."""
    from foveal.evaluation import boed_plots, glimpse_plots, plots
    from foveal.recipes.compare import plots as compare_plots

    figures = []

    def keep(fig, path):
        fig.canvas.draw()
        figures.append(fig)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=plots._DPI, format="png")
        return path

    for module in (plots, glimpse_plots, compare_plots, boed_plots):
        monkeypatch.setattr(module, "save_figure", keep)
    return figures


def texts(fig) -> list:
    from matplotlib.text import Text

    return [t for t in fig.findobj(Text) if t.get_text()]


def glimpse_labels(fig) -> list:
    """The glimpse number labels: texts with a coloured box, in the image panels."""
    return [t for t in texts(fig) if t.get_bbox_patch() is not None]


def one_image_record(locations, size: int = 28, glimpse: int = 8) -> GlimpseRecord:
    locations = np.asarray(locations, np.float32)[None]  # [1, T, 2]
    return GlimpseRecord(locations=locations, labels=np.zeros(1, np.int64), predictions=np.zeros(1, np.int64),
                         image_size=(size, size), glimpse_size=glimpse, num_scales=2, factor=2,
                         images=np.random.default_rng(0).random((1, 1, size, size)).astype(np.float32))


def test_examples_label_a_revisited_box_with_every_step(tmp_path: Path, drawn):
    # Glimpses 2 and 5 (and 3, 4, 6, clamped to one corner) look at the same boxes, as on a grid model.
    locs = [(0, 0), (0.5, 0.5), (-1, -1), (-1, -1), (0.5, 0.5), (-1, -1)]
    plot_glimpse_examples(one_image_record(locs), tmp_path / "examples.png")
    labels = sorted(t.get_text() for t in glimpse_labels(drawn[-1]))
    assert labels == ["1", "2,5", "3,4,6"]
    assert "2,5" in drawn[-1]._suptitle.get_text() or "3,4,6" in drawn[-1]._suptitle.get_text()


def test_example_labels_never_cover_each_other(tmp_path: Path, drawn):
    # Six different boxes a pixel or two apart in one corner: their labels must be moved apart.
    locs = [(-1, -1), (-0.93, -0.93), (-0.86, -1), (-1, -0.86), (-0.8, -0.8), (-0.9, -1)]
    plot_glimpse_examples(one_image_record(locs), tmp_path / "examples.png")
    fig = drawn[-1]
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_bbox_patch().get_window_extent(renderer) for t in glimpse_labels(fig)]
    assert len(boxes) == 6
    for i in range(len(boxes)):
        for j in range(i):
            a, b = boxes[i], boxes[j]
            overlap_x = min(a.x1, b.x1) - max(a.x0, b.x0)
            overlap_y = min(a.y1, b.y1) - max(a.y0, b.y0)
            assert min(overlap_x, overlap_y) <= 1.0, (i, j, a, b)  # at most a pixel of anti-aliasing


def test_example_boxes_and_labels_scale_with_the_image(tmp_path: Path, drawn):
    from matplotlib.patches import Rectangle

    locs = [(0, 0), (0.5, -0.5)]
    sizes = {}
    for size in (28, 224):
        plot_glimpse_examples(one_image_record(locs, size=size), tmp_path / f"examples{size}.png")
        fig = drawn[-1]
        solid = [p for p in fig.findobj(Rectangle) if p.get_linestyle() == "-" and not p.get_fill()]
        sizes[size] = (max(t.get_fontsize() for t in glimpse_labels(fig)), max(p.get_linewidth() for p in solid))
    assert sizes[28][0] > sizes[224][0] and sizes[28][1] > sizes[224][1]
    # An 8 px glimpse on a 224 px image is a few points wide: a thin line and the smallest label.
    assert sizes[224] == (5.0, 0.5)


def test_heatmap_counts_agree_and_the_outline_is_explained(tmp_path: Path, drawn):
    rec = GlimpseRecord(**record_kwargs())  # 6 images' locations, the first 4 images kept
    rec.images[:, :, 4:12, 6:14] += 3.0  # a clear shape in the mean image, so its outline is drawn
    rec.images = np.clip(rec.images, 0, 1)
    plot_glimpse_heatmaps(rec, tmp_path / "heat.png")
    fig = drawn[-1]
    words = [t.get_text() for t in texts(fig)]
    assert "(6 images," in fig._suptitle.get_text()
    assert any("first\n4 of the 6 images" in w for w in words)
    assert not any(w.startswith("mean of 4 images") for w in words)
    caption = fig._supxlabel.get_text()
    assert "of the 6 images" in caption and "White line: outline of the mean image" in caption


def test_training_summary_plots_what_training_is_judged_by(tmp_path: Path, drawn):
    rows = ["iteration,split,name,value"]
    for it in range(0, 100, 10):  # a REINFORCE run: the surrogate rises from -1.5 to 0 and must not be drawn
        rows += [f"{it},train,{n},{v}" for n, v in (("loss", -1.5 + it / 70), ("ce", 2 - it / 60), ("accuracy", it / 120),
                                                   ("reinforce", -1.5 + it / 66), ("baseline_mse", 0.3 - it / 400),
                                                   ("entropy", -18.9))]
    rows += ["100,val,accuracy,0.8", "100,val,ce,0.6"]  # one validation point
    path = tmp_path / "metrics.csv"
    path.write_text("\n".join(rows) + "\n")
    plot_training_summary(path, tmp_path / "summary.png")
    fig = drawn[-1]
    labels = [ln.get_label() for ax in fig.axes for ln in ax.get_lines()]
    assert {"train", "validation", "train cross-entropy", "train baseline MSE (R - b)\u00b2",
            "validation cross-entropy"} <= set(labels)
    assert not any("reinforce" in lab or lab == "train loss" for lab in labels)
    assert "reinforce (the REINFORCE surrogate" in fig._supxlabel.get_text()
    single = [ln for ax in fig.axes for ln in ax.get_lines() if len(ln.get_xdata()) == 1]
    assert len(single) == 2  # validation accuracy and cross-entropy, one point each
    for line in single:
        assert line.get_marker() not in (None, "None", "", " ") and line.get_markersize() >= 6
    assert {"80", "0.6"} <= {t.get_text() for t in texts(fig)}  # the lone points carry their values


def test_method_curves_show_a_single_validation_point(tmp_path: Path, drawn):
    from foveal.recipes.compare.plots import plot_method_curves

    plot_method_curves({"RAM": [(np.array([100]), np.array([0.5]))]}, tmp_path / "c.png", ylabel="accuracy")
    (line,) = drawn[-1].axes[0].get_lines()
    assert line.get_marker() not in (None, "None", "", " ") and line.get_markersize() >= 6


def test_epe_figure_marks_a_revisited_cell_and_explains_its_rows(tmp_path: Path, drawn):
    from foveal.evaluation.boed_plots import plot_epe_sequence
    from foveal.retina import LocationGrid
    from foveal.sequences import GlimpseSequences

    grid = LocationGrid.from_stride((16, 16), 4, 4)
    cells = torch.tensor([[5, 10, 5]])  # the third glimpse looks at the first one's cell again
    seqs = GlimpseSequences("mnist5k", "val", (16, 16), 4, torch.tensor([7]), grid.corners()[cells], grid=grid,
                            method="nogs", epe_maps=torch.rand(1, 3, 4, 4))
    plot_epe_sequence(seqs, np.random.default_rng(0).random((1, 16, 16)), tmp_path / "fig2.png")
    words = [t.get_text() for t in texts(drawn[-1])]
    assert "t = 3\n(again the cell of t = 1)" in words and "t = 2" in words
    assert "red \u00d7 and box: the cell looked at at t" in drawn[-1]._supxlabel.get_text()


def test_heatmaps_by_method_give_each_row_its_colour_scale_and_counts(tmp_path: Path, drawn):
    from foveal.recipes.compare.plots import plot_heatmaps_by_method

    records = {"RAM": GlimpseRecord(**record_kwargs()), "PS-NOGS": GlimpseRecord(**record_kwargs())}
    plot_heatmaps_by_method(records, tmp_path / "h.png")
    fig = drawn[-1]
    T = records["RAM"].num_glimpses
    assert len(fig.axes) == 2 * (T + 1) + 2  # the panels and one colour bar per row
    assert "(6 test images)" in fig._suptitle.get_text()
    assert "mean of first 4" in [t.get_text() for t in texts(fig)]  # 4 images kept of the 6
    assert "each row on its own scale" in fig._supxlabel.get_text()


def test_training_summary_draws_the_total_loss_only_when_it_is_the_only_loss(tmp_path: Path, drawn):
    path = tmp_path / "metrics.csv"  # Saccader's location stage: loss == location_nll, one row each
    path.write_text("iteration,split,name,value\n20,train,loss,56.0\n20,train,location_nll,56.0\n20,train,l2,0.0\n"
                    "20,val,accuracy,0.1\n20,val,ce,2.3\n20,val,glimpse_ce,2.4\n")
    plot_training_summary(path, tmp_path / "a.png")
    labels = [ln.get_label() for ax in drawn[-1].axes for ln in ax.get_lines()]
    assert "train location NLL" in labels and "train loss" not in labels  # one would hide the other
    assert "validation glimpse_ce" in drawn[-1]._supxlabel.get_text()
    path.write_text("iteration,split,name,value\n0,train,loss,2.0\n5,train,loss,1.0\n")
    plot_training_summary(path, tmp_path / "b.png")
    assert [ln.get_label() for ln in drawn[-1].axes[1].get_lines()] == ["train loss"]


def test_heatmap_draws_no_outline_of_objects_at_random_places(tmp_path: Path, drawn):
    from matplotlib.contour import ContourSet

    rec = GlimpseRecord(**record_kwargs())
    rng = np.random.default_rng(1)
    rec.images = np.zeros((4, 1, 16, 20), np.float32)
    for image in rec.images:  # one bright square per image, each somewhere else (translated digits, say)
        r, c = rng.integers(0, 12), rng.integers(0, 16)
        image[:, r:r + 4, c:c + 4] = 1.0
    plot_glimpse_heatmaps(rec, tmp_path / "heat.png")
    fig = drawn[-1]
    assert not fig.findobj(ContourSet) and "White line" not in fig._supxlabel.get_text()


def test_iterations_per_seed_give_slots_only_to_methods_with_runs(tmp_path: Path, drawn):
    from foveal.recipes.compare.plots import plot_iterations_per_seed

    iterations = {"RAM": {0: 30, 1: 20}, "WSRAM": {0: None, 1: None}, "PS-RAM": {}, "PS-NOGS": {0: 30, 1: 20}}
    plot_iterations_per_seed(iterations, tmp_path / "it.png", criterion="CE within 0.01 of its best")
    ax = drawn[-1].axes[0]
    xs = sorted(float(x) for c in ax.collections for x, _ in c.get_offsets())
    assert xs == pytest.approx([-0.15, 0.15, 0.85, 1.15])  # two slots per seed, centred on it
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["RAM (mean 25)", "PS-NOGS (mean 25)"]


def test_posterior_curves_do_not_blow_up_a_flat_curve(tmp_path: Path, drawn):
    from foveal.evaluation.boed_plots import plot_posterior_curves

    entropy = [1.0945 + 5e-5 * t for t in range(7)]  # flat to 0.0003 nats: drawn as a steep rise before
    plot_posterior_curves({"curves": {"random": {"accuracy": [1 / 3] * 7, "entropy": entropy}}}, tmp_path / "c.png")
    ent_ax = drawn[-1].axes[1]
    lo, hi = ent_ax.get_ylim()
    assert hi - lo >= 0.049 and ent_ax.yaxis.get_offset_text().get_text() == ""
