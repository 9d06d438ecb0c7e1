"""The GPU path. With ``device: auto`` (every preset's default) the other tests already train on
CUDA where there is a GPU; these check what only a GPU can show: that ``auto`` picks it with bf16,
and that CUDA at bf16 autocast computes what the CPU at fp32 does (CLIP loss, segmentation
logits and masks, each SSL method's loss on the same batch and weights). Skipped without a CUDA
GPU (CI has none): run ``pytest tests/test_gpu.py tests/test_training.py tests/test_ssl_methods.py``
on a GPU machine."""

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")

from geofm_lib.config import load_config  # noqa: E402
from geofm_lib.models import devices  # noqa: E402

BANDS = ["B02", "B03", "B04", "B08", "B11", "B12", "VV", "VH"]


def test_auto_trains_on_the_gpu_in_bf16():
    cfg = load_config("ci")
    device = devices.resolve_device(cfg.device)
    assert device == "cuda"
    assert devices.resolve_precision(cfg.precision, device) == "bf16"


def test_clip_loss_on_cuda_bf16_matches_cpu_fp32():
    open_clip = pytest.importorskip("open_clip")
    from geofm_lib.models import factory

    model, tok = factory.create_model("RN50-tiny", 64, seed=0)
    model.eval()
    g = torch.Generator().manual_seed(0)
    images = torch.randn(16, 3, 64, 64, generator=g)
    texts = tok([f"an overhead image of place {i}" for i in range(16)])
    loss_fn = open_clip.ClipLoss()

    def loss(m, device, precision):
        with torch.no_grad(), devices.autocast(device, precision):
            out = m.to(device)(images.to(device), texts.to(device))
            return float(loss_fn(out["image_features"].float(), out["text_features"].float(),
                                 out["logit_scale"].float()))

    cpu = loss(model, "cpu", "fp32")  # first: the model then moves to the GPU
    gpu = loss(model, "cuda", "bf16")
    assert gpu == pytest.approx(cpu, rel=0.02), (cpu, gpu)


@pytest.mark.parametrize("decoder,backbone", [("unet", "resnet18"),
                                              ("deeplabv3plus", "resnet18"),
                                              ("upconv", "vit_tiny_patch16")])
def test_segmenter_on_cuda_bf16_predicts_what_cpu_fp32_does(decoder, backbone):
    pytest.importorskip("segmentation_models_pytorch")
    from geofm_lib.evaluation import segmenter

    net = segmenter.build_segmenter(decoder, backbone, BANDS, 3, image_px=64).eval()
    x = torch.randn(8, len(BANDS), 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        cpu = net(x)  # first: the model then moves to the GPU
        with devices.autocast("cuda", "bf16"):
            gpu = net.to("cuda")(x.to("cuda")).float().cpu()
    assert cpu.shape == gpu.shape == (8, 3, 64, 64)
    # bf16 keeps 8 bits of mantissa: through a random ViT-Ti's 12 blocks the small logits of
    # an untrained head are off by about a tenth (0.098 of their mean size in CPU bf16
    # autocast; the ResNets 0.01-0.02)
    err = (gpu - cpu).abs().mean()
    assert err < 0.15 * cpu.abs().mean(), (float(err), float(cpu.abs().mean()))
    if backbone.startswith("resnet"):
        # the masks agree wherever the CPU's top class leads by well more than the rounding
        # (a random ViT's classes are near ties everywhere: its masks are noise either way)
        top2 = cpu.topk(2, dim=1).values
        clear = (top2[:, 0] - top2[:, 1]) > 4 * err
        assert clear.float().mean() > 0.2
        assert (cpu.argmax(1) == gpu.argmax(1))[clear].float().mean() > 0.99
    masks = segmenter.predict_masks(net, x.numpy(), "cuda", "bf16")
    assert masks.shape == (8, 64, 64) and set(masks.ravel().tolist()) <= {0, 1, 2}


def test_segmenter_trains_on_cuda_and_the_frozen_encoder_stays_as_given():
    pytest.importorskip("segmentation_models_pytorch")
    import numpy as np

    from geofm_lib.evaluation import segmenter

    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, len(BANDS), 32, 32)).astype(np.float32)
    y = (x[:, 2] > 0).astype(np.int64)  # the class is the sign of one band: learnable
    net = segmenter.build_segmenter("unet", "resnet18", BANDS, 2)
    before = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    run = segmenter.fit_segmenter(net, x[:32], y[:32], x[32:], y[32:], ["no", "yes"],
                                  protocol="frozen", epochs=8, batch_size=8, device="cuda",
                                  precision="bf16", n_boot=50)
    after = net.encoder.state_dict()
    assert all(torch.equal(before[k], after[k].cpu()) for k in before)
    assert run.history[-1]["train_loss"] < run.history[0]["train_loss"]
    assert run.final.mean_iou > 0.6, run.final


