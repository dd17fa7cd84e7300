"""The mouth refiner: crop/paste geometry, a generator that repaints only the mouth, its own trainer."""

import pytest
import torch

from animate_cli.config import ModelConfig, preset
from animate_cli.errors import AnimateError
from animate_cli.models.checkpoint import load_checkpoint, save_checkpoint
from animate_cli.models.discriminator import Discriminator
from animate_cli.models.embedder import Embedder
from animate_cli.models.generator import build_generator
from animate_cli.models.mouth import MouthRefiner, feather, mouth_crop, mouth_paste
from animate_cli.train import mouth as mouth_train
from test_episodes import make_cache
from test_losses import _lips

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = preset("tiny", "warp").replace(resolution=32)


def _wake(refiner: MouthRefiner) -> MouthRefiner:
    torch.manual_seed(1)
    with torch.no_grad():
        refiner.head.weight.normal_(0, 0.1)
        refiner.head.bias.fill_(0.2)
    return refiner


def test_paste_puts_a_crop_back_where_it_came_from():
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    img = torch.stack([torch.sin(xx / 3), torch.cos(yy / 4), torch.sin((xx + yy) / 5)])[None]  # smooth, uneven
    lips = _lips()
    back = mouth_paste(mouth_crop(img, lips), lips, 64, 64)
    inside = back[:, :, 41:47, 27:37]  # middle of the lips: the window is 1 there
    assert torch.allclose(inside, img[:, :, 41:47, 27:37], atol=0.03)
    shifted = mouth_paste(mouth_crop(img, lips), _lips(cx=34.0), 64, 64)[:, :, 41:47, 29:39]
    assert not torch.allclose(shifted, img[:, :, 41:47, 29:39], atol=0.1)  # it lands where the landmarks say
    assert back[:, :, :20].abs().max() == 0  # the forehead is untouched
    w = feather(64, "cpu")
    assert w[0, 0, 32, 32] == 1 and w[0, 0, 0].abs().max() == 0 and w[0, 0, :, 0].abs().max() == 0


def test_refiner_starts_as_nothing_and_only_ever_touches_the_mouth():
    torch.manual_seed(0)
    img, y = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    lips = _lips().expand(2, -1, -1)
    r = MouthRefiner(8)
    assert r(img, y, lips).abs().max() == 0  # zero head: an untrained refiner changes nothing
    delta = _wake(r)(img, y, lips)
    assert delta[:, :, 40:48, 24:40].abs().mean() > 0.05
    assert delta[:, :, :25].abs().max() == 0 and delta[:, :, :, :12].abs().max() == 0
    moved = r(torch.roll(img, (-20, 5), (2, 3)), torch.roll(y, (-20, 5), (2, 3)), _lips(cx=37.0, cy=24.0).expand(2, -1, -1))
    assert torch.allclose(torch.roll(moved, (20, -5), (2, 3))[:, :, 36:52, 20:44], delta[:, :, 36:52, 20:44], atol=1e-4)


def test_generator_with_a_refiner_needs_landmarks_and_adds_to_the_trunk():
    cfg = preset("tiny", "warp").replace(mouth_refiner=8)
    torch.manual_seed(0)
    G = build_generator(cfg).eval()
    x, y = torch.rand(1, 3, 64, 64) * 2 - 1, torch.rand(1, 3, 64, 64) * 2 - 1
    e = torch.randn(1, cfg.embed_dim)
    with pytest.raises(ValueError, match="landmarks"):
        G(y, e, warped=x)
    with torch.no_grad():
        assert torch.equal(G(y, e, warped=x, landmarks=_lips()), G.trunk_output(y, e, warped=x))
        _wake(G.mouth)
        out, delta = G.forward_parts(y, e, warped=x, landmarks=_lips())
        trunk = G.trunk_output(y, e, warped=x)
    assert torch.allclose(out, x + delta, atol=1e-6)
    diff = (out - trunk).abs()
    assert diff[:, :, 40:48, 24:40].mean() > 0.05 and diff[:, :, :25].max() == 0


def test_config_key_is_optional_and_checked():
    assert ModelConfig.from_dict({"generator": "warp"}).mouth_refiner == 0  # older checkpoints load as before
    with pytest.raises(AnimateError, match="mouth_refiner"):
        ModelConfig(generator="fsth", mouth_refiner=8)
    with pytest.raises(AnimateError, match="mouth_refiner"):
        ModelConfig(mouth_refiner=-1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("mouth")
    cache = make_cache(root / "cache", frames=10, size=32)
    torch.manual_seed(0)
    save_checkpoint(root / "weights", TINY, Embedder(TINY), build_generator(TINY), Discriminator(TINY, 4))
    return cache, root / "weights"


def _opts(setup, run, **kw):
    cache, weights = setup
    base = dict(cache=str(cache), weights=str(weights), run=str(run), channels=8, batch_size=2,
                checkpoint_every=1, progress=False, threads=1)
    base.update(kw)
    return mouth_train.MouthOptions(**base)


def test_trainer_learns_resumes_exactly_and_exports(setup, tmp_path):
    straight = mouth_train.MouthTrainer(_opts(setup, tmp_path / "a", max_steps=4))
    straight.train()
    rows = (tmp_path / "a" / "losses.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("step,")
    assert straight.refiner.head.weight.abs().max() > 0  # the zero head has moved: real updates

    first = mouth_train.MouthTrainer(_opts(setup, tmp_path / "b", max_steps=2))
    first.train()
    resumed = mouth_train.MouthTrainer(_opts(setup, tmp_path / "b", max_steps=4))
    summary = resumed.train()
    assert summary["step"] == 4
    for k, v in straight.refiner.state_dict().items():
        assert torch.allclose(v, resumed.refiner.state_dict()[k], atol=1e-6), k
    a, b = straight.opt.state_dict()["state"], resumed.opt.state_dict()["state"]
    assert all(torch.allclose(a[i]["exp_avg"], b[i]["exp_avg"], atol=1e-6) for i in a)

    out = mouth_train.export(tmp_path / "a", setup[1], tmp_path / "exported")
    cfg, E, G, D = load_checkpoint(out, with_discriminator=True)
    assert cfg.mouth_refiner == 8 and D is not None
    for k, v in straight.refiner.state_dict().items():
        assert torch.equal(G.mouth.state_dict()[k], v)
    _, _, G0, _ = load_checkpoint(setup[1])
    trunk = {k: v for k, v in G.state_dict().items() if not k.startswith("mouth.")}
    assert all(torch.equal(v, G0.state_dict()[k]) for k, v in trunk.items())  # the trunk is untouched


def test_bad_options_give_one_line(setup, tmp_path, capsys):
    cache, weights = setup
    assert mouth_train.main(["--cache", str(cache), "--weights", str(weights), "--run-dir", str(tmp_path / "r"),
                             "--channels", "0", "--no-progress"]) == 1
    assert mouth_train.main(["--run-dir", str(tmp_path / "none"), "--weights", str(weights),
                             "--export", str(tmp_path / "x")]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and all(line.startswith("error: ") for line in out)
    assert not (tmp_path / "x").exists() and not (tmp_path / "r").exists()
