"""PII scrubbing: each type, the Luhn check, and the vectorised table path."""

from __future__ import annotations

import pyarrow as pa
import pytest

from posttrain import curate


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to jane.doe+x@example.co.uk today", "write to <EMAIL> today"),
        ("card 4111 1111 1111 1111 please", "card <CARD> please"),
        ("card 4111-1111-1111-1111", "card <CARD>"),
        ("card 5500005555555559.", "card <CARD>."),
        ("iban DE89 3704 0044 0532 0130 00 thanks", "iban <IBAN> thanks"),
        ("ssn 123-45-6789", "ssn <SSN>"),
        ("from 192.168.10.200 now", "from <IPV4> now"),
        ("host 2001:db8::8a2e:370:7334 up", "host <IPV6> up"),
        ("host 2001:0db8:85a3:0000:0000:8a2e:0370:7334", "host <IPV6>"),
        ("call +1 (555) 201-3344 or 555.201.3344", "call <PHONE> or <PHONE>"),
        ("ring +44 20 7946 0958", "ring <PHONE>"),
        ("key sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8t_uVw end", "key <TOKEN> end"),
        ("key sk-T3BlbkFJa8b7c6d5e4f3g2h1i0jklmnopq", "key <TOKEN>"),
        ("aws AKIAIOSFODNN7EXAMPLE in the log", "aws <TOKEN> in the log"),
        ("token ghp_16C7e42F292c6912E7710c838347Ae178B4a ok", "token <TOKEN> ok"),
        ("pat github_pat_11ABCDEFG0abcdefghijkl_mnopQRSTUV", "pat <TOKEN>"),
        ("bot xoxb-123456789012-abcdefABCDEF, user xoxp-98765-4321-zyxwv", "bot <TOKEN>, user <TOKEN>"),
        ("my passport no. C01X00T47 expired", "my passport no. <PASSPORT> expired"),
        ("Passport Number: 123456789", "Passport Number: <PASSPORT>"),
        ("PASSPORT #AB1234567, issued 2019", "PASSPORT #<PASSPORT>, issued 2019"),
        ("passport 09AA12345", "passport <PASSPORT>"),
        ("(555) 201-1234 / 555-201-1234 / 555.201.1234", "<PHONE> / <PHONE> / <PHONE>"),
        ("+1 555 201 1234, 1-800-555-0199", "<PHONE>, <PHONE>"),
        ("Berlin +49 30 901820, Paris +33 1 42 68 53 00", "Berlin <PHONE>, Paris <PHONE>"),
        ("from abroad 0044 20 7946 0958", "from abroad <PHONE>"),
    ],
)
def test_scrub_text_replaces_each_type(text: str, expected: str) -> None:
    scrubbed, n = curate.scrub_text(text)
    assert scrubbed == expected
    assert n == expected.count("<")


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 fails Luhn",  # one digit off a valid number
        "order 1234567890123 shipped",
        "at 10:30:45 on 2024-06-01, version 1.2.3, 3.14159",
        "std::vector<int> and ratio 3:2",
        "12 * 34 = 408 and 123 456 7890 / 3 = 41152263",  # NANP: no area code starts with 1
        "dates 2024-03-15, 15/03/2024 and 03/15/2024 at 14:05; v1.2.3 and Python 3.11.4",
        "it costs $1,299.99 (or 1.299,99 EUR); 5552011234 orders; score 98.6%",
        "my passport is valid until 2030; passport photos are 35x45 mm",
        "sk-learn is a typo and AKIA is not a key",
    ],
)
def test_scrub_text_keeps_what_is_not_pii(text: str) -> None:
    assert curate.scrub_text(text) == (text, 0)


def test_luhn_valid() -> None:
    assert curate.luhn_valid("4111111111111111")
    assert not curate.luhn_valid("4111111111111112")


def test_scrub_table_counts_per_type_and_keeps_structure() -> None:
    table = pa.table(
        {
            "prompt": [
                [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "mail a@b.io, card 4111111111111111"},
                ],
                [{"role": "user", "content": "bad card 4111111111111112"}],
                None,
            ],
            "answer": ["call 555-201-3344", None, "ip 10.0.0.1 ssn 123-45-6789"],
            "interaction_id": ["a@b.io", "x", "y"],  # ids are never rewritten
        }
    )
    scrubbed, counts = curate.scrub_table(table)
    assert counts == {
        "token": 0,
        "email": 1,
        "iban": 0,
        "card": 1,
        "ssn": 1,
        "passport": 0,
        "ipv6": 0,
        "ipv4": 1,
        "phone": 1,
    }
    rows = scrubbed.to_pylist()
    assert rows[0]["prompt"][1] == {"role": "user", "content": "mail <EMAIL>, card <CARD>"}
    assert rows[0]["prompt"][0] == {"role": "system", "content": "be brief"}
    assert rows[1]["prompt"][0]["content"] == "bad card 4111111111111112"
    assert rows[2]["prompt"] is None and rows[1]["answer"] is None
    assert rows[2]["answer"] == "ip <IPV4> ssn <SSN>"
    assert scrubbed.column("interaction_id").to_pylist() == ["a@b.io", "x", "y"]
    assert scrubbed.schema == table.schema


def test_scrub_table_matches_scrub_text() -> None:
    texts = [
        "a@b.io and 4111 1111 1111 1111",
        "nothing here",
        "+1 555 201 3344; DE89370400440532013000",
        "passport nr. X1234567 and key AKIAIOSFODNN7EXAMPLE, call +33 1 42 68 53 00",
    ]
    scrubbed, counts = curate.scrub_table(pa.table({"text": texts}))
    expected = [curate.scrub_text(t) for t in texts]
    assert scrubbed.column("text").to_pylist() == [t for t, _ in expected]
    assert sum(counts.values()) == sum(n for _, n in expected)
