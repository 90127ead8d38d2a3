import pytest
import torch

from must.data.geometry import Geometry


def test_identity_keeps_everything() -> None:
    image = torch.randint(0, 255, (3, 16, 20), dtype=torch.uint8)
    geometry = Geometry.identity((16, 20))
    assert torch.equal(geometry.warp_image(image), image)
    boxes = torch.tensor([[1.0, 2.0, 10.0, 12.0]])
    out, keep = geometry.warp_boxes(boxes)
    assert torch.equal(out, boxes) and keep.all()


def test_flip_maps_boxes_like_the_mask() -> None:
    mask = torch.zeros(16, 16, dtype=torch.long)
    mask[4:8, 2:6] = 1
    geometry = Geometry((16, 16), (16, 16), (0, 0), (16, 16), flip=True)
    warped = geometry.warp_dense(mask)
    ys, xs = torch.nonzero(warped, as_tuple=True)
    box, keep = geometry.warp_boxes(torch.tensor([[2.0, 4.0, 6.0, 8.0]]))
    assert keep.all()
    assert box[0].tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def test_scale_and_crop_keep_boxes_aligned_with_masks() -> None:
    generator = torch.Generator().manual_seed(3)
    mask = torch.zeros(32, 32, dtype=torch.long)
    mask[8:24, 10:20] = 7
    boxes = torch.tensor([[10.0, 8.0, 20.0, 24.0]])
    for _ in range(20):
        geometry = Geometry.random((32, 32), 32, generator)
        warped = geometry.warp_dense(mask, fill=255)
        out, keep = geometry.warp_boxes(boxes)
        ys, xs = torch.nonzero(warped == 7, as_tuple=True)
        if len(xs) == 0:
            continue
        expected = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float)
        assert torch.allclose(out[0], expected, atol=1.01), (geometry, out, expected)


def test_random_scale_stays_in_range_and_is_seeded() -> None:
    sizes = []
    for seed in range(50):
        geometry = Geometry.random((64, 48), 64, torch.Generator().manual_seed(seed))
        sizes.append(max(geometry.resized_size))
        assert geometry.output_size == (64, 64)
    assert min(sizes) >= 32 and max(sizes) <= 128 and len(set(sizes)) > 10
    first = Geometry.random((64, 48), 64, torch.Generator().manual_seed(1))
    assert first == Geometry.random((64, 48), 64, torch.Generator().manual_seed(1))


def test_padding_uses_fill() -> None:
    geometry = Geometry((10, 10), (5, 5), (-2, -3), (10, 10))
    depth = torch.ones(10, 10)
    warped = geometry.warp_dense(depth, fill=0.0)
    assert warped.sum() == 25 and warped[0, 0] == 0 and warped[2, 3] == 1


def _rectangle(height: int, width: int, box: tuple[int, int, int, int], value: int = 7) -> torch.Tensor:
    """``int64 [H, W]`` zeros with ``value`` inside the xyxy ``box``."""
    mask = torch.zeros(height, width, dtype=torch.long)
    left, top, right, bottom = box
    mask[top:bottom, left:right] = value
    return mask


def test_fit_keeps_the_aspect_ratio_and_pads_bottom_and_right() -> None:
    geometry = Geometry.fit((40, 80), (32, 32))
    assert geometry.resized_size == (16, 32) and geometry.offset == (0, 0)
    assert geometry.content() == (0, 0, 16, 32)
    assert Geometry.fit((80, 40), (32, 32)).resized_size == (32, 16)
    assert Geometry.fit((30, 50), (24, 40)).resized_size == (24, 40)  # same aspect: fills the window
    assert Geometry.fit((60, 60), (24, 40)).resized_size == (24, 24)


def test_fit_on_a_square_image_is_the_plain_resize() -> None:
    for source, output in (((64, 64), (64, 64)), ((64, 64), (48, 48)), ((28, 28), (32, 32))):
        assert Geometry.fit(source, output) == Geometry.resize_to(source, output)


def test_unwarp_inverts_warp_for_every_window_that_holds_the_image() -> None:
    mask = _rectangle(24, 40, (8, 4, 24, 16))
    boxes = torch.tensor([[8.0, 4.0, 24.0, 16.0], [0.0, 0.0, 40.0, 24.0]])
    generator = torch.Generator().manual_seed(0)
    geometries = [Geometry.fit((24, 40), (80, 80)), Geometry.fit((24, 40), (12, 12))]
    geometries += [Geometry.random((24, 40), 64, generator, (0.5, 0.9)) for _ in range(10)]
    assert any(g.flip for g in geometries) and any(min(g.offset) < 0 for g in geometries)
    for geometry in geometries:
        warped, keep = geometry.warp_boxes(boxes)
        assert keep.all()
        torch.testing.assert_close(geometry.unwarp_boxes(warped), boxes, atol=1e-4, rtol=0)
        region = geometry.unwarp_dense(geometry.warp_dense(mask, fill=255))
        assert tuple(region.shape) == geometry.resized_size and not (region == 255).any(), geometry
    exact = geometries[0]  # twice the size: nearest-neighbour upsampling is undone exactly
    assert exact.resized_size == (48, 80)
    assert torch.equal(exact.unwarp_dense(exact.warp_dense(mask, fill=255))[::2, ::2], mask)


def test_unwarp_reads_maps_at_a_proportional_resolution_and_clips_boxes() -> None:
    geometry = Geometry.fit((40, 80), (32, 32))  # content: rows 0..16 of 32
    quarter = torch.arange(64.0).reshape(8, 8)  # a stride-4 map over the 32x32 window
    assert torch.equal(geometry.unwarp_dense(quarter), quarter[:4])
    box_into_padding = torch.tensor([[4.0, 4.0, 8.0, 30.0]])
    assert geometry.unwarp_boxes(box_into_padding).tolist() == [[10.0, 10.0, 20.0, 40.0]]


def test_unwarp_refuses_a_window_that_cuts_the_image() -> None:
    cut = Geometry((32, 32), (64, 64), (8, 8), (32, 32))
    with pytest.raises(ValueError, match="cuts the image"):
        cut.unwarp_boxes(torch.zeros(1, 4))
