"""The shared figures of examples/scaffold/plots.py."""

import matplotlib.pyplot as plt
import pytest
import torch

from scaffold import plots


@pytest.fixture
def drawn(monkeypatch):
    """The figure ``save_figure`` would write, left open for the test to look at."""
    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.append(fig))
    yield figures
    for fig in figures:
        plt.close(fig)


def labels_and_images(fig) -> list[tuple[str, int]]:
    """Per row of axes: the row label and the number of images shown."""
    grid = fig.axes[0].get_subplotspec().get_gridspec()
    rows, columns = grid.get_geometry()
    axes = [fig.axes[r * columns:(r + 1) * columns] for r in range(rows)]
    return [(row[0].get_ylabel(), sum(len(ax.images) for ax in row)) for row in axes]


@pytest.mark.parametrize("count", [1, 2, 5, 9, 10, 11])
def test_rows_shorter_than_the_grid_keep_their_labels(drawn, count):
    # vae.py --num-test 5, completion.py --num-test 2, pixel_vae.py --num-test 3 ended in an
    # IndexError after training: the labels assumed rows of `columns` images each
    rows = [torch.rand(count, 1, 4, 4) for _ in range(5)]
    plots.image_grid(rows, "unused.png", "title", row_labels=list("abcde"))
    assert labels_and_images(drawn[0]) == [(label, count) for label in "abcde"]


def test_a_flat_tensor_with_a_partial_last_row_or_too_many_labels(drawn):
    plots.image_grid(torch.rand(7, 3, 4, 4), "unused.png", columns=3, row_labels=list("abcd"))
    assert labels_and_images(drawn[0]) == [("a", 3), ("b", 3), ("c", 1)]
    plots.image_grid(torch.rand(2, 1, 4, 4), "unused.png", row_labels=["x", "y"])
    assert labels_and_images(drawn[1]) == [("x", 2)]


def test_no_images_still_make_a_figure(drawn):
    plots.image_grid(torch.rand(0, 1, 4, 4), "unused.png")
    plots.image_grid([torch.rand(0, 1, 4, 4), torch.rand(2, 1, 4, 4)], "unused.png",
                     row_labels=["none", "two"])
    assert labels_and_images(drawn[1]) == [("none", 0), ("two", 2)]


def test_the_figure_is_written(tmp_path):
    plots.image_grid([torch.rand(3, 1, 4, 4), torch.rand(1, 1, 4, 4)], tmp_path / "g.png",
                     row_labels=["three", "one"])
    assert (tmp_path / "g.png").stat().st_size > 0


def test_figures_of_tensors_raise_no_warnings(drawn, tmp_path):
    # matplotlib's conversion of a torch tensor warns under NumPy 2 ("__array__
    # implementation doesn't accept a copy keyword"): under `python -W error` vae.py
    # trained, then died at its first figure without writing metrics.json.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plots.image_grid([torch.rand(3, 1, 4, 4), torch.rand(3, 1, 4, 4)], tmp_path / "a.png",
                         row_labels=["a", "b"])
    assert labels_and_images(drawn[0]) == [("a", 3), ("b", 3)]


def test_a_figure_that_cannot_be_written_warns_and_keeps_the_old_file(tmp_path, monkeypatch):
    # a full disk ended the run in PIL's raw traceback after all the work, with a 0-byte PNG
    # (an earlier run's figure truncated) and no metrics.json
    import errno
    import warnings

    import matplotlib.figure

    path = tmp_path / "a.png"
    path.write_bytes(b"an earlier run's figure")

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full_disk)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plots.save_figure(plt.figure(), path)
    assert any("could not write the figure" in str(w.message) for w in caught)
    assert path.read_bytes() == b"an earlier run's figure"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]  # no temporary file left
