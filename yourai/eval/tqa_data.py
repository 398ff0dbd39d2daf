"""TruthfulQA loaders: every published layout becomes one list of `TQAItem`s.

Layouts accepted (see ../shared/data/truthfulqa/README.md for the facts used here):
- upstream `TruthfulQA.csv` (utf-8-sig; `;`-separated answer lists; later revisions add a
  `Best Incorrect Answer` column, which enables the binary variant: best answer vs best incorrect answer);
- upstream `mc_task.json` (a list of `{question, mc1_targets: {answer: 0|1}, mc2_targets: ...}`);
- the Hugging Face `truthful_qa/multiple_choice` layout as local JSONL or parquet
  (`{question, mc1_targets: {choices, labels}, mc2_targets: {choices, labels}}`, optional `category`);
- the hub itself (`hub:truthfulqa/truthful_qa`) when it is reachable.

Bad input raises `ValueError("<file>:<row>: <column>: <what is wrong>")`; nothing is skipped silently.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from yourai.records import iter_jsonl
from yourai.paths import PROJECT_ROOT, shared_dir

# Normalised CSV header → field; headers are compared lower-cased with spaces as underscores,
# so "Best Answer", "best_answer" and "BEST ANSWER" are the same column.
CSV_REQUIRED = ("question", "best_answer", "correct_answers", "incorrect_answers")
CSV_OPTIONAL = ("type", "category", "source", "best_incorrect_answer")
HUB_DATASET_ID = "truthfulqa/truthful_qa"
HUB_MC_FILE = "multiple_choice/validation-00000-of-00001.parquet"
NO_COMMENT = "I have no comment."  # lm-eval's truthfulqa_gen always counts this answer as true
SAMPLE_PATH = PROJECT_ROOT / "data" / "sample" / "truthfulqa_sample" / "truthfulqa_sample.jsonl"


@dataclass(frozen=True)
class TQAItem:
    """One TruthfulQA question with both MC target sets and (when known) the generation references."""

    question: str
    mc1_choices: tuple[str, ...]
    mc1_labels: tuple[int, ...]
    mc2_choices: tuple[str, ...]
    mc2_labels: tuple[int, ...]
    category: str = ""
    correct_answers: tuple[str, ...] = ()
    incorrect_answers: tuple[str, ...] = ()
    best_incorrect_answer: str = ""  # later CSV revisions only; with it the binary variant is scored
    origin: str = ""  # "<file>:<row>" so every score can be traced back to its source line


def normalise_answer(answer: str) -> str:
    """Upstream `format_best`: strip and append a period, so CSV answers match the MC files."""
    answer = answer.strip()
    return answer if answer.endswith(".") else answer + "."


def split_answers(cell: str) -> list[str]:
    """Upstream `split_multi_answer`: `;`-separated, stripped, empties dropped, then normalised."""
    return [normalise_answer(part) for part in cell.split(";") if part.strip()]


def targets_as_dict_order(true_answers: list[str], false_answers: list[str]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Build MC targets the way upstream wrote `mc_task.json`: a dict, first position kept, last label wins."""
    labels: dict[str, int] = {}
    for answer in true_answers:
        labels[answer] = 1
    for answer in false_answers:
        labels[answer] = 0
    return tuple(labels), tuple(labels.values())


def _normalise_header(name: str) -> str:
    return name.strip().lower().replace(" ", "_")


def _csv_columns(path: Path, header: list[str] | None) -> dict[str, str]:
    """Map each known field to the file's own header spelling; name the missing ones."""
    if not header:
        raise ValueError(f"{path}:1: empty file or no header row")
    by_norm = {_normalise_header(name): name for name in header}
    missing = [field for field in CSV_REQUIRED if field not in by_norm]
    if missing:
        raise ValueError(f"{path}:1: missing column(s) {missing}; header is {header}")
    return {field: by_norm[field] for field in CSV_REQUIRED + CSV_OPTIONAL if field in by_norm}


def _csv_item(path: Path, line: int, row: dict[str, Any], columns: dict[str, str]) -> TQAItem:
    """One CSV row → item; MC targets rebuilt exactly as upstream derived `mc_task.json`."""
    cells = {field: row.get(name) for field, name in columns.items()}
    for field in CSV_REQUIRED:
        if cells[field] is None:
            raise ValueError(f"{path}:{line}: column {columns[field]!r}: row has too few fields")
        if not cells[field].strip():
            raise ValueError(f"{path}:{line}: column {columns[field]!r}: empty")
    if None in row:
        raise ValueError(f"{path}:{line}: row has more fields than the header ({len(columns)} known columns)")
    best = normalise_answer(cells["best_answer"])
    correct, incorrect = split_answers(cells["correct_answers"]), split_answers(cells["incorrect_answers"])
    if not incorrect:
        raise ValueError(f"{path}:{line}: column {columns['incorrect_answers']!r}: no answers after splitting on ';'")
    mc1_choices, mc1_labels = targets_as_dict_order([best], incorrect)
    mc2_choices, mc2_labels = targets_as_dict_order(correct, incorrect)
    return TQAItem(
        question=cells["question"].strip(), mc1_choices=mc1_choices, mc1_labels=mc1_labels,
        mc2_choices=mc2_choices, mc2_labels=mc2_labels, category=(cells.get("category") or "").strip(),
        correct_answers=tuple(correct), incorrect_answers=tuple(incorrect),
        best_incorrect_answer=normalise_answer(cells["best_incorrect_answer"]) if (cells.get("best_incorrect_answer")
                                                                                  or "").strip() else "",
        origin=f"{path.name}:{line}",
    )


