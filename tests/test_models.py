"""The networks E, G (both kinds, the warp generator's mouth painter too), D at the tiny preset (configs:
test_config.py)."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from animate_cli.config import ModelConfig, preset
from animate_cli.errors import AnimateError
from animate_cli.face.draw import landmark_tensor
from animate_cli.face.regions import FACE_OUTLINE
from animate_cli import losses
from animate_cli.losses import mouth_crop
from animate_cli.models.blocks import SelfAttention, adain
from animate_cli.models.discriminator import Discriminator, MouthCritic
from animate_cli.models.embedder import Embedder
from animate_cli.models.generator import FSTHGenerator, WarpGenerator, build_generator, extend_with_painter
from animate_cli.models.painter import (eye_crops, eye_paint_usage, eye_stretch, eye_thetas, mouth_theta, paint_usage,
                                       paste_crop, polygon_mask, tinted_colours)
from animate_cli.models.stats import count_params_and_gflops
from animate_cli.train.episodes import mirror, reference_warp, to_model_tensor
from animate_cli.train.photo_episodes import PhotoEpisodeSettings, make_shot
from synthetic_faces import face, face_landmarks

TINY = preset("tiny")


pytestmark = pytest.mark.usefixtures("one_thread")
# the space-to-depth stem used by the "small" preset, at test size
TINY_STEM = TINY.replace(shuffle_stem=True, g_down=2, attn_embed_res=8, attn_down_res=8, attn_up_res=16)


def _inputs(cfg, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = cfg.resolution
    return [torch.rand(b, 3, r, r, generator=g) * 2 - 1 for _ in range(3)]


def test_adain_sets_per_sample_channel_statistics():
    x = torch.randn(2, 4, 8, 8) * 5 + 3
    scale, bias = torch.randn(2, 4), torch.randn(2, 4)
    out = adain(x, scale, bias)
    assert torch.allclose(out.mean(dim=(2, 3)), bias, atol=1e-4)
    assert torch.allclose(out.std(dim=(2, 3), unbiased=False), (1 + scale).abs(), atol=1e-3)


def test_self_attention_starts_as_identity_and_then_mixes():
    attn = SelfAttention(16)
    x = torch.randn(1, 16, 8, 8)
    assert torch.equal(attn(x), x)
    with torch.no_grad():
        attn.gamma.fill_(1.0)
    assert not torch.allclose(attn(x), x)


@pytest.mark.parametrize("cfg", [TINY, TINY_STEM], ids=["plain", "stem"])
@pytest.mark.parametrize("kind", ["fsth", "warp"])
def test_shapes(cfg, kind):
    cfg = cfg.replace(generator=kind)
    x, y, w = _inputs(cfg)
    # eval: in train mode spectral norm's power iteration moves u on every call
    E, G, D = Embedder(cfg).eval(), build_generator(cfg).eval(), Discriminator(cfg, n_videos=5).eval()
    assert isinstance(G, FSTHGenerator if kind == "fsth" else WarpGenerator)
    e = E(x, y)
    assert e.shape == (2, cfg.embed_dim) and (e >= 0).all()  # ReLU + sum pooling
    shots = E.embed_shots(torch.stack([x, w], 1), torch.stack([y, y], 1))
    assert shots.shape == (2, cfg.embed_dim)
    assert torch.allclose(shots[0], (E(x[:1], y[:1]) + E(w[:1], y[:1]))[0] / 2, atol=1e-5)
    psi = G.project(e)
    assert psi.shape == (2, G.n_adain)
    out = G(y, e_hat=e, warped=w)
    assert out.shape == (2, 3, cfg.resolution, cfg.resolution)
    assert out.min() >= -1 and out.max() <= 1
    score, feats = D(out, y, video_idx=torch.tensor([0, 4]))
    assert score.shape == (2,)
    assert len(feats) == cfg.n_embed_down + 1
    assert feats[-1].shape == (2, cfg.embed_dim, 4, 4)


def test_warp_generator_requires_one_warped_reference():
    G = build_generator(TINY)
    _, y, w = _inputs(TINY)
    with pytest.raises(ValueError, match="warped"):
        G(y, e_hat=torch.zeros(2, TINY.embed_dim))
    with pytest.raises(ValueError, match="one warped reference"):  # several blended references are gone
        G(y, e_hat=torch.zeros(2, TINY.embed_dim), warped=torch.cat([w, w], 1))
    assert not any(n.startswith(("mouth.", "skip.")) for n in G.state_dict())


def _wake_warp_head(G):
    """A trained warp generator's correction head is not zero; give an untrained one random weights."""
    if isinstance(G, WarpGenerator):
        with torch.no_grad():
            G.head.weight.normal_(0, 0.05)


