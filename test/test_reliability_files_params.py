"""Fault injection, files and parameters: every bad input gives one clear error naming the
file or parameter, never a traceback from deep in the stack.

* Each node (real rclpy) is started with malformed YAML, wrong-shape calibrations, a URDF
  with missing links, missing / corrupt / truncated / foreign / pickle-payload model files and
  out-of-range parameters: construction raises an ``AviHtError`` whose one-line message
  names the file or parameter (``base.run_node`` prints exactly that line and exits 2).
* The installed executables are run on one bad input each (in parallel) to check what a
  user sees: exit code 2, one line on stderr naming the culprit, no traceback.
* ``avi-ht`` subcommands on bad files: exit code 2 and one line.
* Parameter changes on live nodes through the ``set_parameters`` service (what
  ``ros2 param set`` calls): read-only, out-of-range, non-finite and wrong-type values
  are rejected with a reason naming the parameter.
"""
from __future__ import annotations

import os
import pathlib
import pickle
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from rclpy.parameter import Parameter

from avi_ht_ros.common.errors import AviHtError
from avi_ht_ros.common.glove_model import GloveModel
from avi_ht_ros.common.paths import config_path
from avi_ht_ros.driver.calibration import MountingCalibration
from avi_ht_ros.models.checkpoint import save_checkpoint
from avi_ht_ros.models.config import ModelConfig
from avi_ht_ros.models.factory import build_model
from reliability_log import record

pytestmark = pytest.mark.ros
ROOT = pathlib.Path(__file__).resolve().parents[1]


class Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/avi_ht_pwned",))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every bad file of the campaign, built once."""
    d = tmp_path_factory.mktemp("bad_files")
    f = {}
    f["malformed.yaml"] = d / "malformed.yaml"
    f["malformed.yaml"].write_text("name: glove\nsites: [ {name: a, bone: palm\n  - oops: : :\n")
    glove_text = config_path("glove_12imu.yaml").read_text()
    f["glove_sites_not_a_list.yaml"] = d / "glove_sites_not_a_list.yaml"
    f["glove_sites_not_a_list.yaml"].write_text(re.sub(r"(?ms)^sites:.*", "sites: twelve\n", glove_text))
    f["glove_bad_bone.yaml"] = d / "glove_bad_bone.yaml"
    f["glove_bad_bone.yaml"].write_text(glove_text.replace("bone: index_proximal", "bone: index_tentacle", 1))
    f["binary.yaml"] = d / "binary.yaml"
    f["binary.yaml"].write_bytes(bytes(range(256)) * 4)
    # mounting calibrations: 11 IMUs (the glove has 12), and one with a 2-value quaternion
    import yaml
    glove = GloveModel.reference()
    from scipy.spatial.transform import Rotation
    calibration = MountingCalibration(
        rotations=Rotation.identity(glove.num_sensors), gyro_bias=np.zeros((glove.num_sensors, 3)),
        sensor_names=tuple(glove.sensor_names), residual_deg=np.zeros(glove.num_sensors),
        accel_norm_m_s2=np.full(glove.num_sensors, 9.81), common_tilt_deg=0.0, handedness="right").to_dict()
    eleven = dict(calibration, sensors=calibration["sensors"][:11])
    f["calibration_11_sensors.yaml"] = d / "calibration_11_sensors.yaml"
    f["calibration_11_sensors.yaml"].write_text(yaml.safe_dump(eleven))
    short_quat = dict(calibration, sensors=[dict(s) for s in calibration["sensors"]])
    short_quat["sensors"][3]["rotation_xyzw"] = [0.0, 1.0]
    f["calibration_short_quaternion.yaml"] = d / "calibration_short_quaternion.yaml"
    f["calibration_short_quaternion.yaml"].write_text(yaml.safe_dump(short_quat))
    # camera calibration with an 8-value camera matrix
    camera_text = config_path("camera_sim.yaml").read_text()
    f["camera_k_8_values.yaml"] = d / "camera_k_8_values.yaml"
    f["camera_k_8_values.yaml"].write_text(camera_text.replace(
        "data: [300.0, 0.0, 319.5, 0.0, 300.0, 239.5, 0.0, 0.0, 1.0]", "data: [300.0, 0.0, 319.5, 0.0, 300.0, 239.5, 0.0, 0.0]"))
    # model files
    torch.manual_seed(0)
    model = d / "good.pt"
    save_checkpoint(model, build_model(ModelConfig(type="avi_ht"), glove))
    data = model.read_bytes()
    f["missing.pt"] = d / "missing.pt"
    f["random_bytes.pt"] = d / "random_bytes.pt"
    f["random_bytes.pt"].write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    f["truncated.pt"] = d / "truncated.pt"
    f["truncated.pt"].write_bytes(data[: len(data) // 2])
    f["flipped_bytes.pt"] = d / "flipped_bytes.pt"
    flipped = bytearray(data)
    for i in range(1000, len(flipped), len(flipped) // 50):
        flipped[i] ^= 0xFF
    f["flipped_bytes.pt"].write_bytes(bytes(flipped))
    f["text.pt"] = d / "text.pt"
    f["text.pt"].write_text("hello world, this is not a checkpoint\n" * 10)
    f["plain_tensor.pt"] = d / "plain_tensor.pt"
    torch.save(torch.zeros(3), f["plain_tensor.pt"])
    f["pickle_payload.pt"] = d / "pickle_payload.pt"
    f["pickle_payload.pt"].write_bytes(pickle.dumps({"format": "avi_ht_ros.model_checkpoint", "version": 1,
                                                     "model_config": Payload()}, protocol=2))
    f["pickle_payload_zip.pt"] = d / "pickle_payload_zip.pt"
    torch.save({"format": "avi_ht_ros.model_checkpoint", "version": 1, "state_dict": Payload()},
               f["pickle_payload_zip.pt"])
    # retargeting: a URDF without the thumb tip link, a broken URDF, a config pointing at them
    urdf = ROOT / "robots" / "avi_hand_16dof" / "avi_hand_16dof.urdf"
    text = urdf.read_text()
    robot = ET.fromstring(text)
    for element in list(robot):
        child = element.find("child")
        if element.get("name") == "thumb_tip" or (child is not None and child.get("link") == "thumb_tip"):
            robot.remove(element)
    no_tip = ET.tostring(robot, encoding="unicode")
    assert "thumb_tip" not in no_tip
    f["urdf_missing_link.urdf"] = d / "urdf_missing_link.urdf"
    f["urdf_missing_link.urdf"].write_text(no_tip)
    f["urdf_truncated.urdf"] = d / "urdf_truncated.urdf"
    f["urdf_truncated.urdf"].write_text(text[: len(text) // 3])
    retarget = config_path("retarget_avi_hand_16dof.yaml").read_text()
    for name, target in (("retarget_urdf_missing_link.yaml", f["urdf_missing_link.urdf"]),
                         ("retarget_urdf_truncated.yaml", f["urdf_truncated.urdf"]),
                         ("retarget_urdf_missing.yaml", d / "no_such_robot.urdf")):
        f[name] = d / name
        f[name].write_text(retarget.replace("../robots/avi_hand_16dof/avi_hand_16dof.urdf", str(target)))
    f["retarget_not_yaml.yaml"] = d / "retarget_not_yaml.yaml"
    f["retarget_not_yaml.yaml"].write_text(retarget.replace("  method: dexpilot", "  method: [dexpilot"))
    return f


# (node, parameter overrides (values may name a file key), what the message must name)
def cases():
    glove, camera, fusion, retarget, sync = ("glove_driver_node", "camera_node", "fusion_node", "retarget_node",
                                             "sync_node")
    return [
        (glove, {"glove_config": "@malformed.yaml"}, "malformed.yaml"),
        (glove, {"glove_config": "@glove_sites_not_a_list.yaml"}, "glove_sites_not_a_list.yaml"),
        (glove, {"glove_config": "@glove_bad_bone.yaml"}, "glove_bad_bone.yaml"),
        (glove, {"glove_config": "@binary.yaml"}, "binary.yaml"),
        (glove, {"glove_config": "/nonexistent/glove.yaml"}, "/nonexistent/glove.yaml"),
        (glove, {"calibration_file": "@calibration_11_sensors.yaml"}, "calibration_11_sensors.yaml"),
        (glove, {"calibration_file": "@calibration_short_quaternion.yaml"}, "calibration_short_quaternion.yaml"),
        (glove, {"calibration_file": "@malformed.yaml"}, "malformed.yaml"),
        (glove, {"serial.baudrate": 0}, "serial.baudrate"),
        (glove, {"serial.reconnect_initial_s": 5.0, "serial.reconnect_max_s": 1.0}, "reconnect_max_s"),
        (glove, {"health.dead_after_s": -1.0}, "health.dead_after_s"),
        (glove, {"side": "middle"}, "side"),
        (camera, {"calibration_file": "@malformed.yaml"}, "malformed.yaml"),
        (camera, {"calibration_file": "@camera_k_8_values.yaml"}, "camera_k_8_values.yaml"),
        (camera, {"fps": 0.0}, "fps"),
        (fusion, {"model_path": "@missing.pt"}, "missing.pt"),
        (fusion, {"model_path": "@random_bytes.pt"}, "random_bytes.pt"),
        (fusion, {"model_path": "@truncated.pt"}, "truncated.pt"),
        (fusion, {"model_path": "@flipped_bytes.pt"}, "flipped_bytes.pt"),
        (fusion, {"model_path": "@text.pt"}, "text.pt"),
        (fusion, {"model_path": "@plain_tensor.pt"}, "plain_tensor.pt"),
        (fusion, {"model_path": "@pickle_payload.pt"}, "pickle_payload.pt"),
        (fusion, {"model_path": "@pickle_payload_zip.pt"}, "pickle_payload_zip.pt"),
        (fusion, {"tracker.crop_size": 4}, "tracker.crop_size"),
        (fusion, {"hand_scale": float("nan")}, "hand_scale"),
        (retarget, {"config": "@retarget_urdf_missing_link.yaml"}, "thumb_tip"),
        (retarget, {"config": "@retarget_urdf_truncated.yaml"}, "urdf_truncated.urdf"),
        (retarget, {"config": "@retarget_urdf_missing.yaml"}, "no_such_robot.urdf"),
        (retarget, {"config": "@retarget_not_yaml.yaml"}, "retarget_not_yaml.yaml"),
        (retarget, {"control_rate_hz": 1e5}, "control_rate_hz"),
        (sync, {"sync.min_valid_samples": 20}, "sync.min_valid_samples"),
        (sync, {"sync.window_length": 0}, "sync.window_length"),
        (sync, {"glove_config": "@malformed.yaml"}, "malformed.yaml"),
    ]


NODE_CLASSES = {
    "glove_driver_node": ("avi_ht_ros.nodes.glove_driver_node", "GloveDriverNode"),
    "camera_node": ("avi_ht_ros.nodes.camera_node", "CameraNode"),
    "fusion_node": ("avi_ht_ros.nodes.fusion_node", "FusionNode"),
    "retarget_node": ("avi_ht_ros.nodes.retarget_node", "RetargetNode"),
    "sync_node": ("avi_ht_ros.nodes.sync_node", "SyncNode"),
}


def resolve(value, files):
    return str(files[value[1:]]) if isinstance(value, str) and value.startswith("@") else value


def assert_clear(message: str, names: str) -> None:
    """Names the culprit in its first line; no traceback. (YAML syntax errors add PyYAML's
    position lines: 'in "<file>", line L, column C' and what was expected.)"""
    lines = message.strip().splitlines()
    assert names in lines[0], f"first line does not name {names!r}: {message}"
    assert "Traceback" not in message and 'File "' not in message, message
    assert len(lines) <= 5 and len(message) < 800, message


def test_every_bad_file_or_parameter_stops_the_node_with_one_clear_line(rclpy_context, files):
    import importlib

    results = []
    for node_name, params, names in cases():
        module, cls = NODE_CLASSES[node_name]
        node_cls = getattr(importlib.import_module(module), cls)
        overrides = [Parameter(k, value=resolve(v, files)) for k, v in params.items()]
        with pytest.raises(AviHtError) as info:
            node = node_cls(context=rclpy_context, namespace="right", parameter_overrides=overrides)
            node.destroy_node()
        message = str(info.value)
        assert_clear(message, names)
        results.append((node_name, ", ".join(f"{k}={os.path.basename(str(resolve(v, files)))}"
                                             for k, v in params.items()), message))
    assert not pathlib.Path("/tmp/avi_ht_pwned").exists()  # the pickle payloads never ran
    record("files and parameters at node start-up (rclpy)",
           "malformed/binary YAML, wrong glove structure, unknown bone, missing files, 11-sensor and "
           "short-quaternion calibrations, 8-value camera matrix, missing/random/truncated/bit-flipped/foreign/"
           "pickle-payload model files, URDF without a link / truncated / missing, out-of-range and "
           "cross-field parameters", len(results),
           f"{len(results)}/{len(results)} refused with one line naming the file or parameter; pickle payloads "
           "refused before running", messages=[f"{n} [{p}]: {m}" for n, p, m in results])


def run_installed(executable: str, params: dict) -> subprocess.Popen:
    from avi_ht_ros.graph import executable_path

    args = [str(executable_path(executable)), "--ros-args"]
    for key, value in params.items():
        args += ["-p", f"{key}:={value}"]
    return subprocess.Popen(["nice", "-n", "10", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "RCUTILS_LOGGING_BUFFERED_STREAM": "1"})


def test_installed_executables_exit_2_with_one_line_and_no_traceback(files):
    runs = {
        "glove_driver_node": {"calibration_file": files["calibration_11_sensors.yaml"]},
        "fusion_node": {"model_path": files["pickle_payload_zip.pt"]},
        "retarget_node": {"config": files["retarget_urdf_missing_link.yaml"]},
        "camera_node": {"calibration_file": files["malformed.yaml"]},
        "sync_node": {"sync.window_length": 0},
    }
    processes = {name: run_installed(name, params) for name, params in runs.items()}  # in parallel
    seen = {}
    for name, process in processes.items():
        try:
            _, stderr = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        errors = [line for line in stderr.splitlines() if "error:" in line]
        assert process.returncode == 2, (name, process.returncode, stderr[-2000:])
        assert "Traceback" not in stderr, (name, stderr[-3000:])
        assert len(errors) == 1 and errors[0].startswith(f"[{name}] error: "), (name, stderr)
        seen[name] = errors[0]
    assert "calibration_11_sensors.yaml" in seen["glove_driver_node"]
    assert "pickle_payload_zip.pt" in seen["fusion_node"] and "refused" in seen["fusion_node"]
    assert "thumb_tip" in seen["retarget_node"] and "retarget_urdf_missing_link.yaml" in seen["retarget_node"]
    assert "malformed.yaml" in seen["camera_node"] and "sync.window_length" in seen["sync_node"]
    record("installed executables on bad input", "one bad file/parameter per node executable", len(runs),
           "each exits with code 2 and exactly one 'error:' line naming the culprit on stderr, no traceback",
           stderr=seen)


def test_avi_ht_commands_refuse_bad_files_with_one_line(files, capsys, tmp_path):
    from avi_ht_ros import cli

    runs = [
        (["eval", str(files["pickle_payload.pt"]), "--benchmark"], "pickle_payload.pt"),
        (["eval", str(files["truncated.pt"]), "--bags", str(tmp_path)], "truncated.pt"),
        (["train", "--config", str(files["malformed.yaml"]), "--out", str(tmp_path / "run")], "malformed.yaml"),
        (["eval", str(files["missing.pt"]), "--benchmark", str(files["malformed.yaml"])], "missing.pt"),
    ]
    lines = []
    for argv, names in runs:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"avi-ht {argv[0]}: error:"), err
        assert_clear(err, names)
        lines.append(err)
    record("avi-ht commands on bad files", "pickle-payload / truncated / missing checkpoint, malformed YAML",
           len(runs), "exit code 2, one 'avi-ht <cmd>: error:' line naming the file", messages=lines)


# ====================================================================== runtime parameter changes

def set_parameters(h, node_name: str, params: list[Parameter]):
    from rcl_interfaces.srv import SetParameters

    client = h.probe.create_client(SetParameters, f"/right/{node_name}/set_parameters")
    assert h.spin_until(client.service_is_ready, 10.0)
    future = client.call_async(SetParameters.Request(parameters=[p.to_parameter_msg() for p in params]))
    assert h.spin_until(future.done, 10.0)
    return future.result().results


def test_out_of_range_runtime_parameter_changes_are_rejected_with_a_reason(rclpy_context):
    from avi_ht_ros.nodes.retarget_node import RetargetNode
    from avi_ht_ros.nodes.sync_node import SyncNode
    from node_harness import Harness

    sync = SyncNode(context=rclpy_context, namespace="right")
    retarget = RetargetNode(context=rclpy_context, namespace="right")
    h = Harness(rclpy_context, sync, retarget)
    attempts = [
        ("glove_camera_sync", Parameter("sync.time_offset_s", value=50.0), ("sync.time_offset_s", "range")),
        ("glove_camera_sync", Parameter("sync.time_offset_s", value=float("nan")), ("sync.time_offset_s", "range")),
        ("glove_camera_sync", Parameter("sync.time_offset_s", value=float("inf")), ("sync.time_offset_s", "range")),
        ("glove_camera_sync", Parameter("sync.time_offset_s", value="soon"), ("type",)),
        ("glove_camera_sync", Parameter("sync.window_length", value=5), ("sync.window_length", "read-only")),
        ("glove_camera_sync", Parameter("side", value="left"), ("side", "read-only")),
        ("retarget", Parameter("control_rate_hz", value=5000.0), ("control_rate_hz", "read-only")),
        ("retarget", Parameter("method", value="magic"), ("method", "read-only")),
    ]
    reasons = []
    try:
        for node_name, parameter, words in attempts:
            (result,) = set_parameters(h, node_name, [parameter])
            assert not result.successful, (parameter.name, parameter.value)
            for word in words:
                assert word in result.reason, (parameter.name, result.reason)
            reasons.append(f"{parameter.name}={parameter.value!r}: {result.reason}")
        # the nodes still run with their start-up values
        assert sync.synchronizer.time_offset_s == 0.0 and sync.get_parameter("sync.window_length").value == 14
        assert retarget.params.control_rate_hz == 100.0
    finally:
        h.close()
    record("runtime parameter changes on live nodes (set_parameters service)",
           "out-of-range, NaN, inf, wrong-type values for the one writable parameter; writes to read-only ones",
           len(attempts), f"{len(attempts)}/{len(attempts)} rejected with a reason naming the parameter (except "
           "rclpy's wrong-type reason, which names type codes only); nodes keep their values", reasons=reasons)


def test_accepted_runtime_parameter_change_takes_effect(rclpy_context):
    from avi_ht_ros.nodes.sync_node import SyncNode
    from node_harness import Harness

    sync = SyncNode(context=rclpy_context, namespace="right",
                    parameter_overrides=[Parameter("time_offset_mode", value="fixed")])
    h = Harness(rclpy_context, sync)
    try:
        (result,) = set_parameters(h, "glove_camera_sync", [Parameter("sync.time_offset_s", value=0.05)])
        h.spin_for(0.2)
        assert result.successful
        record("runtime parameter change in range (set_parameters service)", "sync.time_offset_s = 0.05 s", 1,
               f"accepted and applied: parameter reads {sync.get_parameter('sync.time_offset_s').value}, "
               f"synchronizer uses {sync.synchronizer.time_offset_s} s")
        assert sync.synchronizer.time_offset_s == pytest.approx(0.05)
        assert sync.offset_estimator.estimate.offset_s == pytest.approx(0.05)
    finally:
        h.close()
