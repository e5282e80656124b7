"""Prompt templates per property (fineked/templates/templates.json): [X] is the subject, the object comes last."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fineked.paths import TEMPLATES


@dataclass(frozen=True)
class RelationTemplates:
    relation_id: str
    cloze: str
    question: str
    paraphrases: tuple[str, ...]

    def fill(self, template: str, subject: str) -> str:
        return template.replace("[X]", subject)

    def prompt(self, subject: str) -> str:
        return self.fill(self.cloze, subject)

    def paraphrase_prompts(self, subject: str, n: int) -> list[str]:
        """The first n paraphrase clozes; a question form fills in when a relation has too few."""
        out = [self.fill(t, subject) for t in self.paraphrases[:n]]
        if len(out) < n and self.question:
            out.append(f"Question: {self.fill(self.question, subject)} Answer:")
        return out


def load_templates(path: Path = TEMPLATES) -> dict[str, RelationTemplates]:
    raw = json.loads(path.read_text())
    return {pid: RelationTemplates(pid, t["cloze"], t.get("question") or "", tuple(t.get("paraphrases") or ()))
            for pid, t in raw.items()}
