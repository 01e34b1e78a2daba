"""The official `openai` Python client against a running `frugal serve`: replies whole and
streamed (the same text under greedy decoding, usage in both), plain completions, the model
list, and the client's typed errors for a bad key, an unknown model and an oversized request.
Exits non-zero on the first failed check.

    python openai_client.py BASE_URL API_KEY
"""

import sys

import openai
from openai import OpenAI

base, key = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=60)

models = client.models.list()
ids = [m.id for m in models.data]
assert len(ids) == 1, ids
model = ids[0]

messages = [{"role": "user", "content": "say hi"}]
whole = client.chat.completions.create(model=model, messages=messages, max_tokens=16, temperature=0)
text = whole.choices[0].message.content
assert whole.object == "chat.completion", whole
assert whole.choices[0].message.role == "assistant"
assert whole.choices[0].finish_reason in ("stop", "length"), whole.choices[0].finish_reason
u = whole.usage
assert u.prompt_tokens > 0 and 1 <= u.completion_tokens <= 16, u
assert u.total_tokens == u.prompt_tokens + u.completion_tokens, u

stream = client.chat.completions.create(
    model=model, messages=messages, max_tokens=16, temperature=0, stream=True,
    stream_options={"include_usage": True},
)
pieces, finish, usage = [], None, None
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for c in chunk.choices:
        if c.delta.content:
            pieces.append(c.delta.content)
        if c.finish_reason:
            finish = c.finish_reason
assert "".join(pieces) == text, ("".join(pieces), text)
assert finish == whole.choices[0].finish_reason, finish
assert usage is not None and usage.completion_tokens == u.completion_tokens, usage

# A multi-turn conversation with a system message.
turns = [
    {"role": "system", "content": "You are brief."},
    {"role": "user", "content": "hello"},
    {"role": "assistant", "content": text},
    {"role": "user", "content": "and?"},
]
again = client.chat.completions.create(model=model, messages=turns, max_tokens=8, temperature=0.7, seed=3)
assert again.usage.prompt_tokens > u.prompt_tokens

done = client.completions.create(model=model, prompt="the cat", max_tokens=8, temperature=0)
assert done.object == "text_completion" and isinstance(done.choices[0].text, str), done
assert 1 <= done.usage.completion_tokens <= 8

streamed = "".join(
    c.choices[0].text
    for c in client.completions.create(model=model, prompt="the cat", max_tokens=8, temperature=0, stream=True)
    if c.choices
)
assert streamed == done.choices[0].text, (streamed, done.choices[0].text)


def raises(kind, call):
    try:
        call()
    except kind as e:
        return e
    raise AssertionError(f"expected {kind.__name__}")


e = raises(openai.AuthenticationError, lambda: OpenAI(base_url=base + "/v1", api_key="not-the-key", max_retries=0)
           .chat.completions.create(model=model, messages=messages))
assert "not valid" in e.message, e.message
e = raises(openai.NotFoundError, lambda: client.chat.completions.create(model="gpt-4o", messages=messages))
assert "does not exist" in e.message, e.message
e = raises(openai.BadRequestError, lambda: client.chat.completions.create(
    model=model, messages=messages, max_tokens=10**9))
assert e.code == "context_length_exceeded", e
e = raises(openai.BadRequestError, lambda: client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "word " * 5000}]))
assert e.code == "context_length_exceeded", e
e = raises(openai.BadRequestError, lambda: client.chat.completions.create(model=model, messages=messages, n=2))
assert e.param == "n", e

print("openai client: all checks passed")
