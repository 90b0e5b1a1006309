"""Circuits stage: network -> circuit IR -> netlist text (ngspice dialect)."""

from ._compiler import DEFAULT_OPTIONS, Netlist, compile_netlist, layer_identifier
from ._ir import Analysis, Circuit, Element, Kind, Section
from ._writer import Netlister, NgspiceNetlister

__all__ = ["compile_netlist", "Netlist", "DEFAULT_OPTIONS", "layer_identifier", "Circuit",
           "Element", "Kind", "Section", "Analysis", "Netlister", "NgspiceNetlister"]
