"""What each layer type does with channels, and what must be cut when one goes: one class per type.

The channel analysis (channels.py), the pass that removes channels (prune_zero.py) and the
report of what stayed (leftovers.py) ask the class of a module, never its type, so supporting
a new layer type is one class here. Two shapes of layer:

* pointwise (BatchNorm, PReLU): output channel c is input channel c, so the analysis couples
  them; `writes` says where the layer turns a zero input into something non-zero.
* mixing (Conv2d, Linear, GroupNorm): input and output channels are separate; `writes` says
  which output channels may be non-zero, `reads` which input channels any output depends on,
  and `whole_groups` how many groups the channels go in only as a whole (grouped convs; every
  GroupNorm, whose statistics span a group).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from gsdeploy.transforms.fold_bn import bn_scale_shift, foldable_bn
from gsdeploy.transforms.fxutil import describe


def take(t: torch.Tensor | None, dim: int, idx: np.ndarray) -> torch.Tensor | None:
    """The entries `idx` of `t` along `dim`, as a new tensor (None stays None)."""
    if t is None:
        return None
    return t.detach().index_select(dim, torch.as_tensor(idx, dtype=torch.long)).clone()


def set_param(m: nn.Module, name: str, value: torch.Tensor | None) -> None:
    """Replace m.<name>, keeping it a Parameter (with its requires_grad) if it was one."""
    if value is None:
        return
    old = getattr(m, name)
    if isinstance(old, nn.Parameter):
        setattr(m, name, nn.Parameter(value, requires_grad=old.requires_grad))
    else:
        setattr(m, name, value)


def insert_zeros(t: torch.Tensor | None, dim: int, at: int, count: int, fill: float = 0.0) -> torch.Tensor | None:
    """`t` with `count` entries of `fill` inserted before index `at` along `dim` (None stays None)."""
    if t is None:
        return None
    t = t.detach()
    shape = list(t.shape)
    shape[dim] = count
    new = torch.full(shape, fill, dtype=t.dtype, device=t.device)
    return torch.cat([t.narrow(dim, 0, at), new, t.narrow(dim, at, t.shape[dim] - at)], dim).clone()


def _slice_norms(w: torch.Tensor, dim: int) -> torch.Tensor:
    dims = [d for d in range(w.dim()) if d != dim]
    return w.detach().double().pow(2).sum(dim=dims).sqrt()


def _rows_nonzero(w: torch.Tensor, b: torch.Tensor | None, tol: float) -> np.ndarray:
    w = w.detach().reshape(w.shape[0], -1)
    b = b.detach() if b is not None else None
    if tol == 0:  # exact: no arithmetic, so no underflow of tiny values to zero
        rows = w.ne(0).any(dim=1)
        if b is not None:
            rows |= b.ne(0)
    else:
        rows = _slice_norms(w, 0) > tol
        if b is not None:
            rows |= b.double().abs() > tol
    return rows.numpy()


def _cols_nonzero(cols: torch.Tensor, tol: float) -> np.ndarray:
    """cols: (Cin, ...), what reads each input channel."""
    if tol == 0:
        return cols.ne(0).any(dim=1).numpy()
    return (_slice_norms(cols, 0) > tol).numpy()


def _zero_rows(m: nn.Module, rows: np.ndarray) -> None:
    idx = torch.as_tensor(rows, dtype=torch.long)
    with torch.no_grad():
        m.weight[idx] = 0
        if m.bias is not None:
            m.bias[idx] = 0


class ChannelLayer:
    """Base class; the defaults are those of a pointwise layer without per-channel parameters."""

    pointwise = True
    # why a whole group of this layer keeps channels that are zero or unused (for the plan's report);
    # None: the analysis names it from the graph
    group_why: str | None = None

    def understands(self, m: nn.Module, in_shape: torch.Size, out_width: int) -> bool:
        """Whether the analysis may treat this call as the class says (else the node is opaque)."""
        return True

    def in_channels(self, m: nn.Module) -> int:
        raise NotImplementedError

    def out_channels(self, m: nn.Module) -> int:
        return self.in_channels(m)

    def writes(self, m: nn.Module, tol: float) -> np.ndarray | bool:
        """Per output channel (or one bool for all): may be non-zero (mixing), or is non-zero for a
        zero input (pointwise)."""
        return False

    def reads(self, m: nn.Module, tol: float) -> np.ndarray:
        """Per input channel (mixing layers): some output depends on it."""
        return np.ones(self.in_channels(m), dtype=bool)

    def whole_groups(self, m: nn.Module) -> int:
        """How many groups (of in_channels/g inputs with out_channels/g outputs) go only whole; 0: none."""
        return 0

    def cut(self, m: nn.Module, keep_in: np.ndarray, keep_out: np.ndarray) -> None:
        """Keep only these input and output channels (a pointwise layer gets the same twice)."""
        raise NotImplementedError

    def zero_out(self, m: nn.Module, rows: np.ndarray) -> None:
        """Make these output channels write zero (a group below the pruning threshold)."""
        raise NotImplementedError(f"{type(m).__name__} cannot zero output channels")

    def zero_in(self, m: nn.Module, cols: np.ndarray) -> None:
        """Make no output read these input channels (a group below the pruning threshold)."""
        raise NotImplementedError(f"{type(m).__name__} cannot zero input channels")

    def silence_group(self, m: nn.Module, j: int) -> bool:
        """Group j reads only exact zeros: make it write zero too if that changes no value; True if
        any weight changed (so the group, which goes only whole, can then go)."""
        return False

    def can_insert(self, m: nn.Module) -> bool:
        """Whether `insert_in`/`insert_out` can add channels to `m` that change no value."""
        return False

    def insert_in(self, m: nn.Module, at: int, count: int) -> None:
        """Read `count` more input channels, inserted before input `at`, with nothing depending on them
        (a pointwise layer: the same channels are its outputs, and it maps them 0 -> 0)."""
        raise NotImplementedError(f"{type(m).__name__} cannot grow its channels")

    def insert_out(self, m: nn.Module, at: int, count: int) -> None:
        """Write `count` more output channels, inserted before output `at`, all exactly zero."""
        self.insert_in(m, at, count)

    def describe(self, m: nn.Module) -> str:
        return describe(m)


class WeightRowsChannels(ChannelLayer):
    """A layer whose weight rows (and bias) are its output channels: conv, linear."""

    pointwise = False
    # the module attributes that hold its input and output widths
    in_attr, out_attr = "in_channels", "out_channels"

    def writes(self, m: nn.Module, tol: float) -> np.ndarray:
        return _rows_nonzero(m.weight, m.bias, tol)

    def insert_in(self, m: nn.Module, at: int, count: int) -> None:
        set_param(m, "weight", insert_zeros(m.weight, 1, at, count))  # weight columns are input channels
        setattr(m, self.in_attr, getattr(m, self.in_attr) + count)

    def insert_out(self, m: nn.Module, at: int, count: int) -> None:
        set_param(m, "weight", insert_zeros(m.weight, 0, at, count))
        set_param(m, "bias", insert_zeros(m.bias, 0, at, count))
        setattr(m, self.out_attr, getattr(m, self.out_attr) + count)

    def zero_out(self, m: nn.Module, rows: np.ndarray) -> None:
        _zero_rows(m, rows)


class ConvChannels(WeightRowsChannels):
    def in_channels(self, m: nn.Conv2d) -> int:
        return m.in_channels

    def out_channels(self, m: nn.Conv2d) -> int:
        return m.out_channels

    def reads(self, m: nn.Conv2d, tol: float) -> np.ndarray:
        # a grouped conv reads channel c only in the rows of c's group: (Cin, ...) view of those
        w = m.weight.detach()
        g = m.groups
        cout_g, cin_g = w.shape[0] // g, w.shape[1]
        return _cols_nonzero(w.reshape(g, cout_g, cin_g, -1).transpose(1, 2).reshape(g * cin_g, -1), tol)

    def whole_groups(self, m: nn.Conv2d) -> int:
        return m.groups if m.groups > 1 else 0

    def cut(self, m: nn.Conv2d, keep_in: np.ndarray, keep_out: np.ndarray) -> None:
        g = m.groups
        if g > 1:
            # whole groups only (channels.decide guarantees it): rows go, in-group columns stay
            cout_g, cin_g = m.out_channels // g, m.in_channels // g
            new_groups = len(keep_out) // cout_g
            if len(keep_out) % cout_g or len(keep_in) != new_groups * cin_g:
                raise AssertionError(f"grouped conv cut across a group: in {len(keep_in)}, out {len(keep_out)}")
            set_param(m, "weight", take(m.weight, 0, keep_out))
            m.groups = new_groups
        else:
            set_param(m, "weight", take(take(m.weight, 0, keep_out), 1, keep_in))
        set_param(m, "bias", take(m.bias, 0, keep_out))
        m.in_channels, m.out_channels = len(keep_in), len(keep_out)

    def zero_in(self, m: nn.Conv2d, cols: np.ndarray) -> None:
        cin_g, cout_g = m.in_channels // m.groups, m.out_channels // m.groups
        with torch.no_grad():
            for c in cols:
                j = c // cin_g  # a grouped conv reads c only in the rows of its group
                m.weight[j * cout_g:(j + 1) * cout_g, c - j * cin_g] = 0

    def can_insert(self, m: nn.Conv2d) -> bool:
        return m.groups == 1  # a grouped conv's channels go in groups; not grown here

    def silence_group(self, m: nn.Conv2d, j: int) -> bool:
        cout_g = m.out_channels // m.groups
        with torch.no_grad():
            w = m.weight[j * cout_g:(j + 1) * cout_g]
            if not w.ne(0).any():
                return False
            w.zero_()  # its inputs are exact zeros: these weights multiply nothing
        return True


class LinearChannels(WeightRowsChannels):
    in_attr, out_attr = "in_features", "out_features"

    def understands(self, m: nn.Linear, in_shape: torch.Size, out_width: int) -> bool:
        return len(in_shape) == 2  # Linear acts on the last axis; only for 2-D inputs is that the channel axis

    def in_channels(self, m: nn.Linear) -> int:
        return m.in_features

    def out_channels(self, m: nn.Linear) -> int:
        return m.out_features

    def reads(self, m: nn.Linear, tol: float) -> np.ndarray:
        return _cols_nonzero(m.weight.detach().t(), tol)

    def cut(self, m: nn.Linear, keep_in: np.ndarray, keep_out: np.ndarray) -> None:
        set_param(m, "weight", take(take(m.weight, 0, keep_out), 1, keep_in))
        set_param(m, "bias", take(m.bias, 0, keep_out))
        m.in_features, m.out_features = len(keep_in), len(keep_out)

    def zero_in(self, m: nn.Linear, cols: np.ndarray) -> None:
        with torch.no_grad():
            for c in cols:
                m.weight[:, c] = 0

    def can_insert(self, m: nn.Linear) -> bool:
        return True


class BatchNormChannels(ChannelLayer):
    """An eval BatchNorm (running statistics): a per-channel affine map."""

    def understands(self, m: nn.Module, in_shape: torch.Size, out_width: int) -> bool:
        return foldable_bn(m)

    def in_channels(self, m: nn.modules.batchnorm._BatchNorm) -> int:
        return m.num_features

    def writes(self, m: nn.Module, tol: float) -> np.ndarray:
        _, shift = bn_scale_shift(m)
        return (shift != 0).numpy()  # exact: an unfolded BN shift is not thresholded

    def cut(self, m: nn.Module, keep_in: np.ndarray, keep_out: np.ndarray) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            set_param(m, name, take(getattr(m, name), 0, keep_out))
        m.num_features = len(keep_out)

    def can_insert(self, m: nn.Module) -> bool:
        return foldable_bn(m)

    def insert_in(self, m: nn.Module, at: int, count: int) -> None:
        # scale 0, shift 0: the new channels come out exactly zero whatever comes in (mean 0, var 1
        # keep the arithmetic finite)
        fills = {"weight": 0.0, "bias": 0.0, "running_mean": 0.0, "running_var": 1.0}
        for name, fill in fills.items():
            set_param(m, name, insert_zeros(getattr(m, name), 0, at, count, fill))
        m.num_features += count


class PReLUChannels(ChannelLayer):
    """PReLU maps zero to zero; one slope for all channels or one per channel."""

    def understands(self, m: nn.PReLU, in_shape: torch.Size, out_width: int) -> bool:
        return m.num_parameters in (1, out_width)

    def in_channels(self, m: nn.PReLU) -> int:
        return m.num_parameters

    def cut(self, m: nn.PReLU, keep_in: np.ndarray, keep_out: np.ndarray) -> None:
        if m.num_parameters > 1:
            set_param(m, "weight", take(m.weight, 0, keep_out))
            m.num_parameters = len(keep_out)

    def can_insert(self, m: nn.PReLU) -> bool:
        return True

    def insert_in(self, m: nn.PReLU, at: int, count: int) -> None:
        if m.num_parameters > 1:  # any slope maps 0 to 0
            set_param(m, "weight", insert_zeros(m.weight, 0, at, count))
            m.num_parameters += count


class GroupNormChannels(ChannelLayer):
    """GroupNorm normalizes each group of channels by that group's own mean and variance, so a
    channel goes only with its whole group (removing one would change the group's statistics);
    whole groups go exactly, the others see the same numbers as before."""

    pointwise = False
    group_why = ("GroupNorm normalizes a group's channels together: a group goes only whole, and the rest "
                 "of the group is not zero or is still read")

    def in_channels(self, m: nn.GroupNorm) -> int:
        return m.num_channels

    def writes(self, m: nn.GroupNorm, tol: float) -> np.ndarray:
        # exact, as for BN: a group whose inputs are all zero writes its bias, any other group anything
        # where the weight is not zero; a channel is surely zero only with both zero
        if not m.affine:
            return np.ones(m.num_channels, dtype=bool)
        return (m.weight.detach().ne(0) | m.bias.detach().ne(0)).numpy()

    def reads(self, m: nn.GroupNorm, tol: float) -> np.ndarray:
        # every input channel enters its group's statistics. (A group whose outputs nobody reads could
        # go with non-zero inputs; that is not done: the plan reports it as kept by GroupNorm.)
        return np.ones(m.num_channels, dtype=bool)

    def whole_groups(self, m: nn.GroupNorm) -> int:
        return m.num_groups  # also 1: every channel of a one-group GroupNorm shares its statistics

    def cut(self, m: nn.GroupNorm, keep_in: np.ndarray, keep_out: np.ndarray) -> None:
        size = m.num_channels // m.num_groups
        groups = np.asarray(keep_out).reshape(-1, size) if len(keep_out) % size == 0 else None
        if groups is None or not np.array_equal(keep_in, keep_out) or \
                not (groups == groups[:, :1] + np.arange(size)).all() or (groups[:, 0] % size).any():
            raise AssertionError(f"GroupNorm cut across a group: in {list(keep_in)}, out {list(keep_out)}")
        if m.affine:
            set_param(m, "weight", take(m.weight, 0, keep_out))
            set_param(m, "bias", take(m.bias, 0, keep_out))
        m.num_groups, m.num_channels = len(groups), len(keep_out)

    def zero_out(self, m: nn.GroupNorm, rows: np.ndarray) -> None:
        if len(rows):  # only channels `writes` calls zero, i.e. weight and bias already zero
            _zero_rows(m, rows)

    def zero_in(self, m: nn.GroupNorm, cols: np.ndarray) -> None:
        # `reads` says every input is read, so the analysis never finds one unused to zero
        raise AssertionError("GroupNorm reads every input channel")

    def silence_group(self, m: nn.GroupNorm, j: int) -> bool:
        # inputs all zero: the group's mean and variance are zero and it writes its bias; with a zero
        # bias a zero weight gives the same zeros and lets the group go
        if not m.affine:
            return False
        size = m.num_channels // m.num_groups
        with torch.no_grad():
            w, b = m.weight[j * size:(j + 1) * size], m.bias[j * size:(j + 1) * size]
            if b.ne(0).any() or not w.ne(0).any():
                return False
            w.zero_()
        return True

    def describe(self, m: nn.GroupNorm) -> str:
        return f"GN {m.num_channels}/g{m.num_groups}"


# The registry: a module's class is looked up along its type's MRO, so a subclass of a
# registered type is handled as its base (as isinstance did).
LAYERS: dict[type, ChannelLayer] = {
    nn.Conv2d: ConvChannels(),
    nn.Linear: LinearChannels(),
    nn.BatchNorm1d: BatchNormChannels(),
    nn.BatchNorm2d: BatchNormChannels(),
    nn.PReLU: PReLUChannels(),
    nn.GroupNorm: GroupNormChannels(),
}


def channel_layer(m: nn.Module) -> ChannelLayer | None:
    """The class that says what `m` does with channels; None for a type the analysis has no class for."""
    for cls in type(m).__mro__:
        layer = LAYERS.get(cls)
        if layer is not None:
            return layer
    return None


def mixing_layer(m: nn.Module) -> ChannelLayer | None:
    """The class of `m` when it reads input channels into separate output channels (conv, linear, ...)."""
    layer = channel_layer(m)
    return layer if layer is not None and not layer.pointwise else None
