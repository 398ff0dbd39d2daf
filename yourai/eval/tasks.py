"""Multiple-choice tasks as data: a small YAML spec plus a data file, so a new MC set needs no code.

Modelled on lm-evaluation-harness's task layout. A spec (`configs/tasks/<name>.yaml`) says

    name, description
    data:              candidate files, first existing wins ("shared:" = under ../shared; else relative
                       to the spec's folder, then to the project root); .jsonl, .json (a list) or .csv
    fields:            question (dotted field), choices (a dotted field holding a list, or a list of
                       fields, one choice each), and either labels (0/1 per choice) or answer (a field
                       holding the true choice's index or text, or a constant index); category (optional)
    primer:            few-shot text put before every question: literal text, "file:<path>" or
                       "builtin:<name>" (e.g. builtin:truthfulqa_qa, lm-eval's 6-shot QA primer)
    template:          the question prompt, e.g. "Q: {question}\\nA:" ({field} = any top-level string field)
    fewshot_delimiter: between primer and prompt ("\\n\\n"); target_delimiter: before each choice (" ")
    metrics:           acc (MC1's rule), acc_norm (ll per character), mc2 (probability mass on true choices)

Scoring is yourai.eval.task_eval; TruthfulQA MC1/MC2 are the first two specs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Union

from yourai.config import ConfigError, build, read_yaml
from yourai.eval.truthfulqa import QA_PRIMER, TARGET_DELIMITER
from yourai.paths import PROJECT_ROOT, configs_dir, shared_dir
from yourai.records import RecordError, iter_records

TASK_METRICS = ("acc", "acc_norm", "mc2")
BUILTIN_PRIMERS = {"truthfulqa_qa": QA_PRIMER}
SHARED_PREFIX = "shared:"


@dataclass(frozen=True)
class TaskFields:
    question: str = "question"
    choices: Union[str, list] = "choices"
    labels: Union[str, None] = None
    answer: Union[int, str, None] = None
    category: Union[str, None] = None


@dataclass(frozen=True)
class TaskSpec:
    name: str = ""
    description: str = ""
    data: list = field(default_factory=list)
    fields: TaskFields = field(default_factory=TaskFields)
    primer: str = ""
    template: str = "Q: {question}\nA:"
    fewshot_delimiter: str = "\n\n"
    target_delimiter: str = TARGET_DELIMITER
    metrics: list = field(default_factory=lambda: ["acc"])
    source: str = ""  # the spec file (set by load_task_spec, not written in it)


@dataclass(frozen=True)
class MCItem:
    """One question of a task: its prompt, choices and 0/1 labels, traceable to its source line."""

    question: str
    context: str
    choices: tuple[str, ...]
    labels: tuple[int, ...]
    category: str = ""
    origin: str = ""


def task_path(name_or_path: str | Path) -> Path:
    """A task name (configs/tasks/<name>.yaml) or a spec file path."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise ValueError(f"{candidate}: task spec not found")
        return candidate
    named = configs_dir() / "tasks" / f"{name_or_path}.yaml"
    if not named.is_file():
        known = sorted(path.stem for path in (configs_dir() / "tasks").glob("*.yaml"))
        raise ValueError(f"unknown task {str(name_or_path)!r}: no {named}; known tasks: {known} (or give a .yaml path)")
    return named


def load_task_spec(name_or_path: str | Path) -> TaskSpec:
    """Read and validate a spec; every problem names the file and the key."""
    path = task_path(name_or_path)
    raw = read_yaml(path)
    try:
        spec = build(TaskSpec, {**raw, "source": str(path)}, str(path))
    except ConfigError as error:
        raise ValueError(str(error)) from error
    _check_spec(spec, path)
    return spec


def _check_spec(spec: TaskSpec, path: Path) -> None:
    if not spec.name or not spec.data:
        raise ValueError(f"{path}: a task needs a `name` and at least one `data` file")
    unknown = sorted(set(spec.metrics) - set(TASK_METRICS))
    if unknown or not spec.metrics:
        raise ValueError(f"{path}: metrics: {unknown or 'none given'}; known metrics are {list(TASK_METRICS)}")
    if (spec.fields.labels is None) == (spec.fields.answer is None):
        raise ValueError(f"{path}: fields: give exactly one of `labels` (0/1 per choice) or `answer`")
    primer_text(spec)  # a missing primer file or unknown builtin fails here, not mid-evaluation


def primer_text(spec: TaskSpec) -> str:
    """The few-shot primer: literal text, the contents of file:<path>, or a builtin:<name>."""
    if spec.primer.startswith("builtin:"):
        name = spec.primer[len("builtin:"):]
        if name not in BUILTIN_PRIMERS:
            raise ValueError(f"{spec.source}: primer: unknown builtin {name!r}; known: {sorted(BUILTIN_PRIMERS)}")
        return BUILTIN_PRIMERS[name]
    if spec.primer.startswith("file:"):
        path = _locate(spec.primer[len("file:"):], spec)
        if not path.is_file():
            raise ValueError(f"{spec.source}: primer: {path} not found")
        return path.read_text(encoding="utf-8").rstrip("\n")
    return spec.primer


