"""benchmarks/distill_stronger.py's goal per student: within 2 points of its teacher and ahead of its twin."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from distill_stronger import student_rows  # noqa: E402


def test_each_student_is_judged_against_its_own_twin_and_the_teacher():
    distilled = {"steps": 300, "steps_per_s": 0.5,
                 "final": {"knn_top1_vit": 80.5, "knn_top1_cnn": 79.0, "knn_top1_random_init_vit": 66.0,
                           "knn_top1_random_init_cnn": 76.0, "knn_top1_pixels": 85.7}}
    twins = {"vit": {"final": {"knn_top1": 78.0}, "steps": 900}, "cnn": {"final": {"knn_top1": 79.5}, "steps": 200}}
    rows = {r["student"]: r for r in student_rows(distilled, twins, {"final": {"knn_top1": 82.0}})}
    assert rows["vit"]["within_2_of_teacher"] and rows["vit"]["ahead_of_twin"]  # 80.5 >= 80.0, 80.5 > 78.0
    assert not rows["cnn"]["within_2_of_teacher"] and not rows["cnn"]["ahead_of_twin"]  # 79.0 < 80.0, < 79.5
    assert (rows["cnn"]["random_init_knn"], rows["vit"]["twin_steps"], rows["vit"]["pixels_knn"]) == (76.0, 900, 85.7)
    failed = student_rows({"final": {}}, {"vit": {"error": ["x"]}}, {"final": {"knn_top1": 82.0}})[0]
    assert failed["within_2_of_teacher"] is None and failed["ahead_of_twin"] is None  # a failed run is no verdict
