"""Text-to-image runs of model=diffusers: prompt sets as data, a pretrained folder's text encoders
and VAE, CLIP score with local weights, FID/KID against the prompt set's images. On tiny local
folders (t2i_assets.py) read by the same loaders as a downloaded model."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from t2i_assets import clip_folder, pipeline_folder, tiny_vae

from l2c_bench.models.loading import RunConfigError
from l2c_bench.models.zoo import adapter_for
from l2c_bench.models.zoo.prompt_sets import PromptSetError, read_prompt_set
from l2c_bench.models.zoo.text import encode_prompts
from l2c_bench.runs.prepare import describe

pytestmark = pytest.mark.filterwarnings("ignore")
PROMPTS = ["a red cat", "a blue dog on a hill", "snow", "an old boat"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A PixArt pipeline folder, a CLIP folder and a .jsonl prompt set naming 4 reference images."""
    root = tmp_path_factory.mktemp("t2i")
    (root / "images").mkdir()
    lines = []
    for i, text in enumerate(PROMPTS):
        pixels = np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"{i}.png")
        lines.append(json.dumps({"prompt": text, "image": f"images/{i}.png"}))
    (root / "prompts.jsonl").write_text("\n".join(lines) + "\n")
    return {"pixart": pipeline_folder("PixArtTransformer2DModel", root / "pixart"), "clip": clip_folder(root / "clip"),
            "prompts": root / "prompts.jsonl", "root": root}


def test_prompt_sets_are_read_from_txt_jsonl_csv_and_the_shipped_toy_list(tmp_path, assets):
    toy = read_prompt_set("toy")
    assert len(toy) == 16 and all(text and not text.startswith("#") for text in toy.texts) and toy.images is None
    (tmp_path / "p.txt").write_text("# a comment\na red cat\n\nsnow\n")
    assert read_prompt_set(str(tmp_path / "p.txt")).texts == ("a red cat", "snow")
    (tmp_path / "p.csv").write_text("caption,other\na red cat,1\n\"snow, falling\",2\n")
    assert read_prompt_set(str(tmp_path / "p.csv")).texts == ("a red cat", "snow, falling")
    jsonl = read_prompt_set(str(assets["prompts"]))
    assert jsonl.texts == tuple(PROMPTS) and [p.name for p in jsonl.images] == ["0.png", "1.png", "2.png", "3.png"]
    bad = {"p.yaml": "a: b", "empty.txt": "# only a comment\n", "bad.jsonl": "{\"prompt\": \"a\"}\n[1]\n",
           "half.jsonl": "{\"prompt\": \"a\", \"image\": \"x.png\"}\n{\"prompt\": \"b\"}\n",
           "gone.jsonl": "{\"prompt\": \"a\", \"image\": \"x.png\"}\n", "nokey.csv": "text\na\n"}
    messages = {"p.yaml": "unknown format", "empty.txt": "no prompt", "bad.jsonl": "line 2 is not a JSON object",
                "half.jsonl": "1 of 2 prompts name an image", "gone.jsonl": "not found", "nokey.csv": "no `prompt`"}
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(PromptSetError, match=messages[name]):
            read_prompt_set(str(tmp_path / name))
    with pytest.raises(PromptSetError, match="model.prompt_set='missing.txt': no such file"):
        read_prompt_set("missing.txt")


