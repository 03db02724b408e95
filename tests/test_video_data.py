"""The procedural clips the toy video models learn (toy/video_data.py): a pure function of (seed,
index), each clip its class's procedural pattern moving."""

import torch

from l2c_bench.models.zoo import TOY_FRAMES
from l2c_bench.toy.data import IMAGE_SIZE, NUM_CLASSES, _mask_draws, _masks, _render
from l2c_bench.toy.video_data import FRAMES, make_clip_batch, make_clips


def test_clips_are_a_pure_function_of_seed_and_index():
    a, labels = make_clip_batch(3, 7, 8)
    b, same = make_clip_batch(3, 7, 8)
    assert torch.equal(a, b) and torch.equal(labels, same)
    assert a.shape == (8, 3, FRAMES, IMAGE_SIZE, IMAGE_SIZE) and a.min() >= -1 and a.max() <= 1
    assert not torch.equal(a, make_clip_batch(3, 8, 8)[0]) and not torch.equal(a, make_clip_batch(4, 7, 8)[0])
    assert torch.equal(make_clips(labels[:3], 5), make_clips(labels[:3], 5)) and FRAMES == TOY_FRAMES
    assert make_clips(torch.arange(NUM_CLASSES), 0, frames=5).shape[2] == 5
    pooled = make_clips(labels[:3], 5, size=8)  # LTX-Video's: the 32 x 32 frames average-pooled 4x
    assert torch.allclose(pooled, make_clips(labels[:3], 5).unflatten(3, (8, 4)).unflatten(5, (8, 4)).mean((4, 6)), atol=1e-6)


def test_every_class_moves_more_than_its_pixel_noise():
    labels = torch.arange(NUM_CLASSES).repeat(4)
    clips = make_clips(labels, seed=1)
    change = clips.diff(dim=2).abs().flatten(1).mean(1).view(4, NUM_CLASSES).mean(0)  # per class
    noise = 2 * 0.03 * 2 ** 0.5 * (2 / torch.pi) ** 0.5  # E|difference of two frames' noise|, in [-1, 1] units
    assert (change > noise).all(), change  # the pattern itself moves (splits and gradients: by a few columns)
    assert (change[:6] > 1.5 * noise).all(), change  # stripes, checkerboard, rings and the disk: over every edge


def test_a_still_render_is_the_image_sets_pattern():
    """The clips' renderer at zero offset is the image set's own mask (toy/data.py unchanged)."""
    labels = torch.arange(NUM_CLASSES)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert torch.equal(_masks(labels, g1), _render(labels, _mask_draws(NUM_CLASSES, g2)))