@pytest.mark.parametrize("kind", ["fsth", "warp"])
def test_gradients_reach_every_parameter(kind):
    torch.manual_seed(0)
    cfg = TINY.replace(generator=kind)
    E, G, D = Embedder(cfg), build_generator(cfg), Discriminator(cfg, n_videos=3)
    for m in list(E.modules()) + list(G.modules()) + list(D.modules()):
        if isinstance(m, SelfAttention):  # gamma = 0 would block the gradient to q, k, v
            with torch.no_grad():
                m.gamma.fill_(0.5)
    _wake_warp_head(G)  # likewise its zero-initialised correction head
    x, y, w = _inputs(cfg)
    e = E(x, y)
    out = G(y, e_hat=e, warped=w)
    score, feats = D(out, y, video_idx=torch.tensor([1, 1]))
    (score.sum() + sum(f.mean() for f in feats)).backward()
    for net_name, net in [("E", E), ("G", G), ("D", D)]:
        for name, p in net.named_parameters():
            if name == "W":
                assert p.grad[1].abs().sum() > 0 and p.grad[[0, 2]].abs().sum() == 0
                continue
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{net_name}.{name} gets no gradient"


@pytest.mark.parametrize("kind", ["fsth", "warp"])
def test_embedding_drives_the_output_through_adain(kind):
    torch.manual_seed(0)
    cfg = TINY.replace(generator=kind)
    G = build_generator(cfg).eval()
    _wake_warp_head(G)
    x, y, w = _inputs(cfg, b=1)
    e1, e2 = torch.rand(1, cfg.embed_dim) * 4, torch.rand(1, cfg.embed_dim) * 4
    with torch.no_grad():
        o1, o2 = G(y, e_hat=e1, warped=w), G(y, e_hat=e2, warped=w)
        assert (o1 - o2).abs().max() > 1e-3
        # psi given (fine-tuned person) is the same path as psi = P·ê
        assert torch.equal(G(y, psi=G.project(e1), warped=w), o1)
        # one psi vector broadcasts over a batch of frames
        yb, wb = y.expand(3, -1, -1, -1), w.expand(3, -1, -1, -1)
        ob = G(yb, psi=G.project(e1)[0], warped=wb)
        assert torch.allclose(ob[2:], o1, atol=1e-5)


def test_untrained_warp_generator_returns_exactly_the_warped_reference_and_learns_a_correction():
    torch.manual_seed(0)
    G = build_generator(TINY)
    x, y, w = _inputs(TINY)
    e = torch.rand(2, TINY.embed_dim)
    assert torch.equal(G(y, e_hat=e, warped=w), w)
    # the zero head still passes gradient: one step towards x moves the output off the plain warp
    opt = torch.optim.Adam(G.parameters(), lr=1e-4)
    loss = (G(y, e_hat=e, warped=w) - x).abs().mean()
    loss.backward()
    assert G.head.weight.grad.abs().sum() > 0
    opt.step()
    with torch.no_grad():
        after = G(y, e_hat=e, warped=w)
    assert (after - w).abs().mean() > 1e-4
    assert (after - x).abs().mean() < loss


