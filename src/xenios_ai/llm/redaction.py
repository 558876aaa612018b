"""Reversible redaction: personal details out of what the LLM is sent, back into what it answers.

Before a call, emails, URLs, IBANs, card numbers, phone numbers, postal codes and the names the caller
passes (``redact_names``: the client and people in their life, which the MVP knows) are replaced by
stable placeholders, ``[EMAIL_1]``, ``[PERSON_2]``: the same value gets the same placeholder throughout a
request, so the model can still tell people apart. Its answer gets the values back (`Redactor.restore`),
streamed answers too, where a placeholder may arrive split over two deltas (`StreamRestorer` holds back a
possible placeholder start until it is complete).

Detectors are regular expressions and the known names, no NER model: what the MVP must protect are the
client and the people it names, which it knows exactly (Supabase), and the structured identifiers, which
have shapes (IBAN checked by mod 97, card numbers by Luhn, so an order number is left alone). spaCy's
English models are not on PyPI, and a statistical NER guesses where the MVP knows. One compiled pattern
finds the codes (IBAN, postal code, phone, card) in one pass, run only when the text has a digit; emails
are found from their "@", URLs from "http"/"www."; the names are a per-request pattern (cached by ``re``).

Fails closed: any error while redacting raises `RedactionFailed` (500 ``redaction_failed``) before
anything is sent; so does a text that already holds placeholder-shaped tokens (they could not be told
apart from ours when the answer is restored).

When: a request's ``redact`` option (``true``: every kind; a list: those kinds) or ``redact_names``, or its
task in LLM_REDACT_TASKS (every kind), unless the request says ``redact: false``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Iterable, Sequence
from typing import Any, get_args

import msgspec

from xenios_ai.errors import XeniosError
from xenios_ai.llm import wire
from xenios_ai.llm.redaction_detectors import (
    CODE_KINDS,
    DATE,
    DIGITS,
    DOMAIN,
    GROUP_KIND,
    LOCAL_CHARS,
    SEPARATORS,
    UPPER,
    URL,
    WORDS,
    iban_ok,
    is_word,
    luhn,
    names_pattern,
)
from xenios_ai.llm.types import Completion, Delta, Options, RedactKind, StreamEvent

KINDS: tuple[RedactKind, ...] = get_args(RedactKind)
_LABEL = {
    "email": "EMAIL",
    "url": "URL",
    "iban": "IBAN",
    "card": "CARD",
    "phone": "PHONE",
    "postcode": "POSTCODE",
    "name": "PERSON",
}
_LABELS = "|".join(sorted(set(_LABEL.values()), key=len, reverse=True))
PLACEHOLDER = re.compile(rf"\[({_LABELS})_(\d{{1,6}})\]")
_PARTIAL = re.compile(r"\[[A-Z]{0,8}(?:_\d{0,6})?$")
"""The end of a text that may be the start of a placeholder (held back in a stream)."""
_MAX_PLACEHOLDER = len("[POSTCODE_999999]")


class RedactionFailed(XeniosError):
    """Redaction could not be done: the request is not sent."""

    status = 500
    default_code = "redaction_failed"


class Redactor:
    """One request's redaction: its placeholders both ways."""

    def __init__(self, kinds: Iterable[RedactKind], names: Sequence[str] = ()) -> None:
        self.kinds = frozenset(kinds) | ({"name"} if names else frozenset())
        self.names = [" ".join(n.split()) for n in names]
        self._names, self._forms, self._person, self._exact = (
            names_pattern(tuple(self.names)) if "name" in self.kinds else (None, None, {}, frozenset())
        )
        self._by_value: dict[tuple[str, str], str] = {}
        self._by_placeholder: dict[str, str] = {}
        self._count: dict[str, int] = {}
        self._codes: dict[tuple[str | None, str], tuple[str, str, str, str] | tuple[()]] = {}
        self.replaced = 0

    def _placeholder(self, label: str, key: str, original: str) -> str:
        found = self._by_value.get((label, key))
        if found is None:
            n = self._count[label] = self._count.get(label, 0) + 1
            found = f"[{label}_{n}]"
            self._by_value[(label, key)] = found
            self._by_placeholder[found] = original
        self.replaced += 1
        return found

    def _code(self, match: re.Match[str]) -> str:
        value = match.group()
        memo_key = (match.lastgroup, value)
        memo = self._codes.get(memo_key)
        if memo is None:
            memo = self._codes[memo_key] = self._classify(match.lastgroup or "", value)
        if not memo:
            return value
        head, label, key, original = memo
        return head + self._placeholder(label, key, original)

    def _classify(self, group: str, value: str) -> tuple[str, str, str, str] | tuple[()]:
        """What a code match becomes: (head kept, label, key, value), or () when it stays as it is (not
        a valid IBAN / card / phone number, or a kind not asked for). Memoised per request in `_code`: a
        transcript repeats its phone numbers and codes, and the checks (Luhn, mod 97) cost more than a
        lookup."""
        kind = GROUP_KIND[group]
        if kind == "digits":
            digits = value.translate(SEPARATORS)
            if 13 <= len(digits) <= 19 and value[0] != "+" and luhn(digits):
                kind = "card"
            elif len(digits) <= 15 and not (len(digits) == 8 and DATE.fullmatch(value)):
                kind = "phone"
            else:
                return ()
        elif kind == "iban" and not iban_ok(value):
            return ()
        if kind not in self.kinds:
            return ()
        head = ""
        if (
            kind == "postcode"
            and value[2:3] == " "
            and value[:2].isalpha()
            and value[3:].replace("-", "").isdigit()
        ):
            head, value = value[:3], value[3:]  # a US ZIP code: the state stays
        key = value.translate(SEPARATORS) if kind in ("phone", "card", "iban") else value.casefold()
        return head, _LABEL[kind], key, value

    def _emails(self, text: str) -> str:
        """Emails, found from their "@" (rare) rather than by trying every word."""
        out: list[str] = []
        last = 0
        at = text.find("@")
        while at != -1:
            start, lowest = at, max(last, at - 64)
            while start > lowest and text[start - 1] in LOCAL_CHARS:
                start -= 1
            domain = DOMAIN.match(text, at + 1) if start < at else None
            if domain is not None:
                value = text[start : domain.end()]
                out.append(text[last:start])
                out.append(self._placeholder("EMAIL", value.casefold(), value))
                last = domain.end()
            at = text.find("@", max(at + 1, last))
        out.append(text[last:])
        return "".join(out)

    def _url(self, match: re.Match[str]) -> str:
        value = match.group()
        return self._placeholder("URL", value, value)

    def _names_by_find(self, text: str) -> str:
        """The names replaced, found by the lower-cased forms' pattern on the lower-cased text (one scan;
        ``str.find`` per form with the word checks in Python was ~4x slower on text dense with names); the
        cased pattern does it when lower-casing changes the text's length (a few non-ASCII letters).
        Same result as collecting every form's word-bounded occurrences and taking them from the left,
        the longest first: a common-word match that is skipped ("will") is one word, so no other
        occurrence can start inside it."""
        lowered = text.lower()
        if len(lowered) != len(text):
            assert self._names is not None
            return self._names.sub(self._person_of, text)
        assert self._forms is not None
        out: list[str] = []
        last = 0
        search = self._forms.search
        placeholders: dict[int, str] = {}  # a person's placeholder, once looked up
        match = search(lowered)
        while match is not None:
            start, end = match.span()
            if start and is_word(lowered[start - 1]):
                match = search(lowered, start + 1)
                continue
            found = text[start:end]
            key = lowered[start:end]
            if " " in found or key not in WORDS or found in self._exact:  # "will" is not "Will"
                index = self._person[key]
                out.append(text[last:start])
                placeholder = placeholders.get(index)
                if placeholder is None:
                    placeholder = placeholders[index] = self._placeholder(
                        "PERSON", str(index), self.names[index]
                    )
                else:
                    self.replaced += 1
                out.append(placeholder)
                last = end
            match = search(lowered, end)
        if not out:
            return text
        out.append(text[last:])
        return "".join(out)

    def _person_of(self, match: re.Match[str]) -> str:
        found = match.group()
        key = found.lower()
        index = self._person[key]
        if " " not in found and key in WORDS and found not in self._exact:  # "will" is not "Will"
            return found
        return self._placeholder("PERSON", str(index), self.names[index])

    def redact(self, text: str) -> str:
        """``text`` with every detected value replaced by its placeholder."""
        if PLACEHOLDER.search(text):
            raise RedactionFailed(
                "the text already holds placeholder-shaped tokens such as [PERSON_1]; they could not be told "
                "apart from redaction's own, so nothing was sent",
                code="redaction_failed",
            )
        kinds = self.kinds
        if "email" in kinds and "@" in text:
            text = self._emails(text)
        if "url" in kinds and ("http" in text or "www." in text):
            text = URL.sub(self._url, text)
        if kinds & CODE_KINDS and any(d in text for d in "0123456789"):
            text = DIGITS.sub(self._code, UPPER.sub(self._code, text))
        if self._names is not None:
            text = self._names_by_find(text)
        return text

    def restore(self, text: str) -> str:
        """``text`` with our placeholders replaced by their values (unknown ones are left as they are)."""
        if "[" not in text:
            return text
        return PLACEHOLDER.sub(lambda m: self._by_placeholder.get(m.group(), m.group()), text)

    def restore_data(self, data: Any) -> Any:
        """Placeholders restored in every string of a JSON task's output (a Struct stays its type)."""
        if isinstance(data, msgspec.Struct):
            return msgspec.convert(self.restore_data(msgspec.to_builtins(data)), type(data))
        if isinstance(data, str):
            return self.restore(data)
        if isinstance(data, list):
            return [self.restore_data(item) for item in data]
        if isinstance(data, dict):
            return {key: self.restore_data(value) for key, value in data.items()}
        return data

    def redact_chat(self, chat: list[wire.Message]) -> list[wire.Message]:
        """The messages with their text redacted; the first (the task's own system prompt) as it is."""
        return [chat[0], *(wire.Message(m.role, self.redact(m.content)) for m in chat[1:])]


