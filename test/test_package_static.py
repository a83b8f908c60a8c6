"""Static agreement between package.xml, CMakeLists.txt, setup.py, launch files and the code.

On a real ROS 2 install, `colcon build` runs CMakeLists.txt and `ros2 launch`
reads launch/*.py; neither can run here, so what they name is checked here.
"""
from __future__ import annotations

import ast
import importlib
import os
import pathlib
import re
import xml.etree.ElementTree as ET

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
CMAKE = (ROOT / "CMakeLists.txt").read_text()


def cmake_list(variable: str) -> list[str]:
    match = re.search(rf"set\({variable}\s+(.*?)\)", CMAKE, re.S)
    assert match, f"{variable} not set in CMakeLists.txt"
    return re.findall(r'"([^"]+)"', match.group(1))


def cmake_executables() -> dict[str, str]:
    return dict(entry.split("=", 1) for entry in cmake_list("AVI_HT_EXECUTABLES"))


def setup_py_console_scripts() -> dict[str, str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "CONSOLE_SCRIPTS" for t in node.targets):
            return dict(e.split("=", 1) for e in ast.literal_eval(node.value))
    raise AssertionError("CONSOLE_SCRIPTS not found in setup.py")


def test_package_xml_is_format3_with_required_dependencies():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "avi_ht_ros"
    assert root.find("export/build_type").text == "ament_cmake"
    deps = {e.text for e in root if e.tag.endswith("depend")}
    required = {
        "rclpy", "sensor_msgs", "geometry_msgs", "std_msgs", "visualization_msgs", "diagnostic_msgs",
        "trajectory_msgs", "tf2_ros", "tf2_msgs", "cv_bridge", "launch_ros", "rosidl_default_generators",
        "rosidl_default_runtime", "python3-numpy", "python3-scipy", "python3-yaml", "python3-torch",
    }
    assert required <= deps, f"missing from package.xml: {sorted(required - deps)}"
    groups = [e.text for e in root.findall("member_of_group")]
    assert "rosidl_interface_packages" in groups


def test_messages_listed_in_cmake_match_msg_directory_and_io():
    from avi_ht_ros.io.messages import MESSAGE_NAMES

    in_cmake = {pathlib.Path(m).stem for m in re.findall(r'"msg/([^"]+\.msg)"', CMAKE)}
    on_disk = {p.stem for p in (ROOT / "msg").glob("*.msg")}
    assert in_cmake == on_disk == set(MESSAGE_NAMES)


def test_message_fields_are_documented():
    """Every field line in msg/ carries a comment (units/frame) on it or just above it."""
    for path in (ROOT / "msg").glob("*.msg"):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            code = line.split("#", 1)[0].strip()
            if not code or "=" in code:  # blank/comment or a constant
                continue
            commented = "#" in line or (i > 0 and lines[i - 1].lstrip().startswith("#"))
            assert commented, f"{path.name}:{i + 1} field without a comment: {line!r}"


def test_cmake_and_setup_py_declare_the_same_executables():
    assert cmake_executables() == setup_py_console_scripts()


@pytest.mark.parametrize("name,target", sorted(cmake_executables().items()))
def test_every_executable_entry_point_resolves(name, target):
    module_name, function = target.split(":")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, function)), f"{name}: {target} is not callable"


@pytest.mark.parametrize("name", sorted(cmake_executables()))
def test_every_executable_is_installed(name):
    installed = ROOT / "install" / "avi_ht_ros" / "lib" / "avi_ht_ros" / name
    assert installed.is_file(), f"{installed} missing: run scripts/setup_env.sh"
    assert os.access(installed, os.X_OK), f"{installed} not executable"


def test_cmake_installs_the_share_directories():
    match = re.search(r"install\(DIRECTORY ([^\n]+)\n\s+DESTINATION share/\$\{PROJECT_NAME\}", CMAKE)
    assert match, "CMakeLists.txt must install data directories to share/${PROJECT_NAME}"
    installed = set(match.group(1).split())
    assert {"launch", "config", "rviz"} <= installed
    for directory in installed:
        assert (ROOT / directory).is_dir(), f"CMake installs {directory}/ but it does not exist"