def test_discriminator_projection():
    torch.manual_seed(0)
    D = Discriminator(TINY, n_videos=4).eval()
    x, y, _ = _inputs(TINY, b=1)
    with torch.no_grad():
        s0, _ = D(x, y, video_idx=torch.tensor([0]))
        s1, _ = D(x, y, video_idx=torch.tensor([1]))
        assert not torch.allclose(s0, s1)
        # w replaces the whole (W[i] + w0): r = V·w + b
        sw, _ = D(x, y, w=D.W[1] + D.w0)
        assert torch.allclose(sw, s1, atol=1e-5)
        D.b.fill_(2.0)
        sb, _ = D(x, y, video_idx=torch.tensor([1]))
        assert torch.allclose(sb, s1 + 2.0, atol=1e-5)
    e_new = torch.rand(1, TINY.embed_dim)
    assert torch.allclose(D.new_person_w(e_new), D.w0 + e_new[0])
    assert D.count_params(with_video_columns=False) == D.count_params() - 4 * TINY.embed_dim


def test_paper_preset_parameter_counts():
    cfg = preset("paper", "fsth")
    E, G, D = Embedder(cfg), build_generator(cfg), Discriminator(cfg, n_videos=0)
    n_e = sum(p.numel() for p in E.parameters())
    n_g = sum(p.numel() for p in G.parameters())
    n_d = D.count_params(with_video_columns=False)
    for n, target in [(n_e, 15e6), (n_g, 38e6), (n_d, 20e6)]:
        assert 0.8 * target <= n <= 1.2 * target, (n, target)


def test_count_params_and_gflops():
    stats = count_params_and_gflops(TINY)
    G = build_generator(TINY)
    assert stats["generator_params"] == sum(p.numel() for p in G.parameters())
    assert stats["n_adain"] == G.n_adain
    # the first down block's first conv alone: 6->8 channels, 3x3, at 64x64
    assert stats["generator_gflops"] > 2 * 64 * 64 * 8 * 6 * 9 / 1e9
    assert stats["generator_gflops"] < 1.0


# ----------------------------------------------------------------------------------------------
# The mouth painter (cfg.paint_size): at the small preset's design (space-to-depth stem), test size.

PAINT = TINY_STEM.replace(paint_size=32)


def _mouth_closing_episode(r=64):
    """One photo episode that needs painting: a drawn open-mouthed face (teeth showing) as the target, its
    mouth shut by the photo episodes' warp as the shot, that shot warped back to the target's landmarks."""
    image, lm = face(r, mouth_gap=0.35)
    shot, shot_lm = make_shot(image, lm, "mouth", np.random.default_rng(0),
                              PhotoEpisodeSettings(closing_pose=0.0, sharpen=0.0))
    x_t, x_s = to_model_tensor(image[None]), to_model_tensor(shot[None])
    lm_t, lm_s = torch.from_numpy(lm)[None], torch.from_numpy(shot_lm)[None]
    warped = reference_warp(x_s[:, None], lm_s[:, None], lm_t)
    return x_t, warped, landmark_tensor(lm[None], r), lm_t, lm_s


def _painting_pair(seed=0):
    """The same generator without and with a painter (extend_with_painter)."""
    torch.manual_seed(seed)
    plain = build_generator(PAINT.replace(paint_size=0))
    painting = build_generator(PAINT)
    extend_with_painter(painting, plain)
    return plain, painting


