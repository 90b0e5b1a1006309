"""Circuits stage: network -> circuit IR -> netlist text (ngspice dialect).

Layout: ``_ir`` (the IR: element kinds, behavioural expressions, circuits), ``_writer``
(netlist writers: :class:`NgspiceNetlister`, :class:`DeviceNetlister`), ``_transforms``
(every change of a compiled circuit: non-idealities, op-amp offsets, first guesses and
options), ``_setup`` (what both compilers share: node naming, sources, the
:class:`Netlist`), ``_compiler`` (the behavioural dialect) and ``_device`` (the device
dialect).
"""

from ._ir import (
    IDEAL_OPAMP_GAIN, MAX_GAIN_TIMES_OFFSET, OFFSET_OPAMP_GAIN, Analysis, Circuit, DeviceCircuit,
    DeviceKind, Element, Kind, NoiseSource, Section, Transistor, is_opamp, is_weight,
    safe_identifier, thermal_voltage,
)
from ._writer import DeviceNetlister, Netlister, NgspiceNetlister, format_number, write_circuit
from ._transforms import (
    AmplifierNonideal, Mismatch, Nonideality, Quantization, ThermalNoise, WireResistance,
    add_opamp_offsets, apply_nonidealities, check_nonidealities, copy_circuit, evaluate,
    map_elements, perturbed_netlist, with_nodesets, with_options,
)
from ._setup import (
    DEFAULT_OPTIONS, GAIN_NODE, TAU_NODE, Netlist, describe_network, layer_identifier,
    layer_identifiers, node_name, target_node,
)
from ._gains import (GAIN_LIMITS, GAIN_TARGET, MAX_ERROR_VOLTAGE, gain_node, gain_param,
                     reference_error_extents, stage_gains)
from ._compiler import compile_netlist
from ._device import BJTModel, OpAmp, compile_device_netlist
from ._chip import compile_chip_netlist, place_values

__all__ = [
    # compiling
    "compile_netlist", "Netlist", "DEFAULT_OPTIONS", "compile_device_netlist", "OpAmp", "BJTModel",
    "compile_chip_netlist", "place_values",
    # gain staging
    "GAIN_TARGET", "GAIN_LIMITS", "MAX_ERROR_VOLTAGE", "gain_node", "gain_param",
    "reference_error_extents", "stage_gains",
    # node naming (what the readout, the CLI and Monte Carlo read the circuit by)
    "layer_identifier", "layer_identifiers", "node_name", "target_node", "GAIN_NODE",
    "TAU_NODE", "describe_network", "safe_identifier", "format_number",
    # the IR and its writers
    "Circuit", "DeviceCircuit", "Element", "Kind", "DeviceKind", "Section", "Analysis",
    "Transistor", "NoiseSource", "Netlister", "NgspiceNetlister", "DeviceNetlister",
    "write_circuit", "is_opamp", "is_weight", "thermal_voltage", "IDEAL_OPAMP_GAIN",
    "OFFSET_OPAMP_GAIN", "MAX_GAIN_TIMES_OFFSET",
    # transforms of the IR
    "copy_circuit", "map_elements", "add_opamp_offsets", "with_nodesets", "with_options",
    "Nonideality", "Mismatch", "Quantization", "AmplifierNonideal", "ThermalNoise",
    "WireResistance", "perturbed_netlist", "apply_nonidealities", "check_nonidealities",
    "evaluate",
]
