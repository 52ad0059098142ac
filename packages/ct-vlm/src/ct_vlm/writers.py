"""The prediction writer: one generated report (text + JSON) per volume, and summary.csv (atomic writes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medzoo.io import write_json, write_text
from medzoo.lightning import PredictionWriter


def volume_stem(path: str) -> str:
    """``/a/b/case_1.nii.gz`` -> ``case_1``."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


class ReportWriter(PredictionWriter):
    """Files in ``<default_root_dir>/predictions/`` per input volume:

    - ``<volume>_report.txt``: the generated report (greedy decoding), UTF-8;
    - ``<volume>.json``: ``{"image": path, "report": str, "p_yes": {finding: float}}``, where ``p_yes`` is
      P("yes") / (P("yes") + P("no")) of the first answer token to "Is there evidence of <finding>?";

    and ``summary.csv`` with ``image, report_file, report`` and ``p_yes/<finding>`` per finding.
    """

    def write_batch(self, prediction: dict[str, Any], batch: Any, output_dir: Path) -> list[dict[str, Any]]:
        rows = []
        for i, path in enumerate(prediction["path"]):
            stem = volume_stem(path)
            report = prediction["report"][i]
            scores = {name: float(values[i]) for name, values in prediction["p_yes"].items()}
            write_text(output_dir / f"{stem}_report.txt", report + "\n")
            write_json(output_dir / f"{stem}.json", {"image": path, "report": report, "p_yes": scores})
            row = {"image": path, "report_file": f"{stem}_report.txt", "report": report}
            row.update({f"p_yes/{name}": value for name, value in scores.items()})
            rows.append(row)
        return rows