class StreamRestorer:
    """Restores placeholders across a stream's deltas: the end of a delta that may be the start of a
    placeholder waits for the next delta (or the end of the stream)."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._held = ""

    def feed(self, text: str) -> str:
        text = self._held + text
        cut = len(text)
        start = text.rfind("[", max(0, len(text) - _MAX_PLACEHOLDER))
        if start >= 0 and _PARTIAL.match(text, start):
            cut = start
        self._held = text[cut:]
        return self._redactor.restore(text[:cut])

    def flush(self) -> str:
        held, self._held = self._held, ""
        return self._redactor.restore(held)


def for_call(default_tasks: frozenset[str], task: str, options: Options | None) -> Redactor | None:
    """The call's redactor, or None when it is not redacted (see the module)."""
    asked = options.redact if options is not None else None
    names = (options.redact_names or []) if options is not None else []
    if asked is False:
        return None
    if asked is None and not names and task not in default_tasks:
        return None
    kinds: list[RedactKind] = list(KINDS) if asked is None or asked is True else list(asked)
    if names and "name" not in kinds:
        kinds.append("name")
    try:
        return Redactor(kinds, names)
    except Exception as exc:
        raise RedactionFailed(
            f"redaction could not be set up ({type(exc).__name__}); nothing was sent"
        ) from None


