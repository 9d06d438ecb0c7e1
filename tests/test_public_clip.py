"""Public remote-sensing CLIP models as baselines (issue 41 item 4), tested on locally written
checkpoints in the published formats: RemoteCLIP's plain open_clip state dict and SkyCLIP's
open_clip training checkpoint (``state_dict`` with ``module.`` prefixes). Offline and absent,
the error names the file, where to get it and where to put it."""

import numpy as np
import pytest
import torch

from geofm_lib import encoders, errors
from geofm_lib.encoders import public_clip


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A RemoteCLIP-RN50-format file (random weights of open_clip's RN50, seed 0) in a weights
    folder laid out as the docs say, and the same weights as a training checkpoint."""
    import open_clip

    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    model = open_clip.create_model("RN50", pretrained=None)
    plain = folder / "remoteclip" / "RemoteCLIP-RN50.pt"
    plain.parent.mkdir()
    torch.save(model.state_dict(), plain)
    trainer = folder / "epoch_20.pt"
    torch.save({"epoch": 20, "state_dict": {f"module.{k}": v for k, v in
                                            model.state_dict().items()}}, trainer)
    return folder, plain, trainer, model.eval()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from geofm_lib.config import load_config
    from geofm_lib.data import build

    cfg = load_config("ci", group="B", work_dir=str(tmp_path_factory.mktemp("public-run")),
                      model="ViT-tiny", precision="fp32")
    build.build_shards(cfg, show_progress=False)
    return cfg


def test_offline_without_the_file_the_error_says_what_to_download_and_where(tmp_path,
                                                                            monkeypatch):
    monkeypatch.setenv("GEOFM_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name, url in (("remoteclip:ViT-B-32", "huggingface.co/chendelong/RemoteCLIP"),
                      ("georsclip:ViT-B-32", "huggingface.co/Zilun/GeoRSCLIP"),
                      ("skyclip:ViT-B-32", "github.com/wangzhecheng/SkyScript")):
        with pytest.raises(errors.PretrainedUnavailable) as err:
            public_clip.weights_file(name)
        text = str(err.value)
        key, arch = name.split(":")
        assert url in text and str(tmp_path / key) in text
        assert public_clip.PUBLIC[key].archs[arch] in text
    with pytest.raises(errors.EncoderError, match="published for RN50, ViT-B-32, ViT-L-14"):
        encoders.check_encoder_name("remoteclip:ViT-H-14")
    with pytest.raises(errors.EncoderError, match="no such checkpoint file"):
        encoders.check_encoder_name(f"skyclip:ViT-B-32:{tmp_path / 'nope.pt'}")


def test_the_published_formats_load_with_their_own_preprocessing(weights, run, monkeypatch):
    """From the weights folder and from a named training checkpoint: the same model, and its
    features are those of the plain open_clip model on the image scaled to [0, 1], resized to
    224 px (bicubic) and normalised with OpenAI's mean and std."""
    import open_clip

    from geofm_lib.data import shards
    from geofm_lib.evaluation.retrieval import encode_images
    from geofm_lib.models.inputs import to_model_input
    from geofm_lib.paths import build_folder

    folder, plain, trainer, reference = weights
    monkeypatch.setenv("GEOFM_WEIGHTS", str(folder))
    model, stats = encoders.load_encoder(run, "remoteclip:RN50")
    again, _ = encoders.load_encoder(run, f"remoteclip:RN50:{trainer}")
    sample = next(iter(shards.iter_shards(shards.shard_paths(build_folder(run), "val",
                                                             "agriculture_vision"))))
    x = to_model_input(sample["img"], sample["json"]["bands"], stats["agriculture_vision"])
    assert stats["agriculture_vision"].std.tolist() == [255.0] * 3  # an 8-bit camera
    f1, f2 = encode_images(model, [x])[0], encode_images(again, [x])[0]
    np.testing.assert_allclose(f1, f2, atol=1e-6)
    rgb = torch.from_numpy(sample["img"][:3].astype(np.float32) / 255)[None]
    big = torch.nn.functional.interpolate(rgb, size=(224, 224), mode="bicubic",
                                          align_corners=False, antialias=True).clamp(0, 1)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        want = torch.nn.functional.normalize(reference.encode_image((big - mean) / std), dim=-1)
    np.testing.assert_allclose(f1, want[0].numpy(), atol=1e-5)
    # 06's frozen-encoder path: the same model through the embedding cache
    emb = encoders.embed(run, "remoteclip:RN50", "val", show_progress=False)
    assert emb.features.shape[1] == 1024 and np.isfinite(emb.features).all()
    tok = encoders.tokenizer_for(run, "remoteclip:RN50")
    assert tok(["an overhead image of water"]).shape[-1] == 77


def test_04_scores_them_beside_ours_on_the_same_images_and_chance(weights, run, monkeypatch):
    from geofm_lib import records
    from geofm_lib.studies import retrieval as study

    folder, _, _, _ = weights
    monkeypatch.setenv("GEOFM_WEIGHTS", str(folder))
    s = study.settings(run, {"n_boot": 50, "public_models": ["remoteclip:RN50"]})
    with pytest.raises(errors.ConfigError, match="not a public remote-sensing CLIP model"):
        study.settings(run, {"public_models": ["init"]})
    scored = study.score(run, s)
    public = study.beside_public(run, s, scored)
    table = public.table(scored)
    assert {"R@1 ours", "R@1 remoteclip:RN50", "95 % CI remoteclip:RN50", "chance R@1"} <= \
        set(table.columns)
    for ds, r in scored.results.items():  # the same images: the same chance level
        assert public.results["remoteclip:RN50"][ds].chance[1] == pytest.approx(r.chance[1])
        assert table.loc[ds, "chance R@1"] == round(r.chance[1], 1)
    init = study.at_init(run, scored)
    rec = study.record(run, scored, init, study.quality(scored, init), "x", public)
    back = records.ZeroShotRecord.from_dict(rec.to_dict())
    assert set(back.public_models) == {"remoteclip:RN50"}
    assert "mean_R@1" in back.public_models["remoteclip:RN50"]
    assert isinstance(study.Public({}).table(scored), str)  # none asked: said, not a table


def test_fine_tuning_trains_the_tower_behind_its_preprocessing(weights, run, monkeypatch):
    """06's fine-tuning takes an encoder's ``visual``: for a public model it must see the
    same 224 px normalised input as the frozen embeddings (the bare RN50 tower failed at the
    run's 32 px)."""
    folder, _, _, _ = weights
    monkeypatch.setenv("GEOFM_WEIGHTS", str(folder))
    model, _ = encoders.load_encoder(run, "remoteclip:RN50")
    x = torch.rand(2, 3, run.image_px, run.image_px)
    with torch.no_grad():
        assert torch.allclose(model.visual(x), model.encode_image(x))
        assert model.visual(x).shape == (2, 1024)
