"""Generation prompts (method §7): one batch rendered as numbered facts, one task per mode.

Every prompt states the target language, asks to keep names as given, to add no facts
beyond the batch and to write self-contained questions. ``PROMPT_VERSION`` is part of every
``qa_id``: change it whenever a prompt's wording changes, so old QA is not mistaken for new.
"""

from __future__ import annotations

from graphgen_spark.prompts import fenced

PROMPT_VERSION = "gen-1"
LANGUAGE_NAME = {"en": "English", "zh": "Chinese (简体中文)"}

_RULES = (
    "Rules: write in {language}; keep every entity name exactly as given; use only facts stated "
    "in the numbered lines, add nothing else; every question must be self-contained (never "
    'refer to "the text", "the passage" or "the list").'
)

QUESTION_STYLE = {
    "direct": "Ask directly for the fact.",
    "why_how": "Ask why or how, so the answer explains a cause or a mechanism.",
    "scenario": "Frame the question as a short realistic scenario.",
    "comparison": "Ask the reader to compare or contrast two things from the facts.",
    "definition": "Ask what something is or means.",
}
DIFFICULTY = {
    "easy": "Keep it easy: a short, plain answer about the core fact only.",
    "medium": "",
    "hard": "Make it hard: the question needs several of the facts and the answer links them "
    "fully, still without adding any fact.",
}
ANSWER_STYLE = {
    "logical": "Write it logically: foundations first, then consequences, with explicit cause, "
    "sequence and contrast connectives.",
    "executive_summary": "Write it as an executive summary: conclusion first, then support.",
    "cross_domain_analogy": "Explain it through an analogy from another domain, then the facts.",
    "critical_analysis": "Write it as a critical analysis weighing the facts against each other.",
    "first_person_narrative": "Write it as a first-person narrative of someone who knows it.",
    "historical_evolution": "Write it as the history of how these facts came about.",
    "popular_science": "Write it as popular science for a curious non-expert.",
    "qa_dialogue": "Write it as a short dialogue between a learner and an expert.",
    "technical_deep_dive": "Write it as a technical deep dive, precise and dense.",
}

_TASKS = {
    "atomic": "Write one question about the main point or a key detail of this fact, and its "
    "answer taken directly from it. Return JSON {{question, answer}}.",
    "aggregated_text": "Rewrite ALL of these entities and relations as one coherent text that "
    "states exactly their facts, no more and no fewer. {answer_style} Return JSON {{text}}.",
    "aggregated_question": "Here is a text. Write the single question that this whole text "
    "answers. Return JSON {{question}}.",
    "multi_hop": "Write one question that can only be answered by chaining at least two of the "
    "numbered relations, and its concise answer, inferable from these facts alone. List the "
    "numbers of the relations used. Return JSON {{question, answer, relations_used}}.",
    "cot_plan": "Write one question about the core theme of these facts that can be verified "
    "from them alone, and an abstract plan of the minimal reasoning steps to answer it (no "
    "values, no conclusions). Return JSON {{question, reasoning_path}}.",
    "cot_answer": "Carry out this plan on the facts in flowing prose (no numbered list) and end "
    "with the answer.\nQuestion: {question}\nPlan: {plan}\nReturn JSON {{answer}}.",
    "multiple_choice": "Write {n} multiple-choice questions. Each has options A, B, C and D: "
    "exactly one correct, three plausible but wrong. Return JSON {{items: [{{question, "
    "options: {{A, B, C, D}}, answer}}]}} where answer is the correct letter.",
    "multi_answer": "Write {n} multiple-answer questions. Each has options A, B, C and D, at "
    "least one correct and at least one wrong. Return JSON {{items: [{{question, options: "
    "{{A, B, C, D}}, answers}}]}} where answers lists the correct letters.",
    "fill_in_blank": "Write {n} statements from these facts, each with one or more blanks "
    "written ____, and the words that fill them, copied verbatim from the facts in blank order. "
    "Return JSON {{items: [{{question, answers}}]}}.",
    "true_false": "Write {n} statements decidable from these facts: some true, some false "
    "(changed in one detail). Return JSON {{items: [{{statement, answer}}]}} with answer true "
    "or false.",
}


def render_batch(entities: list[tuple[str, str]], relations: list[tuple[str, str, str]]) -> str:
    """Numbered ``NAME: description`` and ``SRC -- DST: description`` lines (§7.1)."""
    lines = []
    if entities:
        lines.append("Entities:")
        lines += [
            f"{i}. {name}: {desc}" if desc else f"{i}. {name}"
            for i, (name, desc) in enumerate(entities, 1)
        ]
    if relations:
        lines.append("Relations:")
        lines += [
            f"{i}. {src} -- {dst}: {desc}" if desc else f"{i}. {src} -- {dst}"
            for i, (src, dst, desc) in enumerate(relations, 1)
        ]
    return "\n".join(lines)


def generate_messages(
    task: str,
    facts: str,
    language: str,
    *,
    question_style: str = "direct",
    difficulty: str = "",
    answer_style: str = "logical",
    n: int = 1,
    question: str = "",
    plan: str = "",
    text: str = "",
) -> list[dict[str, str]]:
    """The user message of one generation step (``task`` is a key of the task table)."""
    body = _TASKS[task].format(
        n=n, question=question, plan=plan, answer_style=ANSWER_STYLE[answer_style]
    )
    parts = [body]
    if task not in ("aggregated_text", "cot_answer"):
        parts.append(QUESTION_STYLE[question_style])
    if DIFFICULTY.get(difficulty):
        parts.append(DIFFICULTY[difficulty])
    parts.append(_RULES.format(language=LANGUAGE_NAME[language]))
    parts.append(fenced(text if task == "aggregated_question" else facts))
    return [{"role": "user", "content": "\n".join(parts)}]


def language_retry_message(language: str) -> dict[str, str]:
    return {
        "role": "user",
        "content": f"Your answer was not in {LANGUAGE_NAME[language]}. Write it again, "
        f"entirely in {LANGUAGE_NAME[language]}, same JSON shape.",
    }


def qa_check_messages(facts: str, question: str, answer: str, language: str) -> list[dict]:
    """Ask whether an answer is supported by the batch's facts alone (§8.5 qa_check)."""
    content = (
        "Is the answer below fully supported by the numbered facts, with nothing added that "
        "they do not state? Reply with JSON {supported, reason}; reason is one short sentence "
        f"in {LANGUAGE_NAME[language]}.\nQuestion: {question}\nAnswer: {answer}\n" + fenced(facts)
    )
    return [{"role": "user", "content": content}]
