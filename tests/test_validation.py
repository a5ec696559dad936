"""Answer validation: what passes, what fails, and that the failure message says what to fix."""

from __future__ import annotations

import pytest

from worker.models import Metric
from worker.validation import ValidationFailed, check_grounded, check_sorted_permutation, check_table

REPORT = (
    "Quarterly results: revenue was $12.5M, up 22% from last year. "
    "Operating margin reached 18% and headcount grew to 340 employees."
)
METRICS = [
    Metric(name="Revenue", value=12_500_000, unit="USD"),
    Metric(name="Revenue growth", value=22, unit="%"),
    Metric(name="Operating margin", value=18, unit="%"),
    Metric(name="Headcount", value=340),
]


# --- check_grounded ---------------------------------------------------------------------------


def test_grounded_metrics_pass() -> None:
    check_grounded(METRICS, REPORT)


def test_grounded_allows_formatting_and_scaling() -> None:
    answer = [
        Metric(name="Revenue", value=12.5, unit="USD million"),
        Metric(name="Revenue growth", value=0.22, unit=""),
        Metric(name="Operating margin", value=18.0, unit="percent"),
    ]
    check_grounded(answer, REPORT)


def test_invented_value_fails_and_names_the_metric() -> None:
    answer = [*METRICS, Metric(name="Net income", value=4_100_000, unit="USD")]
    with pytest.raises(ValidationFailed) as failure:
        check_grounded(answer, REPORT)
    message = str(failure.value)
    assert "'Net income'" in message and "4,100,000" in message
    assert "$12.5M" in message and "340" in message  # the report's numbers, for the repair prompt


def test_blank_name_fails() -> None:
    with pytest.raises(ValidationFailed, match="empty name"):
        check_grounded([Metric(name="  ", value=340)], REPORT)


def test_non_finite_value_fails() -> None:
    with pytest.raises(ValidationFailed, match="non-finite"):
        check_grounded([Metric(name="Revenue", value=float("nan"))], REPORT)


def test_empty_answer_fails_when_the_report_states_money_or_percentages() -> None:
    with pytest.raises(ValidationFailed, match=r"no metrics .*\$12\.5M"):
        check_grounded([], REPORT)


def test_empty_answer_passes_when_the_report_states_no_clear_metric() -> None:
    check_grounded([], "Quiet week: the office was closed for the holidays.")
    check_grounded([], "The offsite is on March 14th in 2025; 5 of us will travel.")


def test_value_near_but_beyond_tolerance_fails() -> None:
    with pytest.raises(ValidationFailed, match="Headcount"):
        check_grounded([Metric(name="Headcount", value=345)], REPORT)


# --- check_sorted_permutation ------------------------------------------------------------------


def test_sorted_permutation_passes() -> None:
    answer = sorted(METRICS, key=lambda m: m.value, reverse=True)
    check_sorted_permutation(METRICS, answer)


def test_sorted_permutation_tolerates_float_noise_and_ties() -> None:
    original = [Metric(name="a", value=0.1 + 0.2), Metric(name="b", value=5), Metric(name="c", value=5)]
    check_sorted_permutation(original, [original[2], original[1], Metric(name="a", value=0.3)])


def test_unsorted_answer_fails_with_positions() -> None:
    with pytest.raises(ValidationFailed) as failure:
        check_sorted_permutation(METRICS, [METRICS[1], METRICS[0], METRICS[3], METRICS[2]])
    message = str(failure.value)
    assert "#1 'Revenue growth'" in message and "#2 'Revenue' = 12,500,000 USD" in message


def test_dropped_metric_fails() -> None:
    with pytest.raises(ValidationFailed, match=r"missing 'Headcount' = 340"):
        check_sorted_permutation(METRICS, [METRICS[0], METRICS[1], METRICS[2]])


def test_changed_metric_fails_as_missing_and_extra() -> None:
    changed = [METRICS[0], METRICS[3], Metric(name="Revenue growth", value=22, unit=""), METRICS[2]]
    with pytest.raises(ValidationFailed) as failure:
        check_sorted_permutation(METRICS, changed)
    message = str(failure.value)
    assert "missing 'Revenue growth' = 22 %" in message
    assert "not in the input 'Revenue growth' = 22" in message


def test_duplicated_metric_fails() -> None:
    with pytest.raises(ValidationFailed, match="not in the input"):
        check_sorted_permutation(METRICS[:1], [METRICS[0], METRICS[0]])


# --- check_table --------------------------------------------------------------------------------

TABLE = """| Metric | Value | Unit |
|---|---:|---|
| Revenue | 12,500,000 | USD |
| Revenue growth | 22 | % |
| Operating margin | 18 | % |
| Headcount | 340 |  |"""


def test_table_passes() -> None:
    check_table(METRICS, TABLE)


def test_table_allows_other_value_formats_and_emphasis() -> None:
    table = """Metric | Value
:--- | ---:
**Revenue** | $12.5M
Revenue growth | 22%
`Operating margin` | 18.0 %
Headcount | 340"""
    check_table(METRICS, table)


def test_empty_metrics_give_a_header_only_table() -> None:
    check_table([], "| Metric | Value | Unit |\n|---|---|---|")


def test_table_with_escaped_pipe_in_name() -> None:
    metric = Metric(name="Gross | net ratio", value=1.5)
    check_table([metric], "| Metric | Value | Unit |\n|---|---|---|\n| Gross \\| net ratio | 1.5 |  |")


def test_negative_value_must_keep_its_sign() -> None:
    metric = Metric(name="Operating loss", value=-3_200_000, unit="USD")
    check_table([metric], "| Metric | Value | Unit |\n|---|---|---|\n| Operating loss | -3,200,000 | USD |")
    with pytest.raises(ValidationFailed, match="row 1 must show the value"):
        check_table([metric], "| Metric | Value | Unit |\n|---|---|---|\n| Operating loss | 3,200,000 | USD |")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("Here is your table:\n" + TABLE, "not a table row: 'Here is your table:'"),
        ("```\n" + TABLE + "\n```", "not a table row: '```'"),
        ("| Metric | Value | Unit |", "header row and a separator row"),
        (TABLE.replace("|---|---:|---|", "| - | - |"), "separator row with 3 cells"),
        (TABLE.replace("|---|---:|---|", "| Metric | Value | Unit |"), "separator row"),
        (TABLE.rsplit("\n", 1)[0], "4 metrics, 3 rows"),
        (TABLE.replace("Headcount", "Employees"), "row 4 must show metric 'Headcount' = 340"),
        (TABLE.replace("12,500,000", "12,500"), "row 1 must show the value of 'Revenue' = 12,500,000 USD"),
        (TABLE.replace("| 340 |", "| 34 |"), "row 4 must show the value"),
        (
            TABLE.replace("| Revenue growth | 22 |", "| Operating margin | 18 |", 1).replace(
                "| Operating margin | 18 | % |\n| Headcount", "| Revenue growth | 22 | % |\n| Headcount"
            ),
            "row 2 must show metric 'Revenue growth'",
        ),
    ],
)
def test_bad_tables_fail_with_a_precise_message(table: str, message: str) -> None:
    with pytest.raises(ValidationFailed) as failure:
        check_table(METRICS, table)
    assert message in str(failure.value)


def test_validation_failed_is_an_exception_with_the_message() -> None:
    assert issubclass(ValidationFailed, Exception)
    assert str(ValidationFailed("row 1 is wrong")) == "row 1 is wrong"
