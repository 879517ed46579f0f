"""Weiszfeld's geometric median: known answers, robust to outliers where the mean is not."""

from __future__ import annotations

import pytest
import torch

from featurewatch.training.geometric_median import geometric_median


def test_median_of_collinear_points_is_the_middle_one() -> None:
    points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]])
    assert torch.allclose(geometric_median(points), torch.tensor([1.0, 0.0]), atol=1e-3)


def test_median_of_a_square_is_its_centre_and_keeps_the_dtype() -> None:
    points = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    median = geometric_median(points)
    assert median.dtype == torch.float32
    assert torch.allclose(median, torch.tensor([1.0, 1.0]), atol=1e-5)


def test_a_few_far_outliers_drag_the_mean_but_not_the_median() -> None:
    gen = torch.Generator().manual_seed(0)
    centre = torch.tensor([3.0, -2.0, 1.0, 0.5])
    inliers = centre + 0.1 * torch.randn(500, 4, generator=gen)
    points = torch.cat([inliers, torch.full((25, 4), 1000.0)])
    assert torch.linalg.vector_norm(points.mean(0) - centre) > 40
    assert torch.linalg.vector_norm(geometric_median(points) - centre) < 0.05


def test_median_minimises_the_sum_of_distances() -> None:
    gen = torch.Generator().manual_seed(1)
    points = torch.randn(200, 8, generator=gen).double() ** 3
    median = geometric_median(points)

    def cost(y):
        return torch.linalg.vector_norm(points - y, dim=1).sum()

    for _ in range(20):
        assert cost(median) <= cost(median + 0.01 * torch.randn(8, generator=gen).double())


def test_empty_input_is_refused() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        geometric_median(torch.zeros(0, 3))