@pytest.mark.parametrize("cls", ["PixArtTransformer2DModel", "SD3Transformer2DModel", "FluxTransformer2DModel"])
def test_a_folders_text_encoders_fill_the_bank_as_its_own_pipeline_encodes(cls, tmp_path, assets):
    """Row i of the bank is the pipeline's encode_prompt of prompt i, row P that of the empty
    prompt; the bank is what the transformer is called with."""
    import diffusers

    folder = assets["pixart"] if cls == "PixArtTransformer2DModel" else pipeline_folder(cls, tmp_path / "pipe")
    bank = encode_prompts(adapter_for(cls), folder, tuple(PROMPTS), tokens=6)
    pipe_cls = {"PixArtTransformer2DModel": diffusers.PixArtAlphaPipeline,
                "SD3Transformer2DModel": diffusers.StableDiffusion3Pipeline,
                "FluxTransformer2DModel": diffusers.FluxPipeline}[cls]
    pipe = pipe_cls.from_pretrained(folder, local_files_only=True)
    for i, text in enumerate([*PROMPTS, ""]):
        if cls == "PixArtTransformer2DModel":
            emb, mask, _, _ = pipe.encode_prompt(text, do_classifier_free_guidance=False, max_sequence_length=6)
            assert torch.equal(bank.mask[i], mask[0])
        elif cls == "SD3Transformer2DModel":
            emb, _, pooled, _ = pipe.encode_prompt(text, None, None, do_classifier_free_guidance=False,
                                                   max_sequence_length=6)
        else:
            emb, pooled, _ = pipe.encode_prompt(text, None, max_sequence_length=6)
        assert torch.allclose(bank.embeddings[i], emb[0], atol=1e-6)
        if cls != "PixArtTransformer2DModel":
            assert torch.allclose(bank.pooled[i], pooled[0], atol=1e-6)
    assert (bank.embeddings[0] - bank.embeddings[1]).abs().max() > 1e-3  # the words reach the encoding
    if cls == "PixArtTransformer2DModel":
        assert bank.mask[len(PROMPTS)].sum() < bank.mask[1].sum()  # the empty prompt pads more tokens
    # a folder without one of the class's encoders: an error naming the key and the subfolder
    import shutil

    copy = shutil.copytree(folder, tmp_path / "copy")
    shutil.rmtree(copy / "text_encoder")
    from l2c_bench.models.zoo.text import TextEncoderMissing

    with pytest.raises(TextEncoderMissing, match=r"model.pretrained=.*its text_encoder/ is missing"):
        encode_prompts(adapter_for(cls), copy, tuple(PROMPTS))


def test_clip_score_is_torchmetrics_clip_score_on_the_same_local_model(assets):
    """Our per-sample scores average to torchmetrics' CLIPScore (same model, images, texts)."""
    from torchmetrics.multimodal.clip_score import CLIPScore
    from transformers import CLIPModel, CLIPProcessor

    from l2c_bench.metrics.clip import ClipScorer, to_uint8

    class Projected(CLIPModel):  # torchmetrics 1.9 reads tensors where transformers 5 returns outputs
        def get_image_features(self, *args, **kwargs):
            return super().get_image_features(*args, **kwargs).pooler_output

        def get_text_features(self, *args, **kwargs):
            return super().get_text_features(*args, **kwargs).pooler_output

    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    texts = [*PROMPTS, "a cat", "boat"]
    scorer = ClipScorer(assets["clip"])
    scores = scorer.scores(images, texts, batch_size=4)
    assert scores.shape == (6,) and (scores > 0).all() and (scores <= 100).all()  # where both clamps agree
    folder = str(assets["clip"])
    metric = CLIPScore(model_name_or_path=lambda: (Projected.from_pretrained(folder),
                                                   CLIPProcessor.from_pretrained(folder)))
    metric.update(to_uint8(images[:5]), texts[:5])
    metric.update(to_uint8(images[5:]), texts[5:])
    assert abs(float(metric.compute()) - scores.mean()) < 1e-4
    # a caption longer than the context keeps its end token (truncation), so it scores as its first
    # 16 tokens do; torchmetrics slices the end token off instead (docstring of metrics/clip.py)
    ids = scorer.inputs(images[:2], ["a long caption " * 8, "snow"])["input_ids"]
    assert ids.shape[1] == 77 and ids[0, -1] == scorer.processor.tokenizer.eos_token_id


