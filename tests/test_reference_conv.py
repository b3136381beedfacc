"""Parity: the compiled reference convolution against torch.nn.functional.conv2d."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jcw.kernels import conv2d_reference

CASES = [
    # n, cin, cout, h, w, k, stride, pad, groups, bias
    (1, 3, 8, 9, 11, 3, 1, 1, 1, True),
    (2, 6, 10, 7, 7, 3, 2, 1, 1, False),
    (1, 5, 7, 13, 6, 1, 1, 0, 1, True),
    (1, 12, 12, 8, 8, 3, 2, 1, 12, True),  # depthwise
    (1, 8, 4, 10, 10, 5, 2, 2, 2, True),  # grouped
    (1, 3, 16, 17, 17, 7, 2, 3, 1, True),  # ResNet stem shape
]


@pytest.mark.parametrize("n,cin,cout,h,w,k,stride,pad,groups,bias", CASES)
def test_reference_conv_matches_torch(n, cin, cout, h, w, k, stride, pad, groups, bias):
    rng = np.random.default_rng(cin * 100 + cout)
    x = rng.standard_normal((n, cin, h, w)).astype(np.float32)
    wt = rng.standard_normal((cout, cin // groups, k, k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32) if bias else None
    got = conv2d_reference(x, wt, b, stride=stride, padding=pad, groups=groups)
    want = F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(wt).double(),
                    None if b is None else torch.from_numpy(b).double(),
                    stride=stride, padding=pad, groups=groups).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_reference_conv_rejects_bad_shapes():
    x = np.ones((1, 4, 5, 5), np.float32)
    with pytest.raises(ValueError, match="groups"):
        conv2d_reference(x, np.ones((4, 3, 3, 3), np.float32), None, 1, 1, 1)
    with pytest.raises(ValueError, match="4-D"):
        conv2d_reference(x[0], np.ones((4, 4, 3, 3), np.float32))
