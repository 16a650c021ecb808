import torch

from hpod.trial.grid import Arch, count_parameters
from hpod.trial.model import DataShape, PatchTST


def test_forward_maps_a_batch_of_windows_to_one_output_each():
    shape = DataShape(n_features=7, context=60, patch_len=10, stride=5)
    model = PatchTST(Arch(32, 2, 4, 64).model_config(shape))
    out = model(torch.randn(3, 60, 7))
    assert out.shape == (3,)
    assert shape.n_patches == 11


def test_parameter_count_formula_matches_the_built_model_for_odd_shapes():
    for shape in (DataShape(1, 20, 4, 3), DataShape(11), DataShape(5, 30, 30, 1, n_outputs=3)):
        arch = Arch(24, 3, 4, 48)
        model = PatchTST(arch.model_config(shape, revin=True))
        assert count_parameters(arch, shape) == sum(p.numel() for p in model.parameters())


def test_revin_makes_the_output_invariant_to_each_channels_scale_and_offset():
    shape = DataShape(3, 20, 5, 5)
    torch.manual_seed(0)
    model = PatchTST(Arch(16, 1, 2, 32).model_config(shape, dropout=0.0, revin=True)).eval()
    x = torch.randn(4, 20, 3)
    shifted = x * torch.tensor([2.0, 5.0, 0.5]) + torch.tensor([10.0, -3.0, 1.0])
    torch.testing.assert_close(model(x), model(shifted), atol=1e-4, rtol=1e-4)
    plain = PatchTST(Arch(16, 1, 2, 32).model_config(shape, dropout=0.0)).eval()
    assert not torch.allclose(plain(x), plain(shifted), atol=1e-3)


def test_dropout_is_active_in_training_and_off_in_eval():
    shape = DataShape(3, 20, 5, 5)
    model = PatchTST(Arch(16, 2, 2, 32).model_config(shape, dropout=0.3, head_dropout=0.3))
    x = torch.randn(8, 20, 3)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))
