"""Redaction on real-looking transcripts: what is replaced, what is left, and restoration (streams split
at every position of a placeholder)."""

from __future__ import annotations

import re

import pytest

from xenios_ai.llm.redaction import KINDS, PLACEHOLDER, RedactionFailed, Redactor, StreamRestorer, for_call
from xenios_ai.llm.types import Options

TRANSCRIPT = """\
Coach: Good morning Sarah, how did the week go?
Sarah Lee: Better. Tom and I finally talked; he says hi. You can reach him at tom.okafor@example.org.
Coach: Great. Did you book the physio at https://physio.example.com/book?id=77 like we said?
Sarah Lee: Yes, Thursday. Their number is 020 7946 0958, or my mobile +44 7700 900123 if they call back.
Coach: And the gym refund?
Sarah Lee: They want my IBAN, GB82 WEST 1234 5698 7654 32, and the card I paid with, 4111 1111 1111 1111.
Coach: Send it to the office at SW1A 1AA. How is your sleep? Last week you said 6 hours on 2024-05-01.
Sarah Lee: About 7 now. I ran 5000 metres on Tuesday at 10.30 and did 12 push-ups. Order 123456 arrived.
Coach: Lovely. Will you keep the routine? I hope Tom will join.
SARAH LEE: I will. Mr Okafor says sarah is doing great.
"""
NAMES = ["Sarah Lee", "Tom Okafor"]
RAW = [
    "Sarah", "Lee", "Tom", "Okafor", "SARAH", "tom.okafor@example.org", "physio.example.com", "7946 0958",
    "7700 900123", "GB82 WEST", "4111 1111", "SW1A 1AA",
]  # fmt: skip


def test_a_transcript_loses_every_personal_detail_and_keeps_the_rest() -> None:
    redactor = Redactor(KINDS, NAMES)
    redacted = redactor.redact(TRANSCRIPT)

    for raw in RAW:
        assert raw not in redacted, raw
    # stable placeholders: one per person, value and kind, the same wherever it recurs
    assert redacted.count("[PERSON_1]") == 7  # Sarah, Sarah Lee (x4), SARAH LEE, sarah
    assert "[PERSON_2]" in redacted
    assert re.findall(r"\[(EMAIL|URL|PHONE|IBAN|CARD|POSTCODE)_\d\]", redacted) == [
        "EMAIL", "URL", "PHONE", "PHONE", "IBAN", "CARD", "POSTCODE",
    ]  # fmt: skip
    # what is not personal stays: dates, times, small numbers, an order number
    for kept in ("2024-05-01", "10.30", "5000 metres", "12 push-ups", "Order 123456", "Will you", "I will"):
        assert kept in redacted, kept
    assert redacted.startswith("Coach: Good morning [PERSON_1], how did the week go?\n[PERSON_1]: Better.")


def test_restoration_gives_the_values_back() -> None:
    redactor = Redactor(KINDS, NAMES)
    redacted = redactor.redact(TRANSCRIPT)
    restored = redactor.restore(redacted)
    # a name part comes back as the full name the caller passed (one placeholder per person)
    assert restored.replace("Sarah Lee", "Sarah").replace("Tom Okafor", "Tom") == TRANSCRIPT.replace(
        "Sarah Lee", "Sarah"
    ).replace("SARAH LEE", "Sarah").replace("Mr Okafor", "Mr Tom").replace("Tom Okafor", "Tom").replace(
        "sarah is", "Sarah is"
    )
    assert redactor.restore("[EMAIL_1] and [PHONE_2]; [PERSON_9] is unknown") == (
        "tom.okafor@example.org and +44 7700 900123; [PERSON_9] is unknown"
    )


def test_shapes_are_checked_so_look_alikes_stay() -> None:
    redactor = Redactor(KINDS)
    # Luhn fails: a 16-digit number, not a card; mod 97 fails: not an IBAN
    assert redactor.redact("ref 4111 1111 1111 1112, GB82WEST12345698765433") == (
        "ref 4111 1111 1111 1112, GB82WEST12345698765433"
    )
    assert redactor.redact("IBAN GB82WEST12345698765432") == "IBAN [IBAN_1]"
    assert redactor.redact("on 12.05.2024 at 14:30, 3 sets of 10") == "on 12.05.2024 at 14:30, 3 sets of 10"
    assert redactor.redact("Mail ME@Example.COM or me@example.com") == "Mail [EMAIL_1] or [EMAIL_1]"
    assert redactor.redact("Ship to Austin, TX 78701-1234.") == "Ship to Austin, TX [POSTCODE_1]."


def test_a_name_that_is_also_a_word_is_matched_as_written() -> None:
    redactor = Redactor(KINDS, ["Will Hope", "Mark"])
    assert redactor.redact("Will said he will try; Mark has a mark. WILL agrees, we HOPE too?") == (
        "[PERSON_1] said he will try; [PERSON_2] has a mark. [PERSON_1] agrees, we [PERSON_1] too?"
    )


def test_only_the_kinds_asked_for() -> None:
    redactor = Redactor(["email"], ["Sarah Lee"])
    assert (
        redactor.redact("Sarah: +44 7700 900123, s@example.com") == "[PERSON_1]: +44 7700 900123, [EMAIL_1]"
    )


def test_streamed_deltas_are_restored_when_split_at_every_position_of_a_placeholder() -> None:
    redactor = Redactor(KINDS, NAMES)
    redactor.redact("Sarah Lee told Tom: tom.okafor@example.org, +44 7700 900123")
    answer = "Hi [PERSON_1]! Ask [PERSON_2] ([EMAIL_1]) to call [PHONE_1]. [x] [PERSON_7] [PERSON_"
    expected = redactor.restore(answer)
    assert expected.startswith(
        "Hi Sarah Lee! Ask Tom Okafor (tom.okafor@example.org) to call +44 7700 900123."
    )
    for cut in range(len(answer) + 1):
        for second in range(cut, len(answer) + 1):
            restorer = StreamRestorer(redactor)
            parts = [
                restorer.feed(answer[:cut]),
                restorer.feed(answer[cut:second]),
                restorer.feed(answer[second:]),
            ]
            parts.append(restorer.flush())
            assert "".join(parts) == expected, (cut, second)
            assert not any(PLACEHOLDER.search(p) and "[PERSON_7]" not in p for p in parts)


def test_one_character_deltas_are_restored() -> None:
    redactor = Redactor(KINDS, NAMES)
    redactor.redact("Sarah")
    restorer = StreamRestorer(redactor)
    out = "".join(restorer.feed(ch) for ch in "[PERSON_1] and [PERSON_1]") + restorer.flush()
    assert out == "Sarah Lee and Sarah Lee"


def test_it_fails_closed_on_text_that_already_holds_placeholders() -> None:
    with pytest.raises(RedactionFailed) as caught:
        Redactor(KINDS, NAMES).redact("Sarah said [PERSON_1] is fine")
    assert caught.value.code == "redaction_failed"
    assert caught.value.status == 500


def test_when_a_call_is_redacted() -> None:
    tasks = frozenset({"session_summary"})
    assert for_call(tasks, "chat", None) is None
    assert for_call(tasks, "chat", Options(temperature=0.2)) is None
    assert for_call(tasks, "session_summary", None) is not None  # the task's default
    assert for_call(tasks, "session_summary", Options(redact=False)) is None  # opted out
    by_list = for_call(tasks, "chat", Options(redact=["email"]))
    assert by_list is not None
    assert by_list.kinds == {"email"}
    named = for_call(tasks, "chat", Options(redact_names=["Sarah Lee"]))
    assert named is not None
    assert named.kinds == set(KINDS)
