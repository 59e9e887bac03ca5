"""src/profiles.py, the one home of the shell scripts' defaults: precedence, the values it derives from the stages'
dataclasses and the demo, its one-line errors, and that the scripts read no setting it does not define."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from src import profiles
from src.profiles import SETTING_BY_NAME, resolve, shell_value

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
ALL_SCRIPTS = sorted(SCRIPTS.glob("*.sh")) + sorted(SCRIPTS.glob("*/*.sh"))


def test_precedence_environment_script_profile_default():
    recipe = {"PROFILE": "tiny", "SAMPLE_NUM": "15", "MAX_RESAMPLE_NUM": "0"}
    s = resolve(recipe, env={"SAMPLE_NUM": "3", "MIN_CORRECT_NUM": "", "UNRELATED": "x"})
    assert (s["SAMPLE_NUM"], s.source["SAMPLE_NUM"]) == ("3", "environment")
    assert (s["MAX_RESAMPLE_NUM"], s.source["MAX_RESAMPLE_NUM"]) == ("0", "script")
    assert (s["LEARNING_RATE"], s.source["LEARNING_RATE"]) == ("1e-3", "profile tiny")
    # an empty value counts as unset, as bash's ${NAME:=...}
    assert (s["MIN_CORRECT_NUM"], s.source["MIN_CORRECT_NUM"]) == ("4", "default")
    assert s["EXP_NAME"] == "state_reset_sample_3_correct_4_max_0_orig_false_preiter_false"


def test_defaults_may_name_other_settings_and_user_values_are_literal():
    s = resolve({"PROFILE": "tiny", "IWSI_VARIANT": "lmsi", "EXP_TAG": "{IWSI_VARIANT}"},
                env={"OUTPUT_DIR": "/o", "EVAL_EXTRA_ARGS": "--x {MODE}"})
    assert s["EXP_TAG"] == "lmsi" and s["TINY_BASE_DIR"] == "/o/demo"
    assert s["MODEL_PATH"] == "/o/demo/base/model" and s["DS_MODEL"] == s["MODEL_PATH"]
    assert s["EXP_DIR"].startswith("/o/tiny_cot/lmsi_sample_8")
    assert s["EVAL_EXTRA_ARGS"] == "--x {MODE}"  # the user's value is never formatted
    # a given model or data folder is used as it is: the tiny profile then builds nothing
    assert s["TINY_SETUP"] == "1" and resolve({"PROFILE": "tiny"}, env={"MODEL_PATH": "/m"})["TINY_SETUP"] == "0"


def test_the_paper_values_come_from_the_stages_dataclasses():
    from src.sampling.loop import SamplingConfig
    from src.training import TrainConfig

    s = resolve({"PROFILE": "llama3"}, env={"GPU_IDS": "0 1 2 3 4 5 6 7"})
    sampling, train = SamplingConfig(), TrainConfig("m", "f", "d")
    assert s["SAMPLE_NUM"] == str(sampling.sample_num) and float(s["TEMPERATURE"]) == sampling.temperature
    assert float(s["LEARNING_RATE"]) == train.learning_rate and s["BATCH_SIZE"] == str(train.batch_size)
    assert (s["NUM_GPUS"], s["DEVICE_NUM"], s["TRAIN_PROCS"]) == ("8", "8", "8")


@pytest.mark.parametrize(("value", "text"), [
    (1e-5, "1e-5"), (1e-3, "1e-3"), (5e-7, "5e-7"), (0.7, "0.7"), (0.05, "0.05"), (0.98, "0.98"), (0.0, "0"),
    (2.0, "2"), (True, "true"), (False, "false"), (None, ""), (1024, "1024"), ("auto", "auto")])
def test_shell_values_are_written_as_the_scripts_write_them(value, text):
    assert shell_value(value) == text


@pytest.mark.parametrize(("env", "message"), [
    ({"PROFILE": "laptop"}, "unknown PROFILE 'laptop' (llama3 or tiny)"),
    ({"STRATEGY": "state-reset"}, "unknown STRATEGY 'state-reset' (vanilla, answer_driven,"),
    ({"MODE": "cot2"}, "unknown MODE 'cot2' (cot, pot)"),
    ({"GLOBAL_BATCH": "lots"}, "GLOBAL_BATCH must be a whole number, got 'lots'"),
    ({"TINY_SETUP": "1"}, "TINY_SETUP=1 needs PROFILE=tiny"),
])
def test_a_bad_setting_stops_the_script_with_one_line_before_any_stage(env, message, tmp_path):
    base = {k: v for k, v in os.environ.items() if k not in SETTING_BY_NAME}
    proc = subprocess.run(["bash", str(SCRIPTS / "llama3" / "cot_train_state_reset.sh")], capture_output=True,
                          text=True, timeout=60, env={**base, "DRY_RUN": "1", "OUTPUT_DIR": str(tmp_path), **env})
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr
    assert not any(tmp_path.iterdir())


def test_a_script_setting_no_one_knows_is_refused():
    with pytest.raises(profiles.UsageError, match="SAMPLE_NUMBER"):
        resolve({"PROFILE": "tiny", "SAMPLE_NUMBER": "3"}, env={})


def test_dry_run_shows_every_setting_and_where_it_came_from(tmp_path):
    base = {k: v for k, v in os.environ.items() if k not in SETTING_BY_NAME}
    proc = subprocess.run(["bash", str(SCRIPTS / "tiny" / "cot_train_tripost.sh")], capture_output=True, text=True,
                          timeout=60, env={**base, "DRY_RUN": "1", "OUTPUT_DIR": str(tmp_path), "SAMPLE_NUM": "2"})
    assert proc.returncode == 0, proc.stderr
    shown = [line[len("[setting] "):] for line in proc.stdout.splitlines() if line.startswith("[setting] ")]
    assert [line.split("=", 1)[0] for line in shown] == list(SETTING_BY_NAME)
    for line in ("SAMPLE_NUM=2  (environment)", "TRIPOST_MAX_STEPS=100  (script)", "MAX_STEPS=200  (profile tiny)",
                 "MIN_CORRECT_NUM=4  (default)"):
        assert line in shown


def test_the_scripts_write_no_default_and_read_no_unknown_setting():
    """Every default is in src/profiles.py; a name a script reads is a setting, a derived value or its own."""
    own = {"GSI_REPO", "PYTHONPATH", "TOKENIZERS_PARALLELISM", "PYTHON", "ACCELERATE", "ITER_DIR", "TRAIN_FILE",
           "STAGE_INPUTS", "STAGE_OUTPUTS", "STAGE_RESUMABLE", "IWSI_VALID", "GSI_TEACHER_PID", "BASH_SOURCE",
           "CUDA_VISIBLE_DEVICES", "GSI_SUMMARY", "GSI_SETTING_LINES"}
    derived = set(profiles.derived(resolve({"PROFILE": "tiny"}, env={})))
    for script in ALL_SCRIPTS:
        if script.parent.name == "cluster":  # the shard and multi-node launchers take their own variables
            continue
        code = "\n".join(line for line in script.read_text().splitlines() if not line.lstrip().startswith("#"))
        assert ":=" not in code, f"{script.name} writes a default; it belongs in src/profiles.py"
        read = set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", code)) - own - derived - {"GSI_FILES_"}
        assert read <= set(SETTING_BY_NAME), f"{script.name} reads {sorted(read - set(SETTING_BY_NAME))}"


def test_list_shows_every_setting_with_its_help():
    out = subprocess.run([sys.executable, "-m", "src.profiles", "list", "--profile", "tiny"], cwd=REPO,
                         capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    assert [line.split()[0] for line in out] == list(SETTING_BY_NAME)
    assert any(line.startswith("LEARNING_RATE") and "'1e-3'" in line and "peak learning rate" in line
               for line in out)