def test_a_text_to_image_run_scores_clip_and_fid_against_the_prompt_sets_images(tmp_path, assets):
    """PixArt from a pipeline folder: prompts through its T5, latents through its VAE; the row's
    CLIP score is each sample's image against its own prompt, FID/KID are against the prompt
    set's images, every number has its interval."""
    from test_run import config

    from l2c_bench import generate
    from l2c_bench.metrics.clip import ClipScorer
    from l2c_bench.models.loading import load_model
    from l2c_bench.run import run_point

    overrides = ["tracker=none", "model=diffusers", "model.diffusers_class=PixArtTransformer2DModel",
                 "model.checkpoint=pretrained", f"model.pretrained={assets['pixart']}", "model.vae=pretrained",
                 f"model.prompt_set={assets['prompts']}", "+model.zoo.text_tokens=8", "cache=fora", "steps=4"]
    cfg = config(tmp_path, *overrides, f"metrics.clip_model={assets['clip']}")
    row = run_point(cfg)
    assert row["status"] == "ok", row.get("error")
    m = {k.removeprefix("metrics."): v for k, v in row.items() if k.startswith("metrics.")}
    assert m["reference"].startswith("prompt set: ") and m["reference"].endswith("(4 images)")
    for key in ("clip_score", "fid", "kid", "paired_image_psnr_db"):
        assert m[f"{key}_ci_low"] <= m[key] <= m[f"{key}_ci_high"], key
    assert m["clip_model"] == "clip-clip" and "on_class_rate" not in m  # prompts are not classes
    assert m["prompt_set"] == f"{assets['prompts']} (4 prompts)"
    # the score is each image against its own prompt: recompute it from the same seeds and labels
    model, vae = load_model(describe(cfg).model, torch.device("cpu"))
    labels = torch.arange(4) % model.num_classes
    assert model.prompt_texts == tuple(PROMPTS)
    result = generate(model, labels=labels, seeds=[cfg.seed + i for i in range(4)], steps=4, sampler="ddim",
                      guidance_scale=cfg.model.guidance_scale, guidance_channels=cfg.model.guidance_channels,
                      vae=vae, decode=True)
    assert result.images.shape == (4, 3, 32, 32)  # the folder's VAE doubles the 16-px latents
    uncached = ClipScorer(assets["clip"]).scores(result.images.float(), list(PROMPTS))
    assert uncached.mean() > 0
    baseline = run_point(config(tmp_path, *overrides, f"metrics.clip_model={assets['clip']}", "cache=none"))
    assert abs(baseline["metrics.clip_score"] - uncached.mean()) < 1e-6
    assert baseline["run_id"] != row["run_id"]


def test_text_to_image_settings_that_cannot_work_fail_before_compute(tmp_path, assets):
    from test_run import config

    from l2c_bench.runs.prepare import validate

    # random weights: the trained toy weights fix their 10 class prompts (tests/test_zoo_toy_weights.py)
    t2i = ["model=diffusers", "model.diffusers_class=PixArtTransformer2DModel", "model.checkpoint=random"]
    cases = [
        ([*t2i, "metrics.clip_model=/no/clip"], "metrics.clip_model='/no/clip': no CLIP there"),
        ([*t2i, f"metrics.clip_model={assets['clip']}"], "set model.prompt_set"),
        ([*t2i, f"metrics.clip_model={assets['clip']}", "model.prompt_set=toy"], "need a VAE"),
        (["model.vae=pretrained"], "it is for model=diffusers"),
        (["model.prompt_set=toy"], "DiT-toy is class-conditioned"),
        ([*t2i, "model.vae=pretrained"], "model.vae=pretrained needs model.vae_checkpoint"),
        ([*t2i, "model.vae=pretrained", f"model.vae_checkpoint={assets['root']}"], r"no VAE at '.*t2i.*'; it reads"),
        ([*t2i, "model.prompt_set=/no/prompts.txt"], "model.prompt_set='/no/prompts.txt': no such file"),
        (["model=diffusers", "model.prompt_set=toy"], "DiTTransformer2DModel is class-conditioned"),
    ]
    for overrides, message in cases:
        with pytest.raises(RunConfigError, match=message):
            validate(config(tmp_path, *overrides))
    from l2c_bench.models.loading import build_configured

    with pytest.raises(RunConfigError, match="DiTTransformer2DModel is class-conditioned"):
        build_configured(describe(config(tmp_path, "model=diffusers", "model.prompt_set=toy")).model)
    # the toy bank takes the shipped set's size: 16 prompts, and the null row after them
    model = build_configured(describe(config(tmp_path, *t2i, "model.prompt_set=toy")).model, device="meta")
    assert model.num_classes == model.null_class == 16


def test_a_diffusers_vae_decodes_with_its_own_scaling_and_shift():
    from l2c_bench.models.vae import decode_latents

    torch.manual_seed(0)
    vae = tiny_vae(4, shift_factor=0.25, scaling_factor=1.5)
    z = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        assert torch.equal(decode_latents(vae, z), vae.decode(z / 1.5 + 0.25).sample)
        plain = tiny_vae(4)  # no shift: z / 0.18215, as the SD VAE always decoded
        assert torch.equal(decode_latents(plain, z), plain.decode(z / 0.18215).sample)
