"""The domain presets: the names the pipeline uses, and how transfer differs."""

import pytest

from must.errors import ConfigError
from must.world import CATEGORIES, DOMAINS, SEGMENTATION_CLASSES, STUFF
from must.world.domains import get_domain


def test_the_public_names() -> None:
    assert set(DOMAINS) == {"objects", "clutter", "scenes", "depth", "pool", "transfer"}
    assert STUFF == ("floor", "wall", "sky") and len(CATEGORIES) >= 10
    assert SEGMENTATION_CLASSES == STUFF + CATEGORIES
    with pytest.raises(ConfigError, match="domains: objects"):
        get_domain("imagenet")


def test_transfer_is_shifted_away_from_the_source_domains() -> None:
    source, transfer = DOMAINS["scenes"], DOMAINS["transfer"]
    assert not set(source.floor_textures) & set(transfer.floor_textures)
    assert not set(source.wall_textures) & set(transfer.wall_textures)
    assert transfer.fov_degrees != source.fov_degrees
    assert transfer.sun_elevation[1] < source.sun_elevation[1]


def test_the_pool_mixes_the_teacher_domains_with_one_camera() -> None:
    parts = [get_domain("pool", index) for index in range(8)]
    assert [p.name for p in parts[:4]] == ["objects", "clutter", "scenes", "depth"] and parts[4] == parts[0]
    assert len({p.fov_degrees for p in parts}) == 1
