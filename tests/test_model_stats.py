"""tools/model_stats.py: Table 1 rows with sizes that match the release and the paper."""
import json
import subprocess
import sys

from conftest import ROOT


def test_model_stats_json_rows():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "model_stats.py"), "--json", "--recipes",
                          "hourglass1-resnet", "unet2-cab", "--repeats", "1", "--width", "0.125"],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["recipe"] for r in rows] == ["hourglass1-resnet", "unet2-cab"]
    assert all(r["latency_ms"] > 0 for r in rows)
    assert rows[0]["paper_size_mb"] is None  # width changed: no paper comparison


def test_model_stats_table_full_width_sizes():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "model_stats.py"), "--no-latency", "--recipes",
                          "hourglass1-resnet", "hourglass2-cab"], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout
    assert "| hourglass1-resnet | Hourglass1-Resnet | 3.42 | 13.8 | 13 |" in out
    assert "| hourglass2-cab | Hourglass2-CAB | 11.62 | 46.6 | 46 |" in out
