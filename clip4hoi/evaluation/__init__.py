"""Evaluation: HOI mAP with HICO-DET's official MATLAB semantics for any class set
(HICO-DET's or a custom dataset's), V-COCO role AP (``vsrl_eval`` semantics), detection
files (``DETS.json``) and the MATLAB exporter."""

from clip4hoi.evaluation.detections import (
    HOIDetections,
    detections_from_ground_truth,
    detections_to_records,
    parse_records,
    read_detections,
    records_from_outputs,
    write_detections,
)
from clip4hoi.evaluation.hicodet import (
    PRESETS,
    Conventions,
    HICOResult,
    evaluate_files,
    evaluate_hicodet,
    evaluate_hoi,
    format_table,
    make_conventions,
    matlab_colon,
    result_to_json,
)
from clip4hoi.evaluation.matlab import export_matlab, load_matlab_export
from clip4hoi.evaluation.vcoco import (
    VCOCOResult,
    evaluate_vcoco,
    evaluate_vcoco_files,
    format_vcoco_table,
    vcoco_result_to_json,
)

__all__ = [
    "PRESETS",
    "Conventions",
    "HICOResult",
    "HOIDetections",
    "VCOCOResult",
    "detections_from_ground_truth",
    "detections_to_records",
    "evaluate_files",
    "evaluate_hicodet",
    "evaluate_hoi",
    "evaluate_vcoco",
    "evaluate_vcoco_files",
    "export_matlab",
    "format_table",
    "format_vcoco_table",
    "load_matlab_export",
    "make_conventions",
    "matlab_colon",
    "parse_records",
    "read_detections",
    "records_from_outputs",
    "result_to_json",
    "vcoco_result_to_json",
    "write_detections",
]
