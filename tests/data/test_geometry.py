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
