"""Sampled chips: one physical realization of a network's DBP circuit, at model level.

A :class:`Chip` holds the random draws of one chip (device mismatch of every weight, gain
errors of every activation and derivative unit, offsets of every state node, per-neuron
time constants) and the chip's fixed design choices (crossbar layout, weight precision,
conductance range, thermal noise, readout converters).  It is *programmed* with the
current parameters of its network whenever it is used, so one chip serves a whole
hardware-aware training run: its devices stay the same while the weights change.

The model (network units: 1 V = 1 unit; time in units of the nominal tau):

* weights are conductances.  A weight ``w`` is a pair of devices ``(g+, g-)`` between
  ``g_min`` and ``g_max``; one of them is left at ``g_min``, the other is programmed to
  ``g_min + |w|`` (in weight units: ``g_max - g_min`` represents ``w_max``), so
  ``w = g+ - g-``.  Weights beyond ``w_max`` are clipped to it; with ``bits`` the
  programmed magnitude is rounded to one of ``2**bits`` levels ``k w_max / (2**bits - 1)``;
  each device then carries an independent lognormal factor ``exp(mismatch * N(0, 1))``
  (programming error, fixed for the chip's life), so ``w_eff = g+ f+ - g- f-``.  With a
  finite on/off ratio ``g_range = g_max / g_min`` the device left at
  ``g_min = w_max / (g_range - 1)`` carries mismatch too: an additive error on every
  weight, zero weights included.  Biases are digital (exact), as aihwkit's default
  ``digital_bias=True``.
* ``crossbar="separate"``: the forward weights (u = W m + b) and the backward weights
  (r = W^T s) are different devices, each with its own draws; ``"shared"``: one crossbar
  read in both directions, so both see the same perturbed W.
* activation unit of neuron j: ``a_j = ga_j sigma(u_j)``, derivative unit
  ``sigma'_j = gd_j sigma'(u_j)``, with lognormal gains ``ga = exp(activation_mismatch
  N(0,1))``, ``gd = exp(derivative_mismatch N(0,1))``;
* every state node has an offset, normal with std ``offset`` volts: ``o_x``, ``o_z``;
* per-neuron time constants ``tau_j = exp(tau_spread N(0,1))`` (nominal 1).

With ``m = (x+z)/2`` and ``d = x - z`` (in volts; the cost current is scaled by ``gain``,
so d = gain * dC/da on a nominal chip)::

    tau_j dm/dt = ga sigma(u) + (o_x + o_z)/2 - m,        u = W_f m + beta
    tau_j dd/dt = W_b^T (gd sigma'(u) d) + gain dC/dm_L + (o_x - o_z) - d

plus white noise on every state node (``noise``: the RMS fluctuation of a lone node,
sqrt(kT/C) of its capacitor).  The readout measures m, d and the derivative units'
output ``gd sigma'(u)`` with converters of ``adc_bits`` bits (auto-ranging per sample and
layer) and forms ``delta = sigma' d / gain``, ``dC/dW = mean_b delta m_p^T``.

The option names and typical magnitudes follow IBM's aihwkit where they correspond
(see :meth:`Chip.sample`).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .._validate import check_choice, check_int, check_real
from ..errors import DyadsimError

__all__ = ["Chip", "CHIP_OPTIONS", "CROSSBARS", "architecture_of"]

CROSSBARS = ("separate", "shared")
#: every option of :meth:`Chip.sample` (besides ``net`` and ``seed``)
CHIP_OPTIONS = ("crossbar", "mismatch", "activation_mismatch", "derivative_mismatch", "offset",
                "tau_spread", "bits", "w_max", "g_range", "noise", "adc_bits", "gain")

# indices of the independent random streams of one chip (SeedSequence spawn keys): turning
# one non-ideality on never changes the draws of another
_FWD, _BWD, _ACT, _DER, _OX, _OZ, _TAU, _NOISE = range(8)


def architecture_of(net) -> tuple:
    """Everything about a network but its parameter values: the layers, their sizes and
    activations, the edges, the bias layout and the loss (hashable)."""
    return (net.input, net.sizes[net.input], tuple(net.nodes),
            tuple(net.sizes[v] for v in net.nodes),
            tuple(net.activations[v].name for v in net.nodes), tuple(net.edges),
            tuple(net.bias_mode[v] for v in net.nodes), net.loss.name)


def _check_seed(seed):
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, (bool, np.bool_)) or seed is None:
        raise DyadsimError(f"seed must be a non-negative int (or a sequence of them), got {seed!r}")
    if isinstance(seed, numbers.Integral):
        if seed < 0:
            raise DyadsimError(f"seed must be a non-negative int, got {seed}")
        return np.random.SeedSequence(int(seed))
    if isinstance(seed, (tuple, list)) and seed and all(
            isinstance(s, numbers.Integral) and not isinstance(s, (bool, np.bool_)) and s >= 0
            for s in seed):
        return np.random.SeedSequence([int(s) for s in seed])
    raise DyadsimError(f"seed must be a non-negative int (or a sequence of them), got {seed!r}")


def _check_config(options: dict) -> dict:
    """Validate and normalize the options of :meth:`Chip.sample`."""
    bad = [k for k in options if k not in CHIP_OPTIONS]
    if bad:
        raise DyadsimError(f"Chip: unknown option(s) {', '.join(map(repr, bad))}; "
                           f"valid: {', '.join(CHIP_OPTIONS)}")
    c = dict(options)
    c["crossbar"] = check_choice("Chip crossbar", c["crossbar"], CROSSBARS)
    for name in ("mismatch", "activation_mismatch", "derivative_mismatch", "tau_spread"):
        c[name] = check_real(f"Chip {name}", c[name], low=0.0, high=10.0)
    c["offset"] = check_real("Chip offset", c["offset"], low=0.0, high=100.0)
    c["noise"] = check_real("Chip noise", c["noise"], low=0.0, high=100.0)
    c["gain"] = check_real("Chip gain", c["gain"], low=0.0, low_open=True, high=1e12)
    bits = c["bits"]
    if bits is not None:
        if isinstance(bits, numbers.Integral) and not isinstance(bits, (bool, np.bool_)) and bits < 1:
            raise DyadsimError(f"Chip bits must be >= 1 (a weight needs at least one bit), got {bits}")
        c["bits"] = check_int("Chip bits", bits, 1, 32)
    adc = c["adc_bits"]
    if adc is not None:
        if isinstance(adc, numbers.Integral) and not isinstance(adc, (bool, np.bool_)) and adc < 2:
            raise DyadsimError(
                f"Chip adc_bits must be >= 2 (a signed converter needs the levels -R, 0, +R), got {adc}")
        c["adc_bits"] = check_int("Chip adc_bits", adc, 2, 32)
    c["w_max"] = check_real("Chip w_max", c["w_max"], low=0.0, low_open=True, allow_none=True)
    g = c["g_range"]
    if g is not None:
        g = check_real("Chip g_range", g, low=1.0, low_open=True, allow_inf=True)
        c["g_range"] = None if math.isinf(g) else g
    return c


class Chip:
    """One sampled physical realization of a network (see the module docstring for the
    model).  Make one with :meth:`Chip.sample`; the constructor is internal.

    Parameters
    ----------
    net : Network
        The network the chip is programmed with (its *current* parameters are used).
    config : dict
        The options it was sampled with (:data:`CHIP_OPTIONS`).
    seed : SeedSequence
        Where its draws come from.
    draws : dict
        The random draws themselves (internal).

    Attributes
    ----------
    net : Network
        As given.
    config : dict
        As given.
    seed : SeedSequence
        As given.
    """

    def __init__(self, net, config, seed, draws):
        # internal: use Chip.sample
        net.require_standard("a Chip (the chip engine)")
        self.net = net
        self.config = config
        self.seed = seed
        self._draws = draws
        self._arch = architecture_of(net)

    # ------------------------------------------------------------------ sampling
    @classmethod
    def sample(cls, net, *, seed, crossbar="separate", mismatch=0.0, activation_mismatch=0.0,
               derivative_mismatch=0.0, offset=0.0, tau_spread=0.0, bits=None, w_max=None,
               g_range=None, noise=0.0, adc_bits=None, gain=1.0, **unknown) -> "Chip":
        """Draw one chip for ``net``.

        Parameters
        ----------
        net : Network
            Dense edges only (every weight is one crossbar device pair).
        seed : int, sequence of ints or numpy SeedSequence
            Every draw of the chip comes from it: the same seed gives the same chip.
        crossbar : ``"separate"`` or ``"shared"``
            Forward and backward weights on different devices (independent mismatch), or
            one crossbar read both ways (the same perturbed W in both directions).
        mismatch : float
            Lognormal sigma of every weight device (programming error; aihwkit's PCM model
            has sigma_prog ~ 1 uS of g_max = 25 uS, i.e. 4 % of full scale and 10-20 %
            relative for small weights; its device-to-device spreads ``*_dtod`` are 0.05-0.3).
        activation_mismatch, derivative_mismatch : float
            Lognormal sigma of the per-neuron gain of the activation units and, separately,
            of the derivative (sigma') units.
        offset : float
            Std (volts, network units) of a normal offset on every x and z node (op-amp
            input offsets: ~1e-4 to 5e-3 V in CMOS).
        tau_spread : float
            Lognormal sigma of the per-neuron time constants (steady state unaffected).
        bits : int or None
            Weight precision: ``2**bits`` conductance levels over [0, w_max] (aihwkit's
            ``dw_min`` presets have ~1000-1200 states, about 10 bits).  ``None``: analog.
        w_max : float or None
            The largest weight the devices represent (the conductance swing g_max - g_min);
            larger weights are clipped.  ``None``: each edge's largest ``|W|`` (aihwkit's
            default mapping; nothing clips).
        g_range : float or None
            On/off ratio g_max/g_min (> 1).  The off device sits at
            ``g_min = w_max / (g_range - 1)`` and has mismatch too.  ``None``: g_min = 0.
        noise : float
            RMS thermal noise of every state node in volts (sqrt(kT/C): 64 uV at 1 pF,
            300 K); simulated as an SDE (Euler-Maruyama).
        adc_bits : int or None
            Resolution (>= 2) of the converters that read m, d and sigma'(u) out
            (aihwkit's default ``out_res = 1/(2**9 - 2)``: 9 bits).  ``None``: exact.
        gain : float
            The cost current's gain: the error voltages are ``gain * dC/da`` (raises them
            above offsets and noise).

        Returns
        -------
        Chip

        Raises
        ------
        DyadsimError
            An unknown option, a negative or NaN size, ``bits < 1``, ``adc_bits < 2``, a
            network with non-dense edges.
        """
        from ..network import Network

        if not isinstance(net, Network):
            raise DyadsimError(f"Chip.sample needs a Network, got {type(net).__name__}")
        config = _check_config(dict(crossbar=crossbar, mismatch=mismatch,
                                    activation_mismatch=activation_mismatch,
                                    derivative_mismatch=derivative_mismatch, offset=offset,
                                    tau_spread=tau_spread, bits=bits, w_max=w_max,
                                    g_range=g_range, noise=noise, adc_bits=adc_bits, gain=gain,
                                    **unknown))
        for (p, v), op in net.edge_ops.items():
            if op.kind != "dense":
                raise DyadsimError(
                    f"Chip: edge {p!r} -> {v!r} is a {op.kind} edge; chips model dense crossbars "
                    "only (every weight one device pair)")
        ss = _check_seed(seed)
        streams = [np.random.default_rng(np.random.SeedSequence(ss.entropy, spawn_key=ss.spawn_key + (i,)))
                   for i in range(7)]
        draws = {"fwd": {}, "bwd": {}}
        for (p, v) in net.edges:
            shape = (2, net.sizes[v], net.sizes[p])
            draws["fwd"][(p, v)] = streams[_FWD].standard_normal(shape)
            if p != net.input:
                draws["bwd"][(p, v)] = streams[_BWD].standard_normal(shape)
        n = net.n
        draws["act"] = streams[_ACT].standard_normal(n)
        draws["der"] = streams[_DER].standard_normal(n)
        draws["ox"] = streams[_OX].standard_normal(n)
        draws["oz"] = streams[_OZ].standard_normal(n)
        draws["tau"] = streams[_TAU].standard_normal(n)
        return cls(net, config, ss, draws)

    def replace(self, **changes) -> "Chip":
        """The same chip (the same draws) with some options changed, e.g. a larger
        ``mismatch``: common random numbers for a sweep."""
        cfg = dict(self.config)
        cfg.update(changes)
        return Chip(self.net, _check_config(cfg), self.seed, self._draws)

    def with_network(self, net) -> "Chip":
        """The same chip programmed with another network of the same architecture (other
        parameter values): training moves the weights, the devices stay.

        Raises
        ------
        DyadsimError
            ``net`` has another architecture (layers, sizes, activations, edges, loss).
        """
        self.check_network(net)
        return Chip(net, self.config, self.seed, self._draws)

    def check_network(self, net) -> None:
        """Raise a DyadsimError unless ``net`` has this chip's architecture."""
        arch = getattr(net, "edges", None) is not None and architecture_of(net)
        if arch != self._arch:
            raise DyadsimError(
                "this chip was sampled for another network: its layers, sizes, activations, "
                f"edges or loss differ (chip: {self.net!r}, given: {net!r})")

    # ------------------------------------------------------------------ facts
    @property
    def crossbar(self) -> str:
        return self.config["crossbar"]

    @property
    def gain(self) -> float:
        return self.config["gain"]

    @property
    def noise(self) -> float:
        return self.config["noise"]

    @property
    def adc_bits(self):
        return self.config["adc_bits"]

    @property
    def is_ideal(self) -> bool:
        """Every non-ideality is zero (the chip computes exact backprop)."""
        c = self.config
        return (c["mismatch"] == 0 and c["activation_mismatch"] == 0
                and c["derivative_mismatch"] == 0 and c["offset"] == 0 and c["bits"] is None
                and c["w_max"] is None and c["noise"] == 0 and c["adc_bits"] is None)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.config.items()
                         if v not in (0.0, None) or k in ("crossbar",))
        return f"<Chip of {self.net!r}: {opts}>"

    # ------------------------------------------------------------------ programming
    def _program(self, W, xi):
        c = self.config
        w_fs = c["w_max"] if c["w_max"] is not None else float(np.max(np.abs(W))) if W.size else 0.0
        mag = np.abs(W)
        if c["w_max"] is not None:
            mag = np.minimum(mag, w_fs)
        if c["bits"] is not None and w_fs > 0:
            step = w_fs / (2 ** c["bits"] - 1)
            mag = np.minimum(np.round(mag / step), 2 ** c["bits"] - 1) * step
        if c["mismatch"] == 0:
            return np.where(W < 0, -mag, mag)  # the device pair is exact: g_min cancels
        w_off = w_fs / (c["g_range"] - 1.0) if c["g_range"] is not None else 0.0
        f_pos = np.exp(c["mismatch"] * xi[0])
        f_neg = np.exp(c["mismatch"] * xi[1])
        g_pos = np.where(W >= 0, mag, 0.0) + w_off
        g_neg = np.where(W < 0, mag, 0.0) + w_off
        return g_pos * f_pos - g_neg * f_neg

    @property
    def forward_weights(self) -> dict:
        """``{(src, dst): W_f}``: the effective weights of the forward crossbars."""
        return {e: self._program(self.net.params[("W",) + e], self._draws["fwd"][e])
                for e in self.net.edges}

    @property
    def backward_weights(self) -> dict:
        """``{(src, dst): W_b}`` of the internal edges (the input has no backward path):
        the weights the backward sums r = W_b^T s see (the forward ones when shared)."""
        key = "fwd" if self.crossbar == "shared" else "bwd"
        return {e: self._program(self.net.params[("W",) + e], self._draws[key][e])
                for e in self.net.edges if e[0] != self.net.input}

    def _per_layer(self, vec) -> dict:
        return {v: vec[self.net.slice(v)].copy() for v in self.net.nodes}

    @property
    def activation_gain(self) -> dict:
        """``{node: ga}``: gain of every activation unit (a = ga sigma(u))."""
        return self._per_layer(np.exp(self.config["activation_mismatch"] * self._draws["act"]))

    @property
    def derivative_gain(self) -> dict:
        """``{node: gd}``: gain of every derivative unit (sigma' = gd sigma'(u))."""
        return self._per_layer(np.exp(self.config["derivative_mismatch"] * self._draws["der"]))

    @property
    def offset_x(self) -> dict:
        """``{node: o_x}``: offsets (volts) of the x nodes."""
        return self._per_layer(self.config["offset"] * self._draws["ox"])

    @property
    def offset_z(self) -> dict:
        """``{node: o_z}``: offsets (volts) of the z nodes."""
        return self._per_layer(self.config["offset"] * self._draws["oz"])

    @property
    def tau(self) -> dict:
        """``{node: tau_j}``: time constants in units of the nominal tau."""
        return self._per_layer(np.exp(self.config["tau_spread"] * self._draws["tau"]))

    def biases(self) -> dict:
        """``{node: b}``: the (digital, exact) bias of every neuron."""
        return {v: self.net.bias_vector(v) for v in self.net.nodes}

    def values(self) -> dict:
        """Every per-element value of the chip, for a netlist or a report: ``forward``,
        ``backward`` (per edge), ``bias``, ``activation_gain``, ``derivative_gain``,
        ``offset_x``, ``offset_z``, ``tau`` (per layer) and ``gain``."""
        return {"forward": self.forward_weights, "backward": self.backward_weights,
                "bias": self.biases(), "activation_gain": self.activation_gain,
                "derivative_gain": self.derivative_gain, "offset_x": self.offset_x,
                "offset_z": self.offset_z, "tau": self.tau, "gain": self.gain}

    def noise_rng(self, seed=None) -> np.random.Generator:
        """The generator of the chip's thermal noise for one run: ``seed=None`` gives the
        chip's own fixed stream (reproducible); an int gives another, independent one
        (fresh noise per training step)."""
        key = self.seed.spawn_key + (_NOISE,)
        if seed is not None:
            key = key + (check_int("noise seed", seed, 0),)
        return np.random.default_rng(np.random.SeedSequence(self.seed.entropy, spawn_key=key))

    # ------------------------------------------------------------------ inference
    @property
    def output_exact(self) -> bool:
        """Whether :attr:`network` includes the output layer's gain and offset (it can when
        the output activation is the identity, or when they are 1 and 0)."""
        out = self.net.output
        ga = self.activation_gain[out]
        om = 0.5 * (self.offset_x[out] + self.offset_z[out])
        return self.net.activations[out].name == "identity" or (np.all(ga == 1) and not np.any(om))

    @property
    def network(self):
        """The Network this chip computes in inference: the effective forward weights,
        with each hidden layer's activation gains and common-mode offsets folded into the
        weights and biases of the layers it drives (exact).  The output layer's own gain
        and offset are folded in when its activation is the identity; otherwise they are
        left out (:attr:`output_exact` is False) and :meth:`predict` has them.  A layer
        without bias gets one where offsets must be folded into it."""
        from ..network import Network

        net = self.net
        Wf = self.forward_weights
        ga = self.activation_gain
        om = {v: 0.5 * (a + b) for (v, a), b in zip(self.offset_x.items(), self.offset_z.values())}
        G = net.to_graph()
        bias = {v: net.bias_vector(v).copy() for v in net.nodes}
        for (p, v) in net.edges:
            W = Wf[(p, v)]
            if p != net.input:
                bias[v] = bias[v] + W @ om[p]
                W = W * ga[p][None, :]
            G.edges[p, v]["weight"] = W
        out = net.output
        if net.activations[out].name == "identity":
            for p in net.preds[out]:
                G.edges[p, out]["weight"] = ga[out][:, None] * G.edges[p, out]["weight"]
            bias[out] = ga[out] * bias[out] + om[out]
        for v in net.nodes:
            if net.bias_mode[v] is not None or np.any(bias[v]):
                G.nodes[v]["bias"] = bias[v]
        return Network.from_graph(G, loss=net.loss.name)

    def predict(self, x, *, noise_seed=None) -> np.ndarray:
        """The chip's output m_L for inputs x (gains and offsets of every layer, the
        output's included).

        Parameters
        ----------
        x : array_like, (n_in,) or (B, n_in)
        noise_seed : int or None
            ``None``: noise-free.  An int: a static sample of the thermal noise, every
            layer's m = (x+z)/2 perturbed by N(0, noise^2/2) (the stationary fluctuation of
            a lone pair of nodes) before it drives the next layer, from a stream of its
            own (independent of the relaxations' noise).

        Returns
        -------
        ndarray
        """
        net = self.net
        X, single = net.check_x(x)
        rng = None
        if noise_seed is not None and self.noise > 0:
            key = self.seed.spawn_key + (_NOISE, 1, check_int("noise_seed", noise_seed, 0))
            rng = np.random.default_rng(np.random.SeedSequence(self.seed.entropy, spawn_key=key))
        Wf = self.forward_weights
        ga, ox, oz = self.activation_gain, self.offset_x, self.offset_z
        a = {net.input: X}
        for v in net.nodes:
            u = np.broadcast_to(net.bias_vector(v), (X.shape[0], net.sizes[v])).copy()
            for p in net.preds[v]:
                u += a[p] @ Wf[(p, v)].T
            a[v] = ga[v] * net.activations[v].f(u) + 0.5 * (ox[v] + oz[v])
            if rng is not None:
                a[v] = a[v] + (self.noise / math.sqrt(2.0)) * rng.standard_normal(a[v].shape)
        out = a[net.output]
        return out[0] if single else out