def test_default_weights_keep_their_trunk_and_paint_only_the_mouth():
    """weights/default has a mouth painter on the trunk it had before: without the painter its G computes what
    it computed before the painter existed (golden figures from the code before it, random inputs, seed 0), and
    with it the output changes only in the mouth's box."""
    from animate_cli.models.checkpoint import load_checkpoint

    folder = Path(__file__).resolve().parents[1] / "src" / "animate_cli" / "weights" / "default"
    if not (folder / "config.json").is_file():
        pytest.skip("weights/default not in this checkout")
    cfg, E, G, _ = load_checkpoint(folder)
    assert cfg.paint_size > 0 and G.painter is not None
    assert cfg.eye_paint_size > 0 and G.eye_painter is not None
    trunk = build_generator(cfg.replace(paint_size=0, eye_paint_size=0)).eval()
    trunk.load_state_dict({k: v for k, v in G.state_dict().items() if not k.startswith(("painter.", "eye_painter."))})
    g = torch.Generator().manual_seed(0)
    x, y, w = (torch.rand(2, 3, 256, 256, generator=g) * 2 - 1 for _ in range(3))
    with torch.no_grad():
        plain = trunk(y, e_hat=E(x, y), warped=w)
    d = (plain - w).double()
    assert d.abs().mean().item() == pytest.approx(0.0015948186289464854, abs=1e-8)
    got = [d[1, c, r, q].item() for c, r, q in ((0, 10, 20), (1, 128, 128), (2, 200, 100), (0, 180, 128))]
    assert got == pytest.approx([0.00213873, -0.00137484, -0.00087189, 0.00213873], abs=2e-7)
    lm = torch.from_numpy(face_landmarks(256, mouth_gap=0.3))[None].float().expand(2, -1, -1)
    shut = torch.from_numpy(face_landmarks(256, mouth_gap=0.0))[None].float().expand(2, -1, -1)
    with torch.no_grad():
        painted = G(y, e_hat=E(x, y), warped=w, landmarks=lm, ref_landmarks=shut)
    box = paste_crop(torch.ones(2, 1, cfg.paint_size, cfg.paint_size), mouth_theta(lm, 256), 256) > 0
    assert torch.equal(painted[(~box).expand_as(painted)], plain[(~box).expand_as(plain)])
    assert (painted - plain).abs().amax() > 0.05  # it paints the opening the shut shot cannot give


def test_a_painter_added_to_trained_weights_keeps_their_output_outside_the_mouth_box():
    plain, painting = _painting_pair()
    _wake_warp_head(plain)
    extend_with_painter(painting, plain)  # again, now with a correction that is not zero
    x_t, warped, y, lm_t, lm_s = _mouth_closing_episode()
    e = torch.rand(1, PAINT.embed_dim)
    with torch.no_grad():
        before = plain(y, e_hat=e, warped=warped)
        assert (before - warped).abs().max() > 1e-3
        after = painting(y, e_hat=e, warped=warped, landmarks=lm_t, ref_landmarks=lm_s)
    box = paste_crop(torch.ones(1, 1, PAINT.paint_size, PAINT.paint_size), mouth_theta(lm_t.float(), 64), 64) > 0
    assert torch.equal(after[(~box).expand_as(after)], before[(~box).expand_as(before)])
    open_mouth = polygon_mask(lm_t[:, 60:68].float(), 64) == 1
    assert (after - before).abs().amax(dim=1, keepdim=True)[open_mouth].mean() > 0.05  # its first colours
    with pytest.raises(ValueError, match="landmarks"):
        painting(y, e_hat=e, warped=warped)
    with pytest.raises(ValueError, match="must have every painter"):
        extend_with_painter(plain, painting)


def test_blend_mask_starts_low_only_where_the_warp_has_no_open_mouth():
    _, painting = _painting_pair()
    x_t, warped, y, lm_t, lm_s = _mouth_closing_episode()
    e = torch.rand(1, PAINT.embed_dim)
    usage = {}
    for name, ref in (("closed shot", lm_s), ("shot as open", lm_t)):
        parts = {}
        with torch.no_grad():
            painting(y, e_hat=e, warped=warped, landmarks=lm_t, ref_landmarks=ref, parts=parts)
        usage[name] = paint_usage(parts)
        assert parts["inner"].sum() > 20  # the target's open mouth, in the painter's crop
    assert usage["closed shot"]["paint_share"].item() > 0.8  # the painter owns the mouth the warp cannot give
    assert usage["shot as open"]["paint_share"].item() < 0.1  # and leaves one the shot has to the warp
    assert usage["closed shot"]["paint_size"].item() > 4 * usage["shot as open"]["paint_size"].item()
    closed = torch.from_numpy(face_landmarks(64, mouth_gap=0.0))[None]
    parts = {}
    with torch.no_grad():
        painting(y, e_hat=e, warped=warped, landmarks=closed, ref_landmarks=closed, parts=parts)
    assert torch.isnan(paint_usage(parts)["paint_share"]).all()  # no open mouth: nothing to measure


