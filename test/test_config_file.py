"""Reading YAML config files: one helper turns I/O and syntax errors into ConfigErrors naming the file."""
from __future__ import annotations

import pathlib

import pytest

import avi_ht_ros
from avi_ht_ros.common.config_file import load_yaml_mapping
from avi_ht_ros.common.errors import ConfigError


def test_mapping_and_empty_file(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("a: 1\nb: [x, y]\n")
    assert load_yaml_mapping(path) == {"a": 1, "b": ["x", "y"]}
    path.write_text("# only a comment\n")
    assert load_yaml_mapping(str(path)) == {}


@pytest.mark.parametrize("text,problem", [(None, "cannot read"), ("a: [unclosed\n", "not valid YAML"),
                                          ("- a\n- list\n", "top level must be a mapping, got list")])
def test_errors_name_the_file(tmp_path, text, problem):
    path = tmp_path / "bad.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=problem) as info:
        load_yaml_mapping(path)
    assert info.value.where == str(path)
    with pytest.raises(ConfigError) as info:
        load_yaml_mapping(path, where="model_x.yaml")
    assert info.value.where == "model_x.yaml"


CONFIG_LOADERS = ("common/glove_model.py", "common/camera.py", "driver/calibration.py", "models/config.py",
                  "retarget/config.py", "sim/world.py", "sim/imu_sim.py", "tracker/evaluate.py", "tracker/train.py")


@pytest.mark.parametrize("module", CONFIG_LOADERS)
def test_config_loaders_read_files_through_the_helper(module):
    text = (pathlib.Path(avi_ht_ros.__file__).resolve().parent / module).read_text(encoding="utf-8")
    assert "load_yaml_mapping(" in text and "yaml.safe_load(" not in text