@pytest.mark.parametrize("method", ["moco", "dino", "mae"])
def test_each_ssl_method_s_loss_on_cuda_bf16_matches_cpu_fp32(method, monkeypatch):
    pytest.importorskip("lightly")
    from lightly.models import utils

    from geofm_lib.ssl.methods import build_module

    draw = utils.random_token_mask

    def same_masks_on_both(size, mask_ratio, device):  # drawn on the CPU, then moved
        torch.manual_seed(3)
        return tuple(t.to(device) for t in draw(size, mask_ratio, device="cpu"))

    monkeypatch.setattr(utils, "random_token_mask", same_masks_on_both)

    kw = {"moco": {}, "dino": {"ssl_backbone": "resnet18", "dino_out_dim": 256,
                               "dino_local_crops": 2},
          "mae": {"ssl_backbone": "vit_tiny_patch16", "mae_decoder_dim": 64,
                  "mae_decoder_depth": 1}}[method]
    cfg = load_config("ci", ssl_method=method, image_px=32, ssl_augment="none", **kw)
    module = build_module(cfg, BANDS).eval()
    x = torch.randn(8, 2 * len(BANDS), 32, 32, generator=torch.Generator().manual_seed(2))

    def loss(m, device, precision):
        m = m.to(device)
        with torch.no_grad(), devices.autocast(device, precision):
            if method == "mae":
                present = m.present(["s2"] * 8).to(device)
                return float(m.reconstruct(x[:, :len(BANDS)].to(device), present)[0])
            q, k = x[:, :len(BANDS)].to(device), x[:, len(BANDS):].to(device)
            if method == "moco":
                a = torch.nn.functional.normalize(m.projection_head(m.backbone(q)).float(), dim=1)
                b = torch.nn.functional.normalize(m.projection_head(m.backbone(k)).float(), dim=1)
                return float((a * b).sum(1).mean())
            teacher = [m.teacher_head(m.teacher_backbone(v)).float() for v in (q, k)]
            student = [m.head(m.backbone(v)).float() for v in (q, k)]
            return float(m.criterion(teacher, student, epoch=0))

    cpu = loss(module, "cpu", "fp32")  # first: the module then moves to the GPU
    gpu = loss(module, "cuda", "bf16")
    assert gpu == pytest.approx(cpu, rel=0.03, abs=1e-3), (cpu, gpu)


def test_the_step_never_waits_for_the_gpu():
    """Issue 40: no host synchronisation inside the training step on CUDA (bf16 autocast, fused
    AdamW, clipping): torch's sync debug mode turns any synchronising call into an error."""
    open_clip = pytest.importorskip("open_clip")
    from geofm_lib import training
    from geofm_lib.models import factory

    model, tok = factory.create_model("ViT-tiny", 32, device="cuda", seed=0)
    opt = torch.optim.AdamW(training.param_groups(model, 0.1), lr=1e-3, fused=True)
    step = training.Step(model, model, open_clip.ClipLoss(), opt,
                         training.make_scheduler(opt, 10, 0.1),
                         torch.amp.GradScaler("cuda", enabled=False),
                         lambda: devices.autocast("cuda", "bf16"), 1, 1.0, False)
    x = torch.randn(8, 3, 32, 32, device="cuda")
    t = tok([f"scene {i}" for i in range(8)]).cuda()
    step(x, t)  # first call: lazy initialisation (optimiser state) may synchronise
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses = [step(x, t) for _ in range(3)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(torch.isfinite(torch.stack(losses)).tolist())


def test_the_device_feed_on_cuda_prepares_what_the_host_feed_does():
    """Stored-type pixels prepared on the GPU against the host path (elementwise float32 IEEE
    arithmetic and pixel moves: equal up to 1e-6)."""
    import random

    import numpy as np

    from geofm_lib.models import factory, inputs
    from geofm_lib.training import feed, stream

    _, tok = factory.create_model("RN50-tiny", 32)
    bands = ["B02", "B03", "B04", "B08"]
    stats, _ = inputs.input_spec({"s2": {"bands": bands, "mean": [900.0, 1e3, 1.1e3, 2e3],
                                         "std": [300.0, 320.0, 350.0, 700.0],
                                         "nodata": [None, 0, None, None]}})
    rng = np.random.default_rng(0)
    samples = []
    for i in range(8):
        img = rng.integers(0, 4000, (4, 16, 16)).astype(np.uint16)
        img[1, :2] = 0
        samples.append({"img": img, "txt": f"scene {i}",
                        "json": {"dataset": "s2", "bands": bands, "captions": []}})
    table = feed.FeedTable(stats, ["s2"])
    raw = feed.collate_raw(tok)([feed.prepare_raw(s, table, random.Random(i))
                                 for i, s in enumerate(samples)]).pin_memory()
    dev, _ = feed.to_model(raw, table, "cuda", 16, channels_last=False)
    host = stream._collate(tok, 16)([
        (inputs.augment(inputs.to_model_input(s["img"], bands, stats["s2"]), random.Random(i)),
         s["txt"]) for i, s in enumerate(samples)])[0]
    torch.testing.assert_close(dev.cpu(), host, rtol=0, atol=1e-6)