def launch_nodes() -> list[tuple[pathlib.Path, dict]]:
    """Every ``Node(package='avi_ht_ros', ...)`` call in launch/*.py with its literal keywords.

    Module-level string constants (``PACKAGE = "avi_ht_ros"``) are resolved.
    """
    found = []
    for path in sorted((ROOT / "launch").glob("*.launch.py")):
        tree = ast.parse(path.read_text())
        constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                     for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "Node":
                kwargs = {k.arg: k.value for k in node.keywords if k.arg}
                package = kwargs.get("package")
                if isinstance(package, ast.Name):
                    package = ast.Constant(constants.get(package.id))
                if isinstance(package, ast.Constant) and package.value == "avi_ht_ros":
                    found.append((path, kwargs))
    return found


def test_launch_files_name_only_existing_executables():
    executables = set(cmake_executables())
    for path, kwargs in launch_nodes():
        executable = kwargs.get("executable")
        assert isinstance(executable, ast.Constant), f"{path.name}: executable must be a literal"
        assert executable.value in executables, f"{path.name}: unknown executable {executable.value!r}"


def test_source_tree_does_not_carry_generated_message_modules():
    """avi_ht_ros.msg must always be the rosidl-generated one (see README, Layout)."""
    assert not (ROOT / "avi_ht_ros" / "msg").exists()
    init = (ROOT / "avi_ht_ros" / "__init__.py").read_text()
    assert "extend_path" in init


def test_generated_messages_importable_from_the_checkout():
    import avi_ht_ros.msg as generated

    assert hasattr(generated, "HandPose") and hasattr(generated, "SyncedFrame")


def _literal_dicts(node_kwargs) -> list[dict]:
    """The dict literals in a Node's ``parameters=[...]`` (keys must be string constants)."""
    found = []
    parameters = node_kwargs.get("parameters")
    for element in getattr(parameters, "elts", []):
        if isinstance(element, ast.Dict):
            keys = []
            for key in element.keys:
                assert isinstance(key, ast.Constant), "parameter names in launch files must be literals"
                keys.append(key.value)
            found.append(keys)
    return found


def _config_files(node_kwargs) -> list[str]:
    names = []
    for element in getattr(node_kwargs.get("parameters"), "elts", []):
        if isinstance(element, ast.Call) and getattr(element.func, "id", "") == "config":
            names.append(element.args[0].value)
    return names


def test_launch_parameters_and_config_files_match_what_nodes_declare():
    from avi_ht_ros.nodes.params_cli import config_files, declared_parameters

    nodes = launch_nodes()
    assert {kwargs["executable"].value for _, kwargs in nodes} == {
        "camera_node", "glove_driver_node", "sync_node", "fusion_node", "sync_fusion_node", "retarget_node"}
    for path, kwargs in nodes:
        executable = kwargs["executable"].value
        declared = declared_parameters(executable)
        for keys in _literal_dicts(kwargs):
            unknown = set(keys) - set(declared)
            assert not unknown, f"{path.name}: {executable} does not declare {sorted(unknown)}"
        files = _config_files(kwargs)
        assert files == config_files(executable), f"{path.name}: {executable} should load {config_files(executable)}"
        for file in files:
            of_node = declared_parameters(file.removesuffix(".yaml"))
            document = yaml.safe_load((ROOT / "config" / file).read_text())
            in_file = document["/**"]["ros__parameters"]
            assert set(in_file) == set(of_node), f"config/{file} out of date: `avi-ht params {file[:-5]} --yaml`"
            for name, value in in_file.items():
                default = of_node[name]
                assert type(value) is type(default) or (isinstance(default, float) and isinstance(value, int)), \
                    f"config/{file}: {name} has type {type(value).__name__}, node declares {type(default).__name__}"


