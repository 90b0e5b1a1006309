"""Circuits stage: network -> circuit IR -> netlist text (ngspice dialect)."""

from ._compiler import (
    DEFAULT_OPTIONS, GAIN_NODE, TAU_NODE, Netlist, compile_netlist, describe_network,
    layer_identifier, layer_identifiers, node_name, target_node,
)
from ._ir import Analysis, Circuit, Element, Kind, Section, safe_identifier
from ._writer import Netlister, NgspiceNetlister, format_number
from ._device import (
    BJTModel, DeviceCircuit, DeviceKind, DeviceNetlister, NoiseSource, OpAmp, Transistor,
    add_opamp_offsets, compile_device_netlist, copy_circuit, is_opamp, is_weight,
    thermal_voltage, write_circuit,
)
from ._nonideal import (
    AmplifierNonideal, Mismatch, Nonideality, Quantization, ThermalNoise, WireResistance,
    apply_nonidealities, check_nonidealities, evaluate, map_elements, perturbed_netlist,
)

__all__ = [
    # compiling
    "compile_netlist", "Netlist", "DEFAULT_OPTIONS", "compile_device_netlist", "OpAmp", "BJTModel",
    # node naming (what the readout, the CLI and Monte Carlo read the circuit by)
    "layer_identifier", "layer_identifiers", "node_name", "target_node", "GAIN_NODE",
    "TAU_NODE", "describe_network", "safe_identifier", "format_number",
    # the IR and its writers
    "Circuit", "DeviceCircuit", "Element", "Kind", "DeviceKind", "Section", "Analysis",
    "Transistor", "NoiseSource", "Netlister", "NgspiceNetlister", "DeviceNetlister",
    "write_circuit", "copy_circuit", "is_opamp", "is_weight", "thermal_voltage",
    # transforms of the IR
    "Nonideality", "Mismatch", "Quantization", "AmplifierNonideal", "ThermalNoise",
    "WireResistance", "perturbed_netlist", "apply_nonidealities", "check_nonidealities",
    "map_elements", "evaluate", "add_opamp_offsets",
]
