"""Start-up imports: what pydicom imports eagerly but networking never uses runs on first use, and everything
pydicom and the landing layer do still works in that process (``airflow_dicom.dimse.deferred_imports``).

Each case runs in a fresh interpreter: what is deferred depends on what was imported before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# What a network command imports, then every feature that needs a deferred module, in the same process.
FEATURES = """
import io, json, sys, tempfile
from pathlib import Path
import airflow_dicom.dimse.send  # what `airflow-dicom send` imports before it sends
from airflow_dicom.dimse.deferred_imports import deferred_modules
deferred_at_start = deferred_modules()
import inspect
inspect.getmodule(json.dumps)  # walks sys.modules reading __file__: runs nothing
deferred_after_inspect = deferred_modules()
finder_left = [f for f in sys.meta_path if type(f).__module__ == "airflow_dicom.dimse.deferred_imports"]
numpy_ran_at_start = "numpy" in sys.modules and "numpy" not in deferred_at_start

import numpy as np
import pydicom
from pydicom import config
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, RLELossless
from airflow_dicom.testing import make_instance

def decoded(ds):
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue())).pixel_array

native = make_instance(transfer_syntax=ExplicitVRLittleEndian, pixel_bytes=4096, seed=5)
pixels = decoded(native)
raw = np.frombuffer(native.PixelData, dtype=pixels.dtype.newbyteorder("<"))
raw = raw.reshape(native.Rows, native.Columns)
rle = decoded(make_instance(transfer_syntax=RLELossless, pixel_bytes=4096, seed=5))

config.settings.reading_validation_mode = config.WARN
config.DS_numpy(True)
ds_numpy = config.use_DS_numpy
config.DS_numpy(False)
ct_small = pydicom.dcmread(get_testdata_file("CT_small.dcm")).pixel_array

import requests
import urllib.request
import pyarrow.parquet as pq
from airflow_dicom.landing import read_find_dataset, to_table, write_parquet
from airflow_dicom.dimse.query import DateRange
from datetime import date

study = pydicom.Dataset()
study.StudyInstanceUID, study.StudyDate, study.NumberOfStudyRelatedInstances = "1.2.3", "20240105", "7"
table = to_table([study], ("StudyInstanceUID", "StudyDate", "NumberOfStudyRelatedInstances"),
                 source_node="pacs", level="STUDY", interval=None)
out = tempfile.mkdtemp()
write_parquet(table, out, interval=DateRange(date(2024, 1, 5), date(2024, 1, 5)))
landed = read_find_dataset(out)
print(json.dumps({
    "deferred_at_start": deferred_at_start,
    "numpy_ran_at_start": numpy_ran_at_start,
    "native_pixels_equal_raw": bool((pixels == raw).all()) and pixels.shape == (native.Rows, native.Columns),
    "rle_equals_native": bool((rle == pixels).all()),
    "reading_validation_mode": config.settings.reading_validation_mode == config.WARN,
    "ds_numpy": ds_numpy,
    "ct_small_shape": list(ct_small.shape),
    "requests_session": callable(requests.Session),
    "urlopen": callable(urllib.request.urlopen),
    "landed": landed[["StudyInstanceUID", "NumberOfStudyRelatedInstances"]].to_dict("records"),
    "deferred_at_end": deferred_modules(),
    "finder_left": len(finder_left),
    "deferred_after_inspect": deferred_after_inspect,
}))
"""

# The same process without pydicom's codec plugins (an install without the `codecs` extra): the plugins that
# pydicom checks when it loads (pylibjpeg, Pillow, ...) are the ones that import numpy for real.
WITHOUT_CODECS = """
import sys
class NoCodecs:
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("pylibjpeg", "openjpeg", "libjpeg", "rle", "PIL", "jpeg_ls", "gdcm"):
            raise ModuleNotFoundError(f"no module named {name!r} (codecs not installed)", name=name)
