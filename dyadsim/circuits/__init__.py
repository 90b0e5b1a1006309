"""Circuits stage: network -> circuit IR -> netlist text (ngspice dialect)."""

from ._compiler import DEFAULT_OPTIONS, Netlist, compile_netlist, layer_identifier
from ._ir import Analysis, Circuit, Element, Kind, Section
from ._writer import Netlister, NgspiceNetlister
from ._device import BJTModel, OpAmp, compile_device_netlist
from ._nonideal import (
    AmplifierNonideal, Mismatch, Quantization, ThermalNoise, WireResistance, perturbed_netlist,
)

__all__ = ["compile_netlist", "Netlist", "DEFAULT_OPTIONS", "layer_identifier", "Circuit",
           "Element", "Kind", "Section", "Analysis", "Netlister", "NgspiceNetlister",
           "compile_device_netlist", "OpAmp", "BJTModel", "Mismatch", "Quantization",
           "AmplifierNonideal", "ThermalNoise", "WireResistance", "perturbed_netlist"]
