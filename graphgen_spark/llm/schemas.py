"""Small response models shared by several calls (stage-specific ones live with their stage)."""

from __future__ import annotations

from pydantic import BaseModel


class TextAnswer(BaseModel):
    """A single text field (summaries, rewritten text); plain-text replies are accepted."""

    text: str


class MoreNeeded(BaseModel):
    """A yes/no decision such as the gleaning check ("are entities still missing?")."""

    more: bool