def test_gradient_reaches_the_painter_on_a_mouth_closing_episode():
    x_t, warped, y, lm_t, lm_s = _mouth_closing_episode()
    e = torch.rand(1, PAINT.embed_dim)
    grads = {}
    for name, ref in (("closed shot", lm_s), ("shot as open", lm_t)):
        _, painting = _painting_pair()
        out = painting(y, e_hat=e, warped=warped, landmarks=lm_t, ref_landmarks=ref)
        (mouth_crop(out, lm_t) - mouth_crop(x_t, lm_t)).abs().mean().backward()
        grads[name] = painting.painter.head.weight.grad.norm().item()
    assert grads["closed shot"] > 0
    assert grads["closed shot"] > 4 * grads["shot as open"]  # its gradient comes from the uncovered mouth


@pytest.mark.slow
def test_painter_learns_an_open_mouth_faster_than_the_trunk_alone():
    """30 steps on one mouth-closing episode, the same trunk, the same optimiser: the painter, at the mouth's
    own resolution, brings the mouth crop much closer to the truth than the trunk's correction alone."""
    x_t, warped, y, lm_t, lm_s = _mouth_closing_episode()
    e = torch.rand(1, PAINT.embed_dim, generator=torch.Generator().manual_seed(2))
    final = {}
    for name, g in zip(("plain", "painting"), _painting_pair()):
        opt = torch.optim.Adam(g.parameters(), lr=3e-4, betas=(0.0, 0.999))
        for _ in range(30):
            out = g(y, e_hat=e, warped=warped, landmarks=lm_t, ref_landmarks=lm_s)
            loss = (mouth_crop(out, lm_t) - mouth_crop(x_t, lm_t)).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        final[name] = loss.item()
    start = (mouth_crop(warped, lm_t) - mouth_crop(x_t, lm_t)).abs().mean().item()
    assert final["plain"] < start
    assert final["painting"] < 0.8 * final["plain"], final


def test_painter_config_is_checked_and_old_configs_have_none():
    assert preset("small").paint_size == 64 and preset("small", "fsth").paint_size == 0
    assert ModelConfig.from_dict({k: v for k, v in TINY.to_dict().items() if k != "paint_size"}).paint_size == 0
    for change, message in (({"generator": "fsth", "paint_size": 32}, "only the warp generator"),
                            ({"paint_size": 30}, "multiple of 4"), ({"paint_size": 128}, "multiple of 4"),
                            ({"paint_size": 8}, "multiple of 4")):
        with pytest.raises(AnimateError, match=message):
            TINY.replace(**change)
    stats = count_params_and_gflops(PAINT)
    assert stats["generator_params"] == sum(p.numel() for p in build_generator(PAINT).parameters())
    assert stats["generator_gflops"] > count_params_and_gflops(PAINT.replace(paint_size=0))["generator_gflops"]


