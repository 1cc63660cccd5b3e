"""The flow tests find their artifacts however many the session's server holds (an unfiltered
read returns one page: 200 by default; a full CI run creates more before the last flow test)."""

from __future__ import annotations

from typing import Any

from ._prefect_artifacts import artifact_keys_on_server


def test_artifacts_are_found_by_key_beyond_the_first_page(prefect_harness: Any) -> None:
    from prefect import flow
    from prefect.artifacts import create_markdown_artifact
    from prefect.client.orchestration import get_client

    @flow(name="many-artifacts")
    def many_artifacts() -> None:
        for n in range(205):
            create_markdown_artifact(f"# {n}", key=f"filler-{n}")
        create_markdown_artifact("# last", key="the-last-one")

    many_artifacts()
    with get_client(sync_client=True) as client:
        first_page = {a.key for a in client.read_artifacts()}
    assert len(first_page) <= 200
    assert artifact_keys_on_server({"the-last-one", "filler-0", "absent"}) == {
        "the-last-one",
        "filler-0",
    }
