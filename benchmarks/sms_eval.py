"""Quality of the SMS parser (notifications.parser) on real disaster messages.

Reads the English translations (column ``message``) of the CC BY 4.0 multilingual disaster
response messages (Haiti 2010 SMS, Pakistan 2010 floods, news) from ``../shared/data/disaster_messages``
and scores, against the human labels: category detection per category (precision, recall, F1),
request-vs-offer (intent ``need``/``offer`` against the ``request``/``offer`` labels) and the
urgent path (share of ``actionable_haiti`` messages whose urgency is critical or urgent, against
the same share among non-actionable ones). Beside each figure: a naive baseline that flags a
category when one English word occurs (``water``, ``food``, ``shelter``, ``medical``, …).

The keyword tables were tuned on ``validation.csv`` only; ``test.csv`` is the reported figure.
Only aggregate numbers are printed: no message text (the data must not be used to re-identify
anyone). The data is never copied into the repository; without it the script says so and exits.

    .venv/bin/python benchmarks/sms_eval.py                 # test.csv
    .venv/bin/python benchmarks/sms_eval.py --split validation
    .venv/bin/python benchmarks/sms_eval.py --split validation --explain medical   # for tuning

``--trained`` (test split only) adds a trained baseline for the categories with a target: a TF-IDF
(word 1–2-grams) logistic regression per category from scikit-learn (a ``bench`` extra), fitted on
``validation.csv``, its threshold chosen there by 5-fold cross-validation as the one with the highest
recall at precision ≥ 0.70; printed are its precision and recall on the test split at that threshold
and, as an upper bound for that model, the best recall at precision ≥ 0.70 with the threshold chosen
on the test split itself.

``--explain CODE`` (a category, ``request`` or ``offer``) adds, for that one decision, counts per
matched cue (true and false positives per keyword pattern) and the words most frequent among the
false negatives with their share of labelled messages: counts only, never a message.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import machine_info

from notifications.parser import category_cues, intent_cues, parse_sms

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "disaster_messages"

# parser category → dataset labels (a message counts as positive when any of them is 1)
LABELS: dict[str, tuple[str, ...]] = {
    "water": ("water",),
    "food": ("food",),
    "shelter": ("shelter",),
    "medical": ("medical_help",),
    "medicine": ("medical_products",),
    "evacuation": ("search_and_rescue", "refugees"),
    "clothing": ("clothing",),
    "transport": ("transport",),
}
# The naive baseline: one English word per category, anywhere in the message.
BASELINE_WORD = {
    "water": "water",
    "food": "food",
    "shelter": "shelter",
    "medical": "medical",
    "medicine": "medicine",
    "evacuation": "evacuation",
    "clothing": "clothes",
    "transport": "transport",
    "need": "need",
    "offer": "offer",
}
TARGETS = {"water", "food", "shelter", "medical"}  # recall ≥ 0.80 at precision ≥ 0.70
TARGET_RECALL, TARGET_PRECISION = 0.80, 0.70


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, predicted: bool, actual: bool) -> None:
        self.tp += predicted and actual
        self.fp += predicted and not actual
        self.fn += actual and not predicted

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r > 0 else float("nan")


def _has_word(text: str, word: str) -> bool:
    return re.search(rf"\b{word}\b", text, re.IGNORECASE) is not None


def _f(x: float) -> str:
    return "   -" if x != x else f"{x:.2f}"


def evaluate(rows: list[dict[str, str]], *, title: str) -> float:
    """Print the table for ``rows``; return the seconds spent parsing."""
    keys = [*LABELS, "need", "offer"]
    ours = {k: Counts() for k in keys}
    base = {k: Counts() for k in keys}
    urgent_path = {"1": [0, 0], "0": [0, 0]}  # actionable_haiti → [urgent or critical, total]
    seconds = 0.0
    for row in rows:
        text = row["message"]
        t0 = time.perf_counter()
        parsed = parse_sms(text)
        seconds += time.perf_counter() - t0
        for code, labels in LABELS.items():
            actual = any(row[label] == "1" for label in labels)
            ours[code].add(code in parsed.categories, actual)
            base[code].add(_has_word(text, BASELINE_WORD[code]), actual)
        for intent, label in (("need", "request"), ("offer", "offer")):
            ours[intent].add(parsed.intent == intent, row[label] == "1")
            base[intent].add(_has_word(text, BASELINE_WORD[intent]), row[label] == "1")
        flag = row["actionable_haiti"]
        if flag in urgent_path:
            urgent_path[flag][0] += parsed.urgency in ("critical", "urgent")
            urgent_path[flag][1] += 1
    print()
    print(f"== {title}")
    header = f"{'category':<11}{'labelled':>9} | {'parser P':>8} {'R':>5} {'F1':>5} | {'baseline':>8} {'P':>5} {'R':>5} {'F1':>5} | {'F1 ratio':>8}  target"
    print(header)
    print("-" * len(header))
    for k in keys:
        o, b = ours[k], base[k]
        name = "request" if k == "need" else k
        ratio = o.f1 / b.f1 if b.f1 == b.f1 and b.f1 > 0 else float("nan")
        target = ""
        if k in TARGETS:
            met = o.recall >= TARGET_RECALL and o.precision >= TARGET_PRECISION
            target = "met" if met else "MISSED"
        word = f'"{BASELINE_WORD[k]}"'
        print(
            f"{name:<11}{o.tp + o.fn:>9} | {_f(o.precision):>8} {_f(o.recall):>5} {_f(o.f1):>5} | "
            f"{word:>8} {_f(b.precision):>5} {_f(b.recall):>5} {_f(b.f1):>5} | {_f(ratio):>8}  {target}"
        )
    print()
    for flag, name in (("1", "actionable"), ("0", "not actionable")):
        hit, total = urgent_path[flag]
        share = hit / total if total else float("nan")
        print(f"urgent path ({name}, actionable_haiti={flag}): {hit}/{total} = {_f(share)} critical or urgent")
    return seconds


_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
_COMMON = frozenset(
    """a about after all also an and are as at be been but by can for from had has have he her his i if in
    into is it its me my no not of on or our out so that the their them there they this to up us was we were
    what when which who will with would you your""".split()  # noqa: SIM905 - a word list reads better
)


def explain(rows: list[dict[str, str]], code: str, *, top: int = 40) -> None:
    """Aggregate counts behind one decision: per matched cue, and per word among false negatives."""
    intent = {"request": "need", "offer": "offer"}.get(code)
    labels = (code,) if intent else LABELS[code]
    per_cue: dict[str, list[int]] = {}  # cue → [true positives, false positives, labelled without the decision]
    fn_words: dict[str, int] = {}
    df: dict[str, list[int]] = {}  # word → [messages, labelled messages]
    outcome = {"tp": 0, "fp": 0, "fn": 0}
    for row in rows:
        text = row["message"]
        parsed = parse_sms(text)
        actual = any(row[label] == "1" for label in labels)
        predicted = parsed.intent == intent if intent else code in parsed.categories
        if intent:
            cues = [f"{kind}:{cue}" for kind, found in intent_cues(text).items() for cue in found]
        else:
            cues = list(category_cues(text).get(code, ()))
        for cue in dict.fromkeys(cues):
            counts = per_cue.setdefault(cue, [0, 0, 0])
            if predicted:
                counts[0 if actual else 1] += 1
            elif actual:
                counts[2] += 1
        words = {w.lower() for w in _WORD.findall(text)} - _COMMON
        for w in words:
            d = df.setdefault(w, [0, 0])
            d[0] += 1
            d[1] += actual
        if predicted:
            outcome["tp" if actual else "fp"] += 1
        elif actual:
            outcome["fn"] += 1
            for w in words:
                fn_words[w] = fn_words.get(w, 0) + 1
    print()
    print(
        f"== {code}: {outcome['tp']} true positives, {outcome['fp']} false positives, {outcome['fn']} false negatives"
    )
    print(f"{'cue':<40}{'TP':>5}{'FP':>5}{'FN':>5}  (FN: labelled, cue found, decision not taken)")
    for cue, (tp, fp, fn) in sorted(per_cue.items(), key=lambda kv: (-(kv[1][0] + kv[1][1] + kv[1][2]), kv[0])):
        print(f"{cue:<40}{tp:>5}{fp:>5}{fn:>5}")
    print()
    print(f"words most frequent among the {outcome['fn']} false negatives (messages with the word: all, labelled)")
    for w, n in sorted(fn_words.items(), key=lambda kv: (-kv[1], kv[0]))[:top]:
        print(f"{w:<24}{n:>5}   {df[w][0]:>5} {df[w][1]:>5}")


def trained_baseline(train: list[dict[str, str]], test: list[dict[str, str]]) -> None:
    """A bag-of-words classifier per target category, fitted on ``train``, scored on ``test``."""
    try:
        import numpy as np
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import precision_recall_curve
        from sklearn.model_selection import StratifiedKFold, cross_val_predict
        from sklearn.pipeline import make_pipeline
    except ImportError:
        print("\ntrained baseline skipped: scikit-learn is absent (pip install -e '.[bench]')")
        return

    def best_threshold(y: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
        """(threshold, recall): the highest recall at precision >= the target, or (inf, 0)."""
        precision, recall, thresholds = precision_recall_curve(y, scores)
        ok = np.flatnonzero(precision[:-1] >= TARGET_PRECISION)
        if ok.size == 0:
            return float("inf"), 0.0
        i = ok[np.argmax(recall[ok])]
        return float(thresholds[i]), float(recall[i])

    print()
    print(
        f"== trained baseline: TF-IDF 1-2-grams + logistic regression (C=10, balanced), fitted on "
        f"{len(train)} validation messages, scored on {len(test)} test messages"
    )
    header = (
        f"{'category':<11}{'labelled':>9} | {'trained P':>9} {'R':>5} {'F1':>5} | "
        f"{'best R at P>=' + format(TARGET_PRECISION, '.2f') + ' on test':>26}"
    )
    print(header)
    print("-" * len(header))
    train_text = [row["message"] for row in train]
    test_text = [row["message"] for row in test]
    for code in [code for code in LABELS if code in TARGETS]:
        y_train = np.array([any(row[label] == "1" for label in LABELS[code]) for row in train])
        y_test = np.array([any(row[label] == "1" for label in LABELS[code]) for row in test])

        def model() -> Any:
            return make_pipeline(
                TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
                LogisticRegression(C=10, class_weight="balanced", max_iter=3000),
            )

        folds = StratifiedKFold(5, shuffle=True, random_state=0)
        held_out = cross_val_predict(model(), train_text, y_train, cv=folds, method="predict_proba")[:, 1]
        threshold, _ = best_threshold(y_train, held_out)
        scores = model().fit(train_text, y_train).predict_proba(test_text)[:, 1]
        counts = Counts()
        for predicted, actual in zip(scores >= threshold, y_test, strict=True):
            counts.add(bool(predicted), bool(actual))
        _, upper = best_threshold(y_test, scores)
        print(
            f"{code:<11}{int(y_test.sum()):>9} | {_f(counts.precision):>9} {_f(counts.recall):>5} "
            f"{_f(counts.f1):>5} | {_f(upper):>26}"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", choices=("test", "validation"), default="test")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    ap.add_argument(
        "--explain",
        choices=(*LABELS, "request", "offer"),
        help="also print aggregate counts per cue for this category or intent (for tuning on validation)",
    )
    ap.add_argument(
        "--trained",
        action="store_true",
        help="also fit a TF-IDF logistic regression per target category on validation.csv (test split only)",
    )
    args = ap.parse_args()
    if args.trained and args.split != "test":
        ap.error("--trained fits on validation.csv and scores test.csv: use it with --split test")
    path = args.data_dir / f"{args.split}.csv"
    if not path.is_file():
        print(f"skipped: {path} is absent (the disaster_messages data set is not shipped with aidmatch)")
        return 0

    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for line in machine_info():
        print(line)
    print(f"data:    {path.name}: {len(rows)} messages (English translations), CC BY 4.0, Munro 2012")

    seconds = evaluate(rows, title=f"all {len(rows)} messages (news and direct)")
    print(f"parse:   {seconds / len(rows) * 1e6:.0f} µs per message (one core)")
    direct = [row for row in rows if row["genre"] == "direct"]
    evaluate(direct, title=f"{len(direct)} direct messages only (SMS and web messages, no news)")
    if args.explain:
        explain(rows, args.explain)
    if args.trained:
        validation = args.data_dir / "validation.csv"
        with validation.open(newline="", encoding="utf-8") as fh:
            trained_baseline(list(csv.DictReader(fh)), rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