sys.meta_path.insert(0, NoCodecs())
"""


def _probe(code: str, tmp_path: Path | None = None, **env_extra: str) -> dict:
    env = {**os.environ, **env_extra}
    if tmp_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp_path), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, check=False, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _features_work(result: dict) -> None:
    assert result["native_pixels_equal_raw"] is True
    assert result["rle_equals_native"] is True
    assert result["reading_validation_mode"] is True
    assert result["ds_numpy"] is True
    assert result["ct_small_shape"] == [128, 128]
    assert result["requests_session"] is True
    assert result["urlopen"] is True
    assert result["landed"] == [{"StudyInstanceUID": "1.2.3", "NumberOfStudyRelatedInstances": 7}]


def test_a_network_command_defers_the_downloader_and_pydicom_still_works() -> None:
    result = _probe(FEATURES)
    # pydicom.data's test-file downloader: requests, urllib.request (http.client, ssl, email) are not run
    assert {"requests", "urllib.request"} <= set(result["deferred_at_start"])
    assert result["finder_left"] == 0  # once pydicom is imported, imports go on as usual
    assert result["deferred_after_inspect"] == result["deferred_at_start"]
    _features_work(result)
    # what the features used has run; nothing they used is left half-done
    assert not {"numpy", "requests", "urllib.request"} & set(result["deferred_at_end"])


def test_without_codec_plugins_numpy_is_not_run_until_pixel_data_is_decoded() -> None:
    result = _probe(
        WITHOUT_CODECS
        + FEATURES.replace(
            "rle = decoded(make_instance(transfer_syntax=RLELossless, pixel_bytes=4096, seed=5))",
            "rle = pixels",
        )
    )
    assert "numpy" in result["deferred_at_start"]
    assert result["numpy_ran_at_start"] is False
    _features_work(result)
    assert "numpy" not in result["deferred_at_end"]


# A module that takes a while to run and writes a line to a file each time it runs.
SLOW_MODULE = """
import os, time
with open(os.environ["RUNS_FILE"], "a") as runs:
    runs.write("ran\\n")
time.sleep(0.3)
VALUE = 42
"""

RACE = """
import json, sys, threading
from airflow_dicom.dimse.deferred_imports import deferring, is_deferred
with deferring(["slow_module"]):
    import slow_module
import slow_module as again  # a second import statement does not run it
deferred_after_imports = is_deferred(again) and again is slow_module
barrier = threading.Barrier(4)
seen = []
def use():
    barrier.wait()
    seen.append(slow_module.VALUE)
threads = [threading.Thread(target=use) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps({"deferred_after_imports": deferred_after_imports, "seen": seen,
                  "deferred_at_end": is_deferred(slow_module)}))
"""


def test_threads_racing_to_use_a_deferred_module_all_see_it_complete_and_it_runs_once(tmp_path: Path) -> None:
    (tmp_path / "slow_module.py").write_text(SLOW_MODULE)
    runs = tmp_path / "runs.txt"
    result = _probe(RACE, tmp_path, RUNS_FILE=str(runs))
    assert result["deferred_after_imports"] is True
    assert result["seen"] == [42, 42, 42, 42]
    assert result["deferred_at_end"] is False
    assert runs.read_text() == "ran\n"


FAILING = """
import json, sys
from airflow_dicom.dimse.deferred_imports import deferring, load_deferred
with deferring(["broken_module", "fine_module"]):
    import broken_module, fine_module
    try:
        import not_installed_module
        missing = "imported"
    except ImportError:
        missing = "ImportError"
try:
    broken_module.VALUE
    first_use = "no error"
except RuntimeError as exc:
    first_use = str(exc)
ran = load_deferred()
print(json.dumps({"missing": missing, "first_use": first_use, "ran": ran, "fine": fine_module.VALUE,
                  "still_imported": "broken_module" in sys.modules}))
"""


def test_a_missing_module_fails_at_import_and_a_broken_one_at_first_use(tmp_path: Path) -> None:
    (tmp_path / "broken_module.py").write_text("raise RuntimeError('broken on purpose')\n")
    (tmp_path / "fine_module.py").write_text("VALUE = 'fine'\n")
    result = _probe(FAILING, tmp_path)
    assert result["missing"] == "ImportError"  # `try: import x except ImportError` still tells
    assert result["first_use"] == "broken on purpose"
    assert result["still_imported"] is False  # as after a failed import: the next import tries again
    assert result["ran"] == ["fine_module"]  # load_deferred (the Celery preload) runs what is left
    assert result["fine"] == "fine"


def test_nothing_is_deferred_when_pydicom_was_imported_first() -> None:
    result = _probe(
        "import json, pydicom\n"
        "from airflow_dicom.dimse.deferred_imports import deferred_modules, install\n"
        "import airflow_dicom.dimse.send\n"
        "print(json.dumps({'installed': install(), 'deferred': deferred_modules()}))\n"
    )
    assert result == {"installed": False, "deferred": []}