def _locate(text: str, spec: TaskSpec) -> Path:
    """shared:<rel> under ../shared; otherwise beside the spec, else under the project root."""
    if text.startswith(SHARED_PREFIX):
        return shared_dir() / text[len(SHARED_PREFIX):]
    path = Path(text)
    if path.is_absolute():
        return path
    beside = Path(spec.source).parent / path
    return beside if beside.exists() else PROJECT_ROOT / path


def resolve_data(spec: TaskSpec, override: str | Path | None = None) -> Path:
    """The data file: `override` when given, else the spec's first candidate that exists."""
    if override is not None:
        path = Path(override)
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
        return path
    candidates = [_locate(str(text), spec) for text in spec.data]
    for path in candidates:
        if path.is_file():
            return path
    raise ValueError(f"{spec.source}: data: none of {[str(p) for p in candidates]} exists")


def _dotted(record: dict[str, Any], dotted: str, where: str) -> Any:
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ValueError(f"{where}: field {dotted!r}: missing")
        value = value[part]
    return value


def _choices(record: dict[str, Any], fields: TaskFields, where: str) -> list[str]:
    if isinstance(fields.choices, list):
        choices = [_dotted(record, name, where) for name in fields.choices]
    else:
        choices = _dotted(record, fields.choices, where)
    if not isinstance(choices, list) or len(choices) < 2:
        raise ValueError(f"{where}: field {fields.choices!r}: expected at least two choices, got {choices!r}")
    if not all(isinstance(choice, str) and choice.strip() for choice in choices):
        raise ValueError(f"{where}: field {fields.choices!r}: every choice must be a non-empty string")
    return choices


def _labels(record: dict[str, Any], fields: TaskFields, choices: list[str], where: str) -> list[int]:
    if fields.labels is not None:
        labels = _dotted(record, fields.labels, where)
        if not isinstance(labels, list) or len(labels) != len(choices) or any(
                label not in (0, 1) or isinstance(label, bool) for label in labels):
            raise ValueError(f"{where}: field {fields.labels!r}: expected {len(choices)} labels of 0 or 1, got {labels!r}")
    else:
        answer = fields.answer if isinstance(fields.answer, int) else _dotted(record, fields.answer, where)
        if isinstance(answer, str) and answer.strip().isdigit() and answer.strip() not in choices:
            answer = int(answer)  # CSV cells are text: "1" is an index unless it is literally a choice
        index = choices.index(answer) if isinstance(answer, str) and answer in choices else answer
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(choices):
            raise ValueError(f"{where}: answer {answer!r}: not one of the {len(choices)} choices nor an index into them")
        labels = [int(i == index) for i in range(len(choices))]
    if 1 not in labels:
        raise ValueError(f"{where}: no true choice (label 1)")
    return labels


def record_item(spec: TaskSpec, primer: str, record: dict[str, Any], where: str) -> MCItem:
    """One data record → an MCItem with its full prompt."""
    question = _dotted(record, spec.fields.question, where)
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"{where}: field {spec.fields.question!r}: must be a non-empty string")
    choices = _choices(record, spec.fields, where)
    labels = _labels(record, spec.fields, choices, where)
    strings = {key: value for key, value in record.items() if isinstance(value, str)}
    try:
        prompt = spec.template.format_map({**strings, "question": question.strip()})
    except KeyError as error:
        raise ValueError(f"{where}: template names field {error} that this record lacks") from error
    context = f"{primer}{spec.fewshot_delimiter}{prompt}" if primer else prompt
    category = _dotted(record, spec.fields.category, where) if spec.fields.category and \
        spec.fields.category.split(".")[0] in record else ""
    return MCItem(question.strip(), context, tuple(choices), tuple(labels), str(category or ""), where.split("/")[-1])


def _raw_records(path: Path) -> list[tuple[str, Any]]:
    """(where, record) for a .jsonl/.csv/.tsv file (bad lines raise naming file:line) or a .json list."""
    if path.suffix.lower() == ".json":
        import json

        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{error.lineno}: invalid JSON: {error.msg}") from error
        if not isinstance(records, list):
            raise ValueError(f"{path}: expected a JSON list of questions")
        return [(f"{path}:item {index}", record) for index, record in enumerate(records)]
    found = []
    for line, record in iter_records(path):
        if isinstance(record, RecordError):
            raise ValueError(record.message())
        found.append((f"{path}:{line}", record))
    return found


def load_task_items(spec: TaskSpec, data: str | Path | None = None) -> tuple[list[MCItem], Path]:
    """Every question of the task's data file, validated; the file it came from."""
    path = resolve_data(spec, data)
    primer = primer_text(spec)
    items = []
    for where, record in _raw_records(path):
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected an object, got {type(record).__name__}")
        items.append(record_item(spec, primer, record, where))
    if not items:
        raise ValueError(f"{path}: no questions")
    return items, path


def spec_dict(spec: TaskSpec) -> dict[str, Any]:
    """The spec as recorded in a results file (so a number can be traced to the exact task definition)."""
    return asdict(spec)