def test_a_composed_executable_is_launched_without_a_node_name():
    """``-r __node:=`` would give every node of the process that one name."""
    from avi_ht_ros.nodes.params_cli import COMPOSED

    launched = [kwargs for _, kwargs in launch_nodes() if kwargs["executable"].value in COMPOSED]
    assert launched and all("name" not in kwargs for kwargs in launched)


def test_launch_default_files_exist():
    text = (ROOT / "launch" / "teleop.launch.py").read_text()
    for name in re.findall(r'"(retarget_[a-z0-9_]+\.yaml)"', text):
        assert (ROOT / "config" / name).is_file(), name
    for urdf in re.findall(r'"([a-z0-9_]+/[a-z0-9_]+\.urdf)"', text):
        assert (ROOT / "robots" / urdf).is_file(), urdf
    assert (ROOT / "rviz" / "avi_ht.rviz").is_file()


def test_rviz_and_recording_name_only_topics_the_graph_publishes():
    from avi_ht_ros.common import topics

    published = {topics.IMAGE, topics.CAMERA_INFO, topics.TF, topics.TF_STATIC, topics.DIAGNOSTICS}
    for side in topics.SIDES:
        for name in (topics.GLOVE_SAMPLES, topics.SYNCED_FRAME, topics.HAND_POSE, topics.HAND_GROUND_TRUTH,
                     topics.HAND_JOINT_STATES, topics.HAND_MARKERS, topics.ROBOT_JOINT_COMMANDS,
                     topics.ROBOT_JOINT_STATES, topics.PINCH_EVENTS, "robot/robot_description"):
            published.add(topics.hand_topic(side, name))
    rviz = yaml.safe_load((ROOT / "rviz" / "avi_ht.rviz").read_text())
    displays = rviz["Visualization Manager"]["Displays"]
    shown = [d[key]["Value"] for d in displays for key in ("Topic", "Description Topic") if key in d]
    assert shown and set(shown) <= published, sorted(set(shown) - published)
    assert rviz["Visualization Manager"]["Global Options"]["Fixed Frame"] == topics.HEAD_FRAME
    record = ast.parse((ROOT / "launch" / "record.launch.py").read_text())
    recorded = next(ast.literal_eval(n.value) for n in ast.walk(record)
                    if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "RECORDED_TOPICS")
    assert set(recorded) <= published and topics.TF_STATIC in recorded and topics.IMAGE in recorded


def test_readme_documents_every_node_parameter():
    from avi_ht_ros.nodes.params_cli import NODE_MODULES, declared_parameters

    readme = (ROOT / "README.md").read_text()
    for executable in NODE_MODULES:
        missing = [name for name in declared_parameters(executable) if f"`{name}`" not in readme]
        assert not missing, f"README lacks {executable} parameters {missing}: paste `avi-ht params`"


def test_wheel_mode_graph_runner_starts_what_the_launch_files_start():
    """avi_ht_ros.graph (demo/bench/integration without ros2 launch) mirrors sim/teleop.launch.py."""
    from avi_ht_ros.graph import sim_graph
    from avi_ht_ros.nodes.params_cli import declared_parameters

    specs = sim_graph("/nonexistent/bag", "right") + sim_graph("/nonexistent/bag", "right", composed=False)
    launched = {(kwargs["executable"].value, getattr(kwargs.get("name"), "value", None))
                for _, kwargs in launch_nodes()}
    assert {(s.executable, s.name) for s in specs} == launched
    assert "sync_fusion_node" in {s.executable for s in sim_graph("/nonexistent/bag", "right")}, \
        "sim_graph's default is the launch files' default (composed:=true)"
    for spec in specs:
        unknown = {k for k, _ in spec.parameters} - set(declared_parameters(spec.executable))
        assert not unknown, f"graph.sim_graph passes undeclared {spec.executable} parameters {unknown}"
