"""TorchIO's random bias field, its polynomial evaluated from 1-D powers instead of full 3-D meshes.

``tio.BiasField`` raises three full-size coordinate meshes to every power of every term, which
is most of a subject's generation time at 240x240x155. Each term ``c x^a y^b z^c`` is an outer
product of 1-D powers, so broadcasting computes the same float64 products, element by element,
in the same order: the field is bit-identical (a test compares it with TorchIO's), only faster.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torchio as tio


class SeparableBiasField(tio.BiasField):
    """``tio.BiasField`` with the same field, computed by broadcasting (about 5x faster on BraTS volumes).

    Example:
        >>> import torch, torchio as tio
        >>> image = tio.ScalarImage(tensor=torch.ones(1, 8, 8, 8))
        >>> field = SeparableBiasField(coefficients=[0.1] * 10, order=2)(image)
    """

    @staticmethod
    def generate_bias_field(data, order: int, coefficients: Sequence[float]) -> np.ndarray:
        shape = np.array(data.shape[1:])  # first axis is channels
        axes = [np.arange(-n, n) + 0.5 for n in shape / 2]
        axes = [axis / axis.max() if axis.max() > 0 else axis for axis in axes]
        x, y, z = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
        bias_field = np.zeros(shape)
        i = 0
        for x_order in range(order + 1):
            for y_order in range(order + 1 - x_order):
                for z_order in range(order + 1 - (x_order + y_order)):
                    bias_field += coefficients[i] * x**x_order * y**y_order * z**z_order
                    i += 1
        return np.exp(bias_field).astype(np.float32)


class RandomSeparableBiasField(tio.RandomBiasField):
    """``tio.RandomBiasField`` (same random draws, same field) applying :class:`SeparableBiasField`.

    Example:
        >>> import torch, torchio as tio
        >>> image = tio.ScalarImage(tensor=torch.ones(1, 8, 8, 8))
        >>> biased = RandomSeparableBiasField(coefficients=0.3)(image)
    """

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        images = self.get_images_dict(subject)
        if not images:
            return subject
        # One draw per image, in image order, exactly as tio.RandomBiasField draws them.
        coefficients = {name: self.get_params(self.order, self.coefficients_range) for name in images}
        orders = {name: self.order for name in images}
        return SeparableBiasField(coefficients=coefficients, order=orders, **self._get_base_args())(subject)
