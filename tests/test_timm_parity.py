"""Step-by-step parity with timm's RMSpropTF and AdaBelief under preset='timm' (skipped without timm and
torch).

timm's RMSpropTF is TensorFlow's RMSProp written for PyTorch (s₀ = 1, ε inside the root, η inside
the momentum buffer), with PyTorch's options; its AdaBelief is the paper's code (rectified as RAdam
by default, one ε added to s and after its root).  Its optimizer module needs only torch, while
``import timm`` needs torchvision too: the module is loaded from timm's ``optim`` folder as a
package of its own, so ``pip install --no-deps timm`` is enough here.
"""

import importlib
import importlib.util
import itertools
import sys
import types

import numpy as np
import pytest
from reference import PARITY_X0 as X0
from reference import parity_grad as dF

import fastrms

torch = RMSpropTF = AdaBelief = None

STEPS = 20



@pytest.fixture(scope="module", autouse=True)
def _timm():
    global torch, RMSpropTF, AdaBelief
    torch = pytest.importorskip("torch")
    spec = importlib.util.find_spec("timm")
    if spec is None:
        pytest.skip("timm parity tests need timm (pip install --no-deps timm)")
    pkg = types.ModuleType("_timm_optim")
    pkg.__path__ = [f"{spec.submodule_search_locations[0]}/optim"]
    sys.modules.setdefault("_timm_optim", pkg)
    RMSpropTF = importlib.import_module("_timm_optim.rmsprop_tf").RMSpropTF
    AdaBelief = importlib.import_module("_timm_optim.adabelief").AdaBelief


def _grid(**axes):
    return [dict(zip(axes, vals, strict=True)) for vals in itertools.product(*axes.values())]


CASES = ([kw for kw in _grid(alpha=[0.9, 0.5], momentum=[0.0, 0.9], centered=[False, True],
                             lr_in_momentum=[True, False], foreach=[False, True])
          if kw["momentum"] or kw["lr_in_momentum"]]  # (where η sits matters only with momentum)
         + _grid(eps=[1e-3], weight_decay=[0.1], decoupled_decay=[False, True], momentum=[0.0, 0.5]))


@pytest.mark.parametrize("kwargs", CASES, ids=[str(kw) for kw in CASES])
def test_stepper_matches_timm(kwargs):
    _step_by_step(RMSpropTF, fastrms.RMSProp, kwargs)


def _step_by_step(theirs_cls, mine_cls, kwargs) -> tuple:
    """timm's optimizer and the stepper under preset='timm', the same kwargs, STEPS steps compared."""
    theirs = torch.nn.Parameter(torch.tensor(X0.copy()))
    topt = theirs_cls([theirs], lr=0.01, **kwargs)
    x = X0.copy()
    mine = mine_cls(x, preset="timm", lr=0.01, **kwargs)
    for k in range(STEPS):
        theirs.grad = torch.tensor(dF(theirs.detach().numpy()))
        topt.step()
        mine.step(dF(x))
        np.testing.assert_allclose(x, theirs.detach().numpy(), rtol=1e-12, atol=1e-12,
                                   err_msg=f"step {k + 1}")
    return topt, x


def test_defaults():
    theirs = torch.nn.Parameter(torch.tensor(X0.copy()))
    topt = RMSpropTF([theirs])
    x = X0.copy()
    mine = fastrms.RMSProp(x, preset="timm")
    for _ in range(STEPS):
        theirs.grad = torch.tensor(dF(theirs.detach().numpy()))
        topt.step()
        mine.step(dF(x))
    np.testing.assert_allclose(x, theirs.detach().numpy(), rtol=1e-12, atol=1e-12)
    twin = X0.copy()
    again = fastrms.RMSProp(twin, preset="timm", **RMSpropTF([torch.nn.Parameter(torch.zeros(1))]).defaults)
    for _ in range(STEPS):  # (timm's own record of its arguments makes the same stepper)
        again.step(dF(twin))
    np.testing.assert_array_equal(twin, x)
    with pytest.raises(ValueError, match=r"preset 'timm' has no 'adam'; it covers \['adabelief', 'rms"):
        fastrms.Adam(x, preset="timm")


# rectify (timm's default) passes ρ_t ≥ 5 at step 6 of 20; amsgrad is used by timm only unrectified
BELIEF_CASES = (_grid(rectify=[True, False], decoupled_decay=[True, False], weight_decay=[0.0, 0.1],
                      betas=[(0.9, 0.999), (0.5, 0.9)], eps=[1e-16, 1e-3])
                + _grid(rectify=[False], amsgrad=[True], eps=[1e-16, 1e-3], foreach=[False, True]))


@pytest.mark.parametrize("kwargs", BELIEF_CASES, ids=[str(kw) for kw in BELIEF_CASES])
def test_adabelief_matches_timm(kwargs):
    topt, x = _step_by_step(AdaBelief, fastrms.AdaBelief, kwargs)
    twin = X0.copy()  # and timm's own record of its arguments makes the same stepper
    again = fastrms.AdaBelief(twin, preset="timm", **topt.defaults)
    for _ in range(STEPS):
        again.step(dF(twin))
    np.testing.assert_array_equal(twin, x)
