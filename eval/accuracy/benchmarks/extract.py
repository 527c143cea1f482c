"""Answer extraction from generated text, restated from the lmms-eval 0.7.3 tasks (own code; the rules are theirs).

Each function returns the extracted letter (``""`` when none). Where lmms-eval falls back to a *random* letter
(LongVideoBench, EgoSchema) these return ``""``: tokpress counts such a generation as wrong, so that runs are
deterministic (the accuracy can be lower than lmms-eval's by up to chance x the share of unparsable answers).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# lmms-eval tasks/_task_utils/mcq_extract.py: phrases announcing the answer, and how much each format is trusted
ANSWER_PHRASES = (
    "the answer is", "answer is", "the correct answer is", "correct answer is", "the best answer is",
    "best answer is", "the correct option is", "correct option is", "the best option is", "best option is",
    "the choice is", "choice is", "the correct choice is", "correct choice is", "i choose", "i select", "i pick",
    "my answer is", "my choice is", "옵션", "정답은", "답은", "답:", "答案是", "答案为", "选", "答えは",
)  # fmt: skip
_RANK = {"start": 10, "end": 9, "phrase": 7, "parentheses": 6, "period": 5, "colon": 4, "right_paren": 3, "space": 2}
_SUFFIX_FORMS = (("period", "{}."), ("colon", "{}:"), ("right_paren", "{})"), ("space", "{} "))


def extract_mcq_letter(response: str, choices: Sequence[str]) -> str:
    """lmms-eval's ``extract_mcq_answer`` (Video-MME): candidates in several formats, the most trusted format
    wins, the last occurrence within a format; any bare occurrence only when nothing else matched."""
    if not response or not response.strip():
        return ""
    text = response.strip().strip(",.!?;:'\"")
    text = f" {text} "
    found: list[tuple[int, int, str]] = []  # (rank, position, letter)
    for ch in choices:
        if f"({ch})" in text:
            found.append((_RANK["parentheses"], text.rfind(f"({ch})"), ch))
    for form, pattern in _SUFFIX_FORMS:
        for ch in choices:
            token = pattern.format(ch)
            if token in text:
                found.append((_RANK[form], text.rfind(token), ch))
    lower = text.lower()
    for phrase in ANSWER_PHRASES:
        at = lower.find(phrase)
        if at >= 0:
            for ch in choices:
                pos = text.find(ch, at + len(phrase))
                if pos >= 0:
                    found.append((_RANK["phrase"], pos, ch))
    core = text.strip()
    for ch in choices:
        if core.startswith(ch) and (len(core) == 1 or not core[1].isalpha()):
            found.append((_RANK["start"], 0, ch))
        if core.endswith(ch) and (len(core) == 1 or not core[-2].isalpha()):
            found.append((_RANK["end"], len(text) - 1, ch))
    if not found:
        found = [(0, text.rfind(ch), ch) for ch in choices if ch in text]
    return max(found, key=lambda c: (c[0], c[1]))[2] if found else ""


# lmms-eval tasks/mvbench/utils.py mcq_acc: punctuation handling of the VQA evaluation
_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_NUMBER = re.compile(r"(\d)(,)(\d)")


def _vqa_punctuation(text: str) -> str:
    out = text
    for p in _PUNCT:
        if p + " " in text or " " + p in text or _COMMA_NUMBER.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out)


def extract_mvbench(response: str) -> str:
    """MVBench (``mcq_acc``'s processing of the prediction): ``"B. text"`` -> B; else, punctuation removed, the
    first standalone letter A-E in any case; else ``""``."""
    head = re.match(r"^([A-E])\.\s*(.+)$", response.strip(), re.IGNORECASE | re.DOTALL)
    if head:
        return head.group(1).upper()
    text = _vqa_punctuation(response.replace("\n", " ").replace("\t", " ").strip())
    text = text.strip("'").strip('"').strip(")").strip("(").strip().lower()
    match = re.search(r"\b([A-E])\b", text, re.IGNORECASE)
    return match.group(1).upper() if match else ""


# lmms-eval tasks/longvideobench/utils.py parse_multi_choice_response
LVB_PREFIXES = (
    "The best answer is", "The correct answer is", "The answer is", "The answer", "The best option is",
    "The correct option is", "Best answer:", "Best option:",
)  # fmt: skip


def extract_longvideobench(response: str) -> str:
    """LongVideoBench: answer prefixes removed, the first capital A-E (none, or > 10 words without one: ``""``)."""
    text = response.strip()
    for prefix in LVB_PREFIXES:
        text = text.replace(prefix, "")
    match = re.search(r"[ABCDE]", text)
    return match.group(0) if match else ""


def extract_egoschema(response: str, options: Sequence[str]) -> str:
    """EgoSchema (MMMU-style ``parse_multi_choice_response``): ``(X)``, ``"X "`` or ``"X."`` candidates, else (in
    answers longer than five words) an option text quoted; several: the one whose last occurrence comes first."""
    letters = "ABCDE"[: len(options)]
    text = response
    for ch in (",", ".", "!", "?", ";", ":", "'"):
        text = text.strip(ch)
    text = f" {text} "
    tokens = [f"({ch})" for ch in letters if f"({ch})" in text]
    tokens += [f"{ch} " for ch in letters if f"{ch} " in text]
    tokens += [f"{ch}." for ch in letters if f"{ch}." in text]
    if tokens:
        best = min(tokens, key=text.rfind)  # first on ties, as numpy's argmin
        return best.strip("(). ")
    if len(text.split()) > 5:
        lower = text.lower()
        hits = [ch for ch, opt in zip(letters, options) if opt.strip().lower() in lower]
        if hits:
            return min(hits, key=lambda ch: lower.rfind(options[letters.index(ch)].strip().lower()))
    return ""
