"""The streamed text deltas are built from a per-stream template (`Shape.delta_event`): property
test that it is the pydantic model's event, byte for byte, for any text and model name."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from serving.http.answers import Shape, sse


@settings(max_examples=400, deadline=None)
@given(
    text=st.text(st.characters(codec=None), min_size=1, max_size=40),  # lone surrogates included
    model=st.text(st.characters(codec=None), min_size=1, max_size=20),
    chat=st.booleans(),
)
def test_a_delta_event_from_the_template_is_the_models_event_byte_for_byte(
    text: str, model: str, chat: bool
) -> None:
    shape = Shape(chat=chat, model=model)
    assert shape.delta_event(text) == sse(shape.chunk(text))
    assert shape.delta_event("a") == sse(shape.chunk("a"))  # the template, reused


def test_the_template_is_used_for_plain_text() -> None:
    shape = Shape(chat=True, model="dense")
    assert shape.delta_event("x").startswith(b'data: {"id":"chatcmpl-')
    assert shape.__dict__["_delta_parts"] is not None  # made once, kept on the shape
