"""1:N and 1:1 matching against brute force, the margin rule, eligibility filters."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from egate.edge.gallery.matching import MatchPolicy, TemplateMatrix, _smallest
from egate.edge.gallery.payload import SubjectEntry
from egate.edge.gallery.store import Gallery
from tests.support.gallery_fixtures import NOW, gallery_bundle, new_ops_key, random_subjects, trust_with, verifier_for


def _gallery(tmp_path: Path, subjects: list[SubjectEntry], policy: MatchPolicy, dtype="float32") -> Gallery:
    key = new_ops_key()
    verified = verifier_for(trust_with(tmp_path, key)).verify(gallery_bundle(key, subjects), NOW)
    return Gallery.from_verified(verified, policy=policy, dtype=dtype)


def _brute_force(subjects: list[SubjectEntry], q: np.ndarray) -> list[tuple[str, float]]:
    best = [(s.subject_id, float(np.min(np.linalg.norm(s.templates.astype(np.float64) - q, axis=1)))) for s in subjects]
    return sorted(best, key=lambda item: item[1])


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_top_k_equals_brute_force(tmp_path: Path, dtype: str) -> None:
    subjects = random_subjects(300, per_subject=(1, 4), seed=3)
    gallery = _gallery(tmp_path, subjects, MatchPolicy(threshold=0.6, margin=0.05, top_k=7), dtype)
    rng = np.random.default_rng(9)
    tol = 1e-5 if dtype == "float32" else 3e-3
    for i in range(40):
        s = subjects[int(rng.integers(len(subjects)))]
        q = (
            (s.templates[0] + rng.normal(0, 0.03, 128)).astype(np.float32)
            if i % 2
            else rng.standard_normal(128).astype(np.float32)
        )
        result = gallery.search(q, 7, now=NOW)
        expected = _brute_force(subjects, q)
        assert [c.subject_id for c in result.candidates] == [sid for sid, _ in expected[:7]]
        np.testing.assert_allclose([c.distance for c in result.candidates], [d for _, d in expected[:7]], atol=tol)
        assert result.second_distance == pytest.approx(expected[1][1], abs=tol)
        assert result.threshold == 0.6 and result.margin == 0.05


def test_sampled_selection_is_exact_on_large_arrays() -> None:
    rng = np.random.default_rng(1)
    for n, m in [(200_000, 1), (200_000, 9), (70_000, 40), (100, 100)]:
        d = rng.standard_normal(n).astype(np.float32)
        assert list(_smallest(d, m)) == list(np.argsort(d, kind="stable")[:m])
    d = np.full(100_000, np.inf, np.float32)
    d[[5, 77_000]] = [1.0, 0.5]
    assert list(_smallest(d, 3)[:2]) == [77_000, 5]


def test_margin_rule_and_threshold(tmp_path: Path) -> None:
    base = np.zeros(128, np.float32)
    base[0] = 1.0
    near_twin = base.copy()
    near_twin[1] = 0.1  # 0.1 from base
    far = np.zeros(128, np.float32)
    far[2] = 1.0
    subjects = [SubjectEntry("a", base), SubjectEntry("b", near_twin), SubjectEntry("c", far)]
    q = base.copy()
    q[1] = 0.02  # 0.02 from a, 0.08 from b
    strict = _gallery(tmp_path / "1", subjects, MatchPolicy(threshold=0.6, margin=0.1))
    result = strict.search(q, 3, now=NOW)
    assert not result.matched and result.reason == "ambiguous" and result.candidates[0].subject_id == "a"
    lenient = _gallery(tmp_path / "2", subjects, MatchPolicy(threshold=0.6, margin=0.05))
    result = lenient.search(q, 3, now=NOW)
    assert result.matched and result.subject_id == "a" and result.reason == "match"
    tight = _gallery(tmp_path / "3", subjects, MatchPolicy(threshold=0.01, margin=0.0))
    result = tight.search(q, 3, now=NOW)
    assert not result.matched and result.reason == "above_threshold" and result.best_distance == pytest.approx(0.02)
    # Several templates of the SAME subject never count as the second-best subject.
    same = [SubjectEntry("a", np.stack([base, near_twin])), SubjectEntry("c", far)]
    result = _gallery(tmp_path / "4", same, MatchPolicy(threshold=0.6, margin=0.1)).search(q, 2, now=NOW)
    assert result.matched and [c.subject_id for c in result.candidates] == ["a", "c"]


def test_verify_one_to_one(tmp_path: Path) -> None:
    subjects = random_subjects(30, per_subject=3, seed=5)
    gallery = _gallery(tmp_path, subjects, MatchPolicy(threshold=0.6))
    target = subjects[4]
    q = (target.templates[1] + 0.01).astype(np.float32)
    result = gallery.verify(q, target.subject_id, now=NOW)
    expected = np.linalg.norm(target.templates.astype(np.float64) - q, axis=1)
    np.testing.assert_allclose(result.template_distances, expected, atol=1e-5)
    assert result.matched and result.distance == pytest.approx(expected.min(), abs=1e-5) and result.threshold == 0.6
    other = gallery.verify(q, subjects[5].subject_id, now=NOW)
    assert not other.matched and other.reason == "above_threshold"
    assert gallery.verify(q, "nobody", now=NOW).reason == "unknown_subject"


def test_validity_window_and_tags(tmp_path: Path) -> None:
    subjects = random_subjects(4, seed=6)
    subjects[0].valid_until = NOW - timedelta(minutes=1)
    subjects[1].valid_from = NOW + timedelta(hours=1)
    subjects[2].flights = ["LH123"]
    subjects[3].lanes = ["lane-2"]
    gallery = _gallery(tmp_path, subjects, MatchPolicy(threshold=0.6, margin=0.0))
    for s in subjects[:2]:
        q = s.templates[0]
        assert gallery.search(q, 4, now=NOW).subject_id != s.subject_id
        assert gallery.verify(q, s.subject_id, now=NOW).reason == "not_eligible"
    assert (
        gallery.search(subjects[0].templates[0], 4, now=NOW - timedelta(hours=1)).subject_id == subjects[0].subject_id
    )
    assert [c.subject_id for c in gallery.search(subjects[2].templates[0], 4, now=NOW, flight="LH123").candidates] == [
        subjects[2].subject_id
    ]
    q3 = subjects[3].templates[0]
    assert gallery.search(q3, 4, now=NOW, lane="lane-2").subject_id == subjects[3].subject_id
    assert subjects[3].subject_id not in [
        c.subject_id for c in gallery.search(q3, 4, now=NOW, lane="lane-1").candidates
    ]


def test_bad_descriptor_is_refused(tmp_path: Path) -> None:
    gallery = _gallery(tmp_path, random_subjects(3), MatchPolicy(threshold=0.6))
    with pytest.raises(ValueError, match="128"):
        gallery.search(np.zeros(64, np.float32), now=NOW)
    with pytest.raises(ValueError, match="NaN"):
        gallery.search(np.full(128, np.nan, np.float32), now=NOW)


def test_template_matrix_one_row_per_subject_fast_path() -> None:
    rng = np.random.default_rng(2)
    m = rng.standard_normal((100_000, 16)).astype(np.float32)
    matrix = TemplateMatrix(m, np.arange(100_001))
    q = rng.standard_normal(16).astype(np.float32)
    got = matrix.nearest_subjects(q, 5)
    expected = np.argsort(np.linalg.norm(m.astype(np.float64) - q, axis=1))[:5]
    assert [s for s, _ in got] == list(expected)