def redact_chat(redactor: Redactor, chat: list[wire.Message]) -> list[wire.Message]:
    """`Redactor.redact_chat`, failing closed."""
    try:
        return redactor.redact_chat(chat)
    except RedactionFailed:
        raise
    except Exception as exc:
        raise RedactionFailed(f"redaction failed ({type(exc).__name__}); nothing was sent") from None


def restore_completion(redactor: Redactor, completion: Completion) -> Completion:
    completion.content = redactor.restore(completion.content)
    if completion.data is not None:
        completion.data = redactor.restore_data(completion.data)
    return completion


async def restore_stream(
    redactor: Redactor, events: AsyncGenerator[StreamEvent, None]
) -> AsyncGenerator[StreamEvent, None]:
    """The stream's events with placeholders restored in the deltas (closing it closes ``events``)."""
    restorer = StreamRestorer(redactor)
    try:
        try:
            async for item in events:
                if type(item) is Delta:
                    text = restorer.feed(item.content)
                    if text:
                        yield Delta(text)
                else:
                    rest = restorer.flush()
                    if rest:
                        yield Delta(rest)
                    yield item
        except Exception:
            rest = restorer.flush()  # the stream failed after text: what was held back goes out first
            if rest:
                yield Delta(rest)
            raise
    finally:
        await events.aclose()
