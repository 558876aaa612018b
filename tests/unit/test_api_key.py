from xenios_ai.api.auth import api_key_matches


def test_api_key_matches_any_configured_key_exactly() -> None:
    keys = ("old-key", "new-key")
    assert api_key_matches("old-key", keys)
    assert api_key_matches("new-key", keys)
    assert not api_key_matches("new-ke", keys)
    assert not api_key_matches("new-keyy", keys)
    assert not api_key_matches("", keys)
    assert not api_key_matches(None, keys)
    assert not api_key_matches("anything", ())