def load_csv(path: str | Path) -> list[TQAItem]:
    """Read the upstream `TruthfulQA.csv` (any revision) into items with MC1/MC2 targets."""
    path = Path(path)
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        columns = _csv_columns(path, reader.fieldnames)
        items = [_csv_item(path, reader.line_num, row, columns) for row in reader]
    if not items:
        raise ValueError(f"{path}: no data rows")
    return items


def _check_targets(where: str, field: str, choices: Any, labels: Any) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Validate one target set: equal lengths, string choices, 0/1 labels, at least one true."""
    if not isinstance(choices, list) or not isinstance(labels, list):
        raise ValueError(f"{where}: {field}: choices and labels must be lists")
    if len(choices) != len(labels) or not choices:
        raise ValueError(f"{where}: {field}: {len(choices)} choices but {len(labels)} labels")
    if not all(isinstance(choice, str) and choice.strip() for choice in choices):
        raise ValueError(f"{where}: {field}: every choice must be a non-empty string")
    if any(label not in (0, 1) or isinstance(label, bool) for label in labels):
        raise ValueError(f"{where}: {field}: labels must be 0 or 1, got {labels}")
    if 1 not in labels:
        raise ValueError(f"{where}: {field}: no true choice (label 1)")
    if field == "mc1_targets" and labels.count(1) != 1:
        raise ValueError(f"{where}: {field}: MC1 needs exactly one true choice, got {labels.count(1)}")
    return tuple(choices), tuple(int(label) for label in labels)


def _mc_record_item(where: str, record: Any, targets_are_dicts: bool) -> TQAItem:
    """One MC record (upstream dict targets or HF choices/labels targets) → item."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected an object, got {type(record).__name__}")
    for field in ("question", "mc1_targets", "mc2_targets"):
        if field not in record:
            raise ValueError(f"{where}: {field}: missing")
    if not isinstance(record["question"], str) or not record["question"].strip():
        raise ValueError(f"{where}: question: must be a non-empty string")
    sets = {}
    for field in ("mc1_targets", "mc2_targets"):
        targets = record[field]
        if targets_are_dicts:
            if not isinstance(targets, dict):
                raise ValueError(f"{where}: {field}: expected {{answer: 0|1}}")
            sets[field] = _check_targets(where, field, list(targets), list(targets.values()))
        else:
            if not isinstance(targets, dict) or not {"choices", "labels"} <= set(targets):
                raise ValueError(f"{where}: {field}: expected {{'choices': [...], 'labels': [...]}}")
            sets[field] = _check_targets(where, field, list(targets["choices"]), list(targets["labels"]))
    (mc1_choices, mc1_labels), (mc2_choices, mc2_labels) = sets["mc1_targets"], sets["mc2_targets"]
    category = record.get("category") or ""
    if not isinstance(category, str):
        raise ValueError(f"{where}: category: must be a string")
    return TQAItem(record["question"].strip(), mc1_choices, mc1_labels, mc2_choices, mc2_labels,
                   category=category.strip(), origin=where.split("/")[-1])


def load_mc_json(path: str | Path) -> list[TQAItem]:
    """Read upstream `mc_task.json` (dict-valued targets; row order differs from the CSV)."""
    path = Path(path)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}: invalid JSON: {error.msg}") from error
    if not isinstance(records, list) or not records:
        raise ValueError(f"{path}: expected a non-empty JSON list of questions")
    return [_mc_record_item(f"{path}:item {index}", record, True) for index, record in enumerate(records)]


def load_hf_jsonl(path: str | Path) -> list[TQAItem]:
    """Read the HF `multiple_choice` layout, one JSON object per line (blank lines allowed)."""
    path = Path(path)
    items = []
    for line_number, record in iter_jsonl(path):
        items.append(_mc_record_item(f"{path}:{line_number}", record, False))
    if not items:
        raise ValueError(f"{path}: no records")
    return items


