"""``avi-ht params``: every node's parameters (the README tables and the per-node config YAMLs)."""
from __future__ import annotations

import argparse
import importlib

import yaml

from avi_ht_ros.common.params import param_specs, params_markdown

#: executable name -> node module (each defines PARAMETER_SETS); the launch files use these names
NODE_MODULES = {
    "camera_node": "avi_ht_ros.nodes.camera_node",
    "glove_driver_node": "avi_ht_ros.nodes.glove_driver_node",
    "sync_node": "avi_ht_ros.nodes.sync_node",
    "fusion_node": "avi_ht_ros.nodes.fusion_node",
    "retarget_node": "avi_ht_ros.nodes.retarget_node",
    "recorder_node": "avi_ht_ros.nodes.recorder_node",
}

#: executables that run several of the nodes above in one process -> those nodes' executables
#: (parameters: the union, from each node's config file)
COMPOSED = {"sync_fusion_node": ("sync_node", "fusion_node")}


def node_executables(executable: str) -> tuple[str, ...]:
    """The node executables whose nodes ``executable`` runs (itself, unless it is composed)."""
    if executable in COMPOSED:
        return COMPOSED[executable]
    if executable not in NODE_MODULES:
        raise KeyError(f"unknown node executable {executable!r}")
    return (executable,)


def config_files(executable: str) -> list[str]:
    """The config/ parameter files ``executable`` loads (launch files, :mod:`avi_ht_ros.graph`)."""
    return [f"{name}.yaml" for name in node_executables(executable)]


def parameter_sets(executable: str):
    return importlib.import_module(NODE_MODULES[executable]).PARAMETER_SETS


def declared_parameters(executable: str) -> dict[str, object]:
    """``{full parameter name: default}`` a node declares (a composed executable: all its nodes';
    a name two of them declare has one default)."""
    declared: dict[str, object] = {}
    for node in node_executables(executable):
        for prefix, cls in parameter_sets(node):
            for spec in param_specs(cls):
                name = prefix + spec.name
                if name in declared and declared[name] != spec.ros_default:
                    raise ValueError(f"{executable}: {name} has defaults {declared[name]!r} and {spec.ros_default!r}")
                declared[name] = spec.ros_default
    return declared


def defaults_yaml(executable: str) -> str:
    """A ROS 2 parameter file with every parameter of the node at its default."""
    nested: dict = {}
    for name, default in declared_parameters(executable).items():
        nested[name] = default
    return yaml.safe_dump({"/**": {"ros__parameters": nested}}, sort_keys=False)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("node", nargs="?", choices=sorted(NODE_MODULES), help="one node (default: all)")
    parser.add_argument("--yaml", action="store_true", help="print a parameter file with the defaults instead")


def run(args: argparse.Namespace) -> int:
    for executable in [args.node] if args.node else list(NODE_MODULES):
        if args.yaml:
            print(f"# {executable}\n{defaults_yaml(executable)}")
            continue
        print(f"### `{executable}`\n")
        for prefix, cls in parameter_sets(executable):
            print(params_markdown(cls, prefix) + "\n")
    return 0
