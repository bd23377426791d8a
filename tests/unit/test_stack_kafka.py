"""The local Kafka's cluster id and format command line (the stack must start every time)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from insights.stack.kafka import encode_uuid, format_command, random_cluster_id

# 0xF8: the first six bits are 62, '-' in the URL-safe base64 alphabet
DASH_FIRST = bytes([0xF8]) + bytes(range(1, 16))
GOOD = bytes(range(16, 32))


def test_an_id_that_would_start_with_a_dash_is_drawn_again():
    assert encode_uuid(DASH_FIRST).startswith("-")
    draws = iter([DASH_FIRST, bytes(16), bytes(15) + b"\x01", GOOD])
    calls = []

    def random_bytes() -> bytes:
        calls.append(1)
        return next(draws)

    # the dash-led id and Kafka's two reserved ids (zero and one) are all refused
    assert random_cluster_id(random_bytes) == encode_uuid(GOOD)
    assert len(calls) == 4


def test_generated_ids_never_start_with_a_dash_and_are_kafka_uuids():
    # urlsafe_b64encode(uuid4) alone starts with '-' about 1 time in 64: in 20,000
    # draws that is ~310 times, so a regression cannot pass by luck
    ids = [random_cluster_id() for _ in range(20_000)]
    assert not [i for i in ids if i.startswith("-")]
    assert len(set(ids)) == len(ids)
    for cluster_id in ids[:500]:
        # Kafka's Uuid.fromString: 22 URL-safe base64 characters decoding to 16 bytes
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cluster_id)
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
    # the alphabet's '-' still occurs inside ids: only the first character is avoided
    assert any("-" in i[1:] for i in ids)


def test_the_format_command_keeps_an_id_starting_with_a_dash_in_one_argument():
    cluster_id = encode_uuid(DASH_FIRST)
    cmd = format_command(["java", "-cp", "libs/*"], cluster_id, Path("/x/server.properties"))
    assert cmd[:4] == ["java", "-cp", "libs/*", "kafka.tools.StorageTool"]
    assert f"--cluster-id={cluster_id}" in cmd
    # no option takes its value from the next argument when that value starts with '-'
    # (argparse4j would read it as an option: "expected one argument")
    assert "-t" not in cmd and "--cluster-id" not in cmd
    assert not any(arg.startswith("-") and prev in {"-t", "--cluster-id", "-c", "--config"}
                   for prev, arg in zip(cmd, cmd[1:]))
    assert cmd[cmd.index("--config") + 1] == "/x/server.properties"


def test_the_pom_is_well_formed_xml_that_maven_can_read():
    # Maven refuses the whole pom over one "--" inside a comment, and a cached jar directory
    # hides that from every machine but a fresh one: parse it as Maven's reader would.
    import xml.dom.minidom

    from insights.stack.kafka import POM, pom_version

    document = xml.dom.minidom.parse(str(POM))
    assert document.documentElement.tagName == "project"
    assert re.fullmatch(r"4\.\d+\.\d+", pom_version(POM.read_text()))
