"""Tiny local text-to-image assets for the tests, built the way diffusers' own tests build theirs
(a few layers, small widths, random seeded weights) and saved as on-disk folders, so the loaders
under test read them exactly as they read a downloaded model: tokenizers, text encoders, VAE,
transformer, pipeline index, and a CLIP for CLIP score. Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import torch

LETTERS = [chr(c) for c in range(97, 123)]


def clip_tokenizer(max_length: int = 16):
    """CLIP's BPE with one token per letter (and its word-final form), no merges."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in LETTERS:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def t5_tokenizer():
    """T5's unigram tokenizer over the letters."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)] + [(c, -2.0) for c in LETTERS]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def clip_text(hidden: int, projection: int | None = None):
    """A CLIP text encoder (with a projection head if `projection`), hidden states `hidden` wide."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(vocab_size=60, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                            num_attention_heads=2, max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
                            pad_token_id=1, projection_dim=projection or hidden)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def t5_encoder(width: int):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=40, d_model=width, d_kv=8, d_ff=2 * width, num_layers=2, num_heads=2,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    return T5EncoderModel(config).eval()


def tiny_vae(latent_channels: int = 4, **config):
    """An AutoencoderKL that doubles the side (latent 16 -> image 32)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent_channels,
                         block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         **config).eval()


def pipeline_folder(cls: str, root: Path, seed: int = 0) -> Path:
    """`root` as a diffusers pipeline folder for `cls` in its toy configuration (model_index.json
    and one subfolder per component)."""
    import diffusers

    from l2c_bench.models.zoo import TOY_CONFIGS

    torch.manual_seed(seed)
    transformer = getattr(diffusers, cls)(**TOY_CONFIGS[cls]).eval()
    if cls == "PixArtTransformer2DModel":
        pipe = diffusers.PixArtAlphaPipeline(tokenizer=t5_tokenizer(), text_encoder=t5_encoder(32), vae=tiny_vae(),
                                             transformer=transformer, scheduler=diffusers.DDIMScheduler())
    elif cls == "SD3Transformer2DModel":
        pipe = diffusers.StableDiffusion3Pipeline(
            transformer=transformer, scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0),
            vae=tiny_vae(shift_factor=0.1, scaling_factor=1.5), text_encoder=clip_text(16, 32),
            tokenizer=clip_tokenizer(), text_encoder_2=clip_text(16, 32), tokenizer_2=clip_tokenizer(),
            text_encoder_3=t5_encoder(32), tokenizer_3=t5_tokenizer())
    elif cls == "FluxTransformer2DModel":
        pipe = diffusers.FluxPipeline(
            scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0), vae=tiny_vae(4, shift_factor=0.1),
            text_encoder=clip_text(32), tokenizer=clip_tokenizer(), text_encoder_2=t5_encoder(32),
            tokenizer_2=t5_tokenizer(), transformer=transformer)
    else:
        raise ValueError(cls)
    pipe.save_pretrained(root)
    return root


def clip_folder(root: Path, seed: int = 4) -> Path:
    """A CLIPModel with its processor (32-px images), saved as a local CLIP folder (seed 4: random
    weights whose cosines are mostly positive, so the scores are not all clamped to 0)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(seed)
    text = dict(vocab_size=60, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(root)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=clip_tokenizer(77)).save_pretrained(root)
    return root
