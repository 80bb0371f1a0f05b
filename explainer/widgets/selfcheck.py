"""The self-check at the end of a chapter: each question of :mod:`explainer.course.selfcheck` as a small form.

A question asks for a number (a text box) or a choice (radio buttons). **Check** judges the answer with the
package's live computation: a right answer shows the explanation with its numbers, a wrong one a hint (never the
answer); **Show the answer** reveals the answer and its explanation. Nothing is computed until a button is pressed.

Tests and the browser drive it through :meth:`SelfCheck.check` and :meth:`SelfCheck.reveal`, which set the input
and press the buttons exactly as a reader would.
"""

from __future__ import annotations

import html
import re
from typing import List, Optional, Union

import ipywidgets as widgets

from explainer.course import selfcheck as S

__all__ = ["SelfCheck"]

_GOOD, _BAD, _NOTE = "#1B7837", "#B00020", "#555555"


def _answer_text(q: S.Question, answer: S.Answer) -> str:
    if q.choices:
        return str(answer)
    v = float(answer)
    text = f"{v:.4g}" if abs(v - round(v)) > 1e-9 else f"{int(round(v))}"
    return f"{text} {q.unit}".strip()


def _plain(markup: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", markup)).strip()


class _QuestionView:
    """One question: its prompt, an input, the two buttons and the feedback line."""

    def __init__(self, number: int, q: S.Question):
        self.q = q
        self.correct: Optional[bool] = None
        self.attempts = 0
        self.prompt = widgets.HTML(f"<div style='line-height:1.45;padding:4px 0'><b>{number}.</b> "
                                   f"{html.escape(q.prompt)}</div>",
                                   layout=widgets.Layout(width="100%"))
        if q.choices:
            self.input: widgets.Widget = widgets.RadioButtons(
                options=list(q.choices), value=None, description="", tooltip="pick one answer",
                layout=widgets.Layout(width="auto", max_width="100%"))
            self.input.add_class("explainer-selfcheck-choices")
        else:
            self.input = widgets.Text(value="", placeholder="a number, e.g. 3, 0.5 or 1/21", description="answer",
                                      tooltip="type a number", style={"description_width": "initial"},
                                      layout=widgets.Layout(width="260px"))
        unit = widgets.HTML(html.escape(q.unit)) if q.unit and not q.choices else None
        self.check_button = widgets.Button(description="Check", tooltip="check your answer", button_style="primary",
                                           layout=widgets.Layout(width="auto"))
        self.show_button = widgets.Button(description="Show the answer", tooltip="reveal the answer and why",
                                          layout=widgets.Layout(width="auto"))
        self.feedback = widgets.HTML("", layout=widgets.Layout(width="100%"))
        self.feedback.add_class("explainer-selfcheck-feedback")
        self.check_button.on_click(lambda _b: self.on_check())
        self.show_button.on_click(lambda _b: self.on_show())
        row = [w for w in (self.input, unit, self.check_button, self.show_button) if w is not None]
        self.widget = widgets.VBox([self.prompt, widgets.HBox(row, layout=widgets.Layout(flex_flow="row wrap",
                                                                                           align_items="center")),
                                    self.feedback], layout=widgets.Layout(margin="0 0 10px 0", width="100%"))
        self.widget.add_class("explainer-selfcheck-question")

    def _say(self, colour: str, text: str) -> None:
        self.feedback.value = (f"<div style='color:{colour};white-space:normal;line-height:1.45;padding:2px 0'>"
                               f"{html.escape(text)}</div>")

    def on_check(self) -> None:
        value = self.input.value
        if value is None or (isinstance(value, str) and not value.strip()):
            self._say(_NOTE, "Pick one of the answers first." if self.q.choices else "Type a number first.")
            return
        try:
            verdict = self.q.check(value)
        except ValueError as e:
            self._say(_NOTE, str(e).replace("response must be", "The answer must be"))
            return
        except Exception as e:  # the live computation failed: say so, never a traceback in the notebook
            self._say(_BAD, f"Could not compute the answer ({type(e).__name__}: {e}).")
            return
        self.attempts += 1
        self.correct = verdict.correct
        if verdict.correct:
            self._say(_GOOD, "\u2713 " + verdict.message)
        else:
            more = " (Or press Show the answer.)" if self.attempts >= 2 else ""
            self._say(_BAD, "\u2717 " + verdict.message + more)

    def on_show(self) -> None:
        try:
            sol = self.q.solution()
        except Exception as e:
            self._say(_BAD, f"Could not compute the answer ({type(e).__name__}: {e}).")
            return
        self._say(_NOTE, f"The answer: {_answer_text(self.q, sol.answer)}. {sol.explanation}")


class SelfCheck:
    """The questions that close ``chapter``, each answered in the widget and judged by the package."""

    def __init__(self, chapter: int):
        self.chapter = chapter
        self.questions: List[S.Question] = S.questions(chapter)
        self.items = [_QuestionView(i, q) for i, q in enumerate(self.questions, 1)]
        intro = widgets.HTML(f"<b style='font-size:15px'>Check yourself: {len(self.items)} questions</b>")
        self.widget = widgets.VBox([intro] + [item.widget for item in self.items],
                                   layout=widgets.Layout(width="100%", max_width="100%"))
        self.widget.add_class("explainer-selfcheck")

    def _item(self, which: Union[int, str]) -> _QuestionView:
        if isinstance(which, str):
            for item in self.items:
                if item.q.key == which:
                    return item
            raise ValueError(f"question {which!r} is not in chapter {self.chapter}; its questions: "
                             f"{[i.q.key for i in self.items]}")
        if isinstance(which, bool) or not isinstance(which, int) or not 0 <= which < len(self.items):
            raise ValueError(f"which must be a question key or an index 0..{len(self.items) - 1}, got {which!r}")
        return self.items[which]

    def check(self, which: Union[int, str], response: Union[str, float, int]) -> str:
        """Answer question ``which`` (index or key) as a reader would: fill in the input, press Check.

        Returns the feedback as plain text. A number may be given as a number or as its text.
        """
        item = self._item(which)
        item.input.value = response if item.q.choices else str(response)
        item.check_button.click()
        return _plain(item.feedback.value)

    def reveal(self, which: Union[int, str]) -> str:
        """Press Show the answer on question ``which``; returns the feedback as plain text."""
        item = self._item(which)
        item.show_button.click()
        return _plain(item.feedback.value)

    def _static_html(self) -> str:
        parts = [f"<div class='explainer-selfcheck-static'><b>Check yourself: {len(self.items)} questions</b><ol>"]
        for q in self.questions:
            choices = "".join(f"<li>{html.escape(c)}</li>" for c in q.choices)
            parts.append(f"<li>{html.escape(q.prompt)}" + (f"<ul>{choices}</ul>" if choices else "") + "</li>")
        parts.append("</ol><i>Run the notebook to check your answers: the package computes each one.</i></div>")
        return "".join(parts)

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.widget._repr_mimebundle_(**kwargs) or {}
        bundle["text/html"] = self._static_html()
        bundle["text/plain"] = "\n".join(f"{i}. {q.prompt}" for i, q in enumerate(self.questions, 1))
        return bundle