def _plain(value: Any) -> Any:
    """Parquet cells come back as numpy arrays; turn them into the JSON types the validator expects."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {key: _plain(inner) for key, inner in value.items()}
    return value


def load_hf_parquet(path: str | Path) -> list[TQAItem]:
    """Read the HF `multiple_choice` parquet file (needs pandas with pyarrow or fastparquet)."""
    import pandas as pd

    path = Path(path)
    try:
        frame = pd.read_parquet(path)
    except ImportError as error:
        raise ValueError(f"{path}: reading parquet needs pyarrow or fastparquet ({error}); "
                         "convert to JSONL or install one of them") from error
    records = [{key: _plain(value) for key, value in row.items()} for row in frame.to_dict("records")]
    return [_mc_record_item(f"{path}:row {index}", record, False) for index, record in enumerate(records)]


def load_from_hub(dataset_id: str = HUB_DATASET_ID) -> list[TQAItem]:
    """Fetch the HF `multiple_choice` validation split when the hub is reachable."""
    from huggingface_hub import hf_hub_download

    try:
        local = hf_hub_download(repo_id=dataset_id, filename=HUB_MC_FILE, repo_type="dataset")
    except Exception as error:  # the hub raises many network error types; all mean "not reachable"
        raise ValueError(f"hub:{dataset_id}: could not download {HUB_MC_FILE}: {error}") from error
    return load_hf_parquet(local)


def load_truthfulqa(path: str | Path) -> list[TQAItem]:
    """Load any supported layout, chosen by suffix (`hub:<id>` for the hub, `auto` for the default)."""
    text = str(path)
    if text == "auto":
        return load_auto()
    if text.startswith("hub:"):
        return load_from_hub(text[len("hub:"):] or HUB_DATASET_ID)
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    loaders = {".csv": load_csv, ".json": load_mc_json, ".jsonl": load_hf_jsonl, ".parquet": load_hf_parquet}
    if path.suffix.lower() not in loaders:
        raise ValueError(f"{path}: unknown TruthfulQA layout {path.suffix!r}; expected one of {sorted(loaders)}")
    return loaders[path.suffix.lower()](path)


def join_csv_metadata(items: list[TQAItem], csv_items: list[TQAItem], csv_name: str) -> list[TQAItem]:
    """Attach category and generation references from the CSV, joined on question text (row orders differ)."""
    by_question = {item.question: item for item in csv_items}
    joined = []
    for item in items:
        match = by_question.get(item.question)
        if match is None:
            raise ValueError(f"{item.origin}: question not found in {csv_name}: {item.question[:60]!r}")
        joined.append(replace(item, category=match.category, correct_answers=match.correct_answers,
                              incorrect_answers=match.incorrect_answers,
                              best_incorrect_answer=match.best_incorrect_answer))
    return joined


def shared_v0_dir() -> Path:
    return shared_dir() / "data" / "truthfulqa" / "v0"


def resolve_auto() -> tuple[Path, Path | None]:
    """`auto` = the v0 HF-layout file in ../shared (with its CSV for categories) else our practice sample."""
    mc_path, csv_path = shared_v0_dir() / "truthful_qa_multiple_choice_validation.jsonl", shared_v0_dir() / "TruthfulQA.csv"
    if mc_path.is_file():
        return mc_path, csv_path if csv_path.is_file() else None
    return SAMPLE_PATH, None


def load_auto() -> list[TQAItem]:
    """Load what `resolve_auto` picks; the benchmark gets its categories from the v0 CSV."""
    mc_path, csv_path = resolve_auto()
    items = load_hf_jsonl(mc_path)
    return join_csv_metadata(items, load_csv(csv_path), csv_path.name) if csv_path else items


def generation_references(item: TQAItem) -> tuple[list[str], list[str]]:
    """lm-eval `truthfulqa_gen` references: true answers (+ "I have no comment.") and false answers."""
    correct = list(item.correct_answers) or [c for c, label in zip(item.mc2_choices, item.mc2_labels) if label == 1]
    incorrect = list(item.incorrect_answers) or [c for c, label in zip(item.mc2_choices, item.mc2_labels) if label == 0]
    if NO_COMMENT not in correct:
        correct.append(NO_COMMENT)
    return correct, incorrect



def binary_choices(item: TQAItem) -> tuple[str, str] | None:
    """The binary variant's two choices (the best answer, then the best incorrect answer), or None without one.

    TruthfulQA's later revision asks a model to pick between exactly these two; we score it as MC1 is
    scored (the higher log-likelihood wins), so the two differ only in the choice set.
    """
    if not item.best_incorrect_answer:
        return None
    return item.mc1_choices[item.mc1_labels.index(1)], item.best_incorrect_answer


def has_binary_variant(items: list[TQAItem]) -> bool:
    """True when every question carries a best incorrect answer (a partial column would make a partial score)."""
    return bool(items) and all(item.best_incorrect_answer for item in items)
