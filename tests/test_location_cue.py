"""benchmarks/ps-nogs/location_cue.py: the locations-only probe reads a label that the cells encode, and only then."""

import torch


def test_the_probe_reads_a_label_the_second_cell_encodes_and_not_one_it_does_not(benchmark_script):
    cue = benchmark_script("ps-nogs/location_cue.py")
    g = torch.Generator().manual_seed(0)
    n, T, cells, classes = 400, 3, 20, 4
    labels = torch.randint(classes, (n,), generator=g)
    seqs = torch.randint(cells, (n, T), generator=g)
    seqs[:, 0] = 7  # the same first cell everywhere, as the annotator's sequences have
    leaked = seqs.clone()
    leaked[:, 1] = labels * 5 + torch.randint(5, (n,), generator=g)  # five cells per class
    assert cue.probe(leaked, labels, cells).float().mean() > 0.95
    assert cue.probe(seqs, labels, cells).float().mean() < 0.4  # chance is 0.25


def test_imitation_reports_glimpses_after_the_first(benchmark_script):
    cue = benchmark_script("ps-nogs/location_cue.py")
    log_prob = torch.log(torch.tensor([[1e-9, 0.5, 0.5], [1e-9, 0.25, 0.25]]))
    out = cue.imitation(log_prob)
    expected = (torch.log(torch.tensor(2.0)) + torch.log(torch.tensor(4.0))) / 2
    assert abs(out["nll"] - float(expected)) < 1e-3
    assert abs(out["cells"] - float(torch.exp(expected))) < 0.1


def test_the_report_names_the_networks_left_out_for_want_of_a_checkpoint(benchmark_script):
    cue = benchmark_script("ps-nogs/location_cue.py")
    share = {"mean": 50.0, "low": 40.0, "high": 60.0, "n": 10}
    result = {"images": 10, "glimpses": 6, "majority_class": share, "networks": [],
              "probe": {"nogs": {"first_cell_distinct": 1, "all_cells": share, "cells_2_to_T": share}},
              "not_found": ["ps-hindsight seed 1", "ps-hindsight seed 2"]}
    assert "Left out, their best checkpoint not found: ps-hindsight seed 1, ps-hindsight seed 2." in cue.markdown(result)
    assert "Left out" not in cue.markdown({**result, "not_found": []})