def test_the_painter_sees_and_paints_only_the_face():
    """A wall beside a turned cheek (outside the face's outline) changes nothing the painter paints, and it
    paints nothing there: a painter that read its colour cast from the whole crop painted a mouth by a teal
    wall teal."""
    _, painting = _painting_pair()
    with torch.no_grad():
        painting.painter.head.weight.normal_(0, 0.05)  # a trained painter paints something
    x_t, warped, y, lm_t, lm_s = _mouth_closing_episode()
    r = warped.shape[-1]
    face_mask = polygon_mask(lm_t[:, list(FACE_OUTLINE)].float(), r)
    outside = (face_mask == 0).expand_as(warped)
    walled = warped.clone()
    walled[outside] = torch.tensor([-0.6, 0.4, 0.4]).view(1, 3, 1, 1).expand_as(warped)[outside]
    assert outside[0, 0, r // 2 + 14, :12].all()  # the wall reaches the mouth's side of the crop
    features = torch.rand(1, painting.head.in_channels, r, r, generator=torch.Generator().manual_seed(1))
    painted, frames = [], []
    for image in (warped, walled):
        parts = {}
        with torch.no_grad():
            frames.append(painting._paint(image, features, lm_t, lm_s, parts) - image)
        painted.append(parts["painted"])
    assert painted[0].abs().max() > 1e-3
    # only the face's edge, where the crop's pixels blend face and wall, sees the wall at all (4% before the rule)
    assert (painted[0] - painted[1]).abs().max() < 0.01 * painted[0].abs().max()
    near_face = F.max_pool2d(face_mask, 5, stride=1, padding=2) > 0
    assert frames[0][(~near_face).expand_as(warped)].abs().max() < 1e-6


def test_painted_colours_have_the_lips_hue_or_none():
    """Whatever the painter outputs, a painted pixel is the lips' mean colour mixed with white and scaled in
    brightness: never a hue the face does not have (a free painter painted grey-blue and green mouths)."""
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    image[0, :, 4:8] = torch.tensor([0.4, -0.3, -0.4]).view(3, 1, 1)  # red lips
    image[1, :, 4:8] = torch.tensor([-0.2, -0.5, -0.6]).view(3, 1, 1)  # dark brown lips
    lips = torch.zeros(2, 1, 16, 16)
    lips[:, :, 4:8] = 1
    tone, white = torch.rand(2, 1, 16, 16, generator=g) * 2, torch.rand(2, 1, 16, 16, generator=g)
    c = (tinted_colours(image, lips, tone, white) + 1) / 2
    lip = (image[:, :, 4:5, 0:1] + 1) / 2  # (2,3,1,1)
    # c = tone·((1 − white)·lip + white): its channels' differences are tone·(1 − white) × the lips'
    unclipped = (c > 0) & (c < 1)
    keep = unclipped.all(dim=1, keepdim=True)
    ratio = (c[:, 0:1] - c[:, 1:2]) / (lip[:, 0:1] - lip[:, 1:2])
    ratio2 = (c[:, 1:2] - c[:, 2:3]) / (lip[:, 1:2] - lip[:, 2:3])
    assert keep.sum() > 100
    assert torch.allclose(ratio[keep], ratio2[keep], atol=1e-4)
    assert torch.allclose(ratio[keep], (tone * (1 - white))[keep], atol=1e-4)
    assert torch.allclose(tinted_colours(image, lips, torch.ones_like(tone), torch.ones_like(white)), torch.ones(2, 3, 16, 16))


def test_the_mouth_critic_learns_to_tell_a_blurred_opening_from_a_sharp_one():
    """MouthCritic (the painter's adversary): a hundred hinge updates separate crops whose opening is blurred
    (what the mouth term alone paints) from the same crops left sharp."""
    torch.manual_seed(0)
    critic = MouthCritic(ch=16)
    opt = torch.optim.Adam(critic.parameters(), 1e-3, betas=(0.0, 0.999))
    mask = torch.zeros(8, 1, 32, 32)
    mask[:, :, 12:20, 8:24] = 1

    def scores():
        sharp = torch.rand(8, 3, 32, 32) * 2 - 1
        blurred = sharp * (1 - mask) + F.avg_pool2d(sharp, 5, 1, 2) * mask
        s = critic(torch.cat([torch.cat([sharp, mask], 1), torch.cat([blurred, mask], 1)])).flatten(1).mean(1)
        return s[:8], s[8:]

    for _ in range(100):
        loss = losses.d_hinge_loss(*scores())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        real, fake = scores()
    assert real.min() > fake.max()


# ----------------------------------------------------------------------------------------------
# The eye painter.

EYES = PAINT.replace(eye_paint_size=16)


def _eye_closing_episode(r=64):
    """A drawn open-eyed face as the target, its eyes shut by the photo episodes' warp as the shot, that shot
    warped back to the target's landmarks (what a shut-eyed portrait gives when the driver opens its eyes)."""
    image, lm = face(r, mouth_gap=0.0, eye_gap=0.12)
    shot, shot_lm = make_shot(image, lm, "eyes", np.random.default_rng(0),
                              PhotoEpisodeSettings(closing_pose=0.0, sharpen=0.0))
    x_s = to_model_tensor(shot[None])
    lm_t, lm_s = torch.from_numpy(lm)[None], torch.from_numpy(shot_lm)[None]
    warped = reference_warp(x_s[:, None], lm_s[:, None], lm_t)
    return warped, landmark_tensor(lm[None], r), lm_t, lm_s


def test_both_eyes_are_cropped_as_a_right_eye():
    """eye_crops: the face's left eye comes mirrored, so it looks like the mirrored face's right eye."""
    image, lm = face(64, eye_gap=0.12)
    image[:, :32] = image[:, :32] // 2  # the two halves differ
    flipped, flm = mirror(image[None], lm[None])
    crops, _ = eye_crops(to_model_tensor(image[None]), torch.from_numpy(lm)[None], 16)
    mirrored, _ = eye_crops(to_model_tensor(flipped), torch.from_numpy(flm), 16)
    assert (crops[1] - mirrored[0]).abs().mean() < 0.03  # the same eye, the same way round
    assert (crops[1] - crops[0]).abs().mean() > 0.1  # not just any eye: the darkened half is the other


def test_eye_stretch_is_the_share_of_the_opening_the_shot_cannot_fill():
    open_, shut = (torch.from_numpy(face_landmarks(64, eye_gap=g))[None] for g in (0.12, 0.0))
    half = torch.from_numpy(face_landmarks(64, eye_gap=0.06))[None]
    assert eye_stretch(open_, shut)[0].tolist() == pytest.approx([1.0, 1.0])
    assert eye_stretch(open_, open_)[0].tolist() == pytest.approx([0.0, 0.0])
    assert eye_stretch(open_, half)[0].tolist() == pytest.approx([0.5, 0.5], abs=0.02)
    assert eye_stretch(shut, open_)[0].tolist() == pytest.approx([0.0, 0.0])  # a blink: nothing to paint


def test_an_eye_painter_added_paints_only_the_eyes_a_shut_shot_cannot_open():
    """extend_with_painter gives weights with a mouth painter an eye painter: outside the two eye boxes (and the
    mouth painter's, which in a 64 px face reaches them and reads what is painted there) the output is the old
    model's exactly; inside the target's eye openings a shut shot is painted (its share near
    1), a shot as open as the target is left to the warp (share near 0); where both eyes are shut nothing is
    measured; and the gradient of an eye term reaches the eye painter."""
    torch.manual_seed(0)
    old = build_generator(PAINT)
    new = build_generator(EYES)
    extend_with_painter(new, old)
    _wake_warp_head(old)
    extend_with_painter(new, old)
    old.eval(), new.eval()  # (train mode moves spectral norm's power iteration on every call)
    warped, y, lm_t, lm_s = _eye_closing_episode()
    e = torch.rand(1, PAINT.embed_dim)
    with torch.no_grad():
        before = old(y, e_hat=e, warped=warped, landmarks=lm_t, ref_landmarks=lm_t)
        after = new(y, e_hat=e, warped=warped, landmarks=lm_t, ref_landmarks=lm_t, eye_ref_landmarks=lm_s)
    thetas = eye_thetas(lm_t.float(), 64)
    ones = torch.ones(1, 1, 16, 16)
    boxes = (paste_crop(ones, thetas[:1], 64) + paste_crop(ones, thetas[1:], 64)) > 0
    assert boxes.float().mean() < 0.2
    boxes |= paste_crop(torch.ones(1, 1, 32, 32), mouth_theta(lm_t.float(), 64), 64) > 0
    assert torch.equal(after[(~boxes).expand_as(after)], before[(~boxes).expand_as(before)])
    usage = {}
    a_little_less = torch.from_numpy(face_landmarks(64, mouth_gap=0.0, eye_gap=0.09))[None]  # stretch 0.25
    for name, ref in (("shut shot", lm_s), ("shot as open", lm_t), ("a little less open", a_little_less)):
        parts = {}
        with torch.no_grad():
            new(y, e_hat=e, warped=warped, landmarks=lm_t, ref_landmarks=lm_t, eye_ref_landmarks=ref, parts=parts)
        usage[name] = eye_paint_usage(parts)
    assert usage["a little less open"]["eye_paint_share"].item() == 0  # an eye the spline may stretch
    assert usage["shut shot"]["eye_paint_share"].item() > 0.6  # (the window fades it near the crop's edges)
    assert usage["shot as open"]["eye_paint_share"].item() == 0  # gated: eyes as open as the shot's stay the trunk's
    with torch.no_grad():
        same_eyes = new(y, e_hat=e, warped=warped, landmarks=lm_t, ref_landmarks=lm_t)
    assert torch.equal(same_eyes, before)
    # without `parts` only the frames whose eyes open past the gate are painted: the same frames, for less
    lm_b, ref_b = torch.cat([lm_t, lm_t]), torch.cat([lm_s, lm_t])  # a shut shot, then one as open
    with torch.no_grad():
        both = new(y.expand(2, -1, -1, -1), e_hat=e.expand(2, -1), warped=warped.expand(2, -1, -1, -1),
                   landmarks=lm_b, ref_landmarks=lm_b, eye_ref_landmarks=ref_b)
        asked = new(y.expand(2, -1, -1, -1), e_hat=e.expand(2, -1), warped=warped.expand(2, -1, -1, -1),
                    landmarks=lm_b, ref_landmarks=lm_b, eye_ref_landmarks=ref_b, parts={})
    assert torch.allclose(both, asked, atol=1e-6) and torch.allclose(both[1], before[0], atol=1e-6)
    assert (both[0] - before[0]).abs().max() > 0.05  # the shut shot's frame is painted
    shut = torch.from_numpy(face_landmarks(64, eye_gap=0.0))[None]
    parts = {}
    with torch.no_grad():
        new(y, e_hat=e, warped=warped, landmarks=shut, ref_landmarks=shut, parts=parts)
    assert torch.isnan(eye_paint_usage(parts)["eye_paint_share"]).all()
    x_t = to_model_tensor(face(64, mouth_gap=0.0, eye_gap=0.12)[0][None])
    out = new(y, e_hat=e, warped=warped, landmarks=lm_t, ref_landmarks=lm_t, eye_ref_landmarks=lm_s)
    F.l1_loss(eye_crops(out, lm_t.float(), 16)[0], eye_crops(x_t, lm_t.float(), 16)[0]).backward()
    assert new.eye_painter.head.weight.grad.abs().sum() > 0


def test_eye_paint_size_is_checked():
    with pytest.raises(AnimateError, match="eye_paint_size"):
        TINY.replace(eye_paint_size=10)
    with pytest.raises(AnimateError, match="eye_paint_size"):
        TINY.replace(generator="fsth", eye_paint_size=16)
    assert preset("small", "fsth").eye_paint_size == 0 and preset("small").eye_paint_size > 0
