"""docs/configuration.md's tables say what the config dataclasses say (dvsa.data.config_docs)."""
from pathlib import Path

from dvsa.data import config_docs

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_configuration_page_matches_the_dataclasses():
    text = PAGE.read_text()
    assert config_docs.render(text) == text, "run: python -m dvsa.data.config_docs docs/configuration.md"
    assert config_docs.main(["--check", str(PAGE)]) == 0


def test_rows_follow_the_source_comments(tmp_path):
    from dvsa.align.model import AlignConfig

    rows = {r.split(" | ")[0][3:-1]: r for r in config_docs.table_rows(AlignConfig)[2:]}
    # a comment on the field's line, continued on "#   " lines below it
    assert "hardest negative alone collapsed every score" in rows["hardest_from"]
    assert "hardest negative" not in rows["margin"]
    page = tmp_path / "c.md"
    page.write_text("# x\n\n### AlignConfig (`dvsa.align.model`)\n\nprose\n\n| field | default | meaning |\n| old |\n")
    assert config_docs.main(["--check", str(page)]) == 1
    config_docs.main([str(page)])
    assert "prose" in page.read_text() and "| `embed_dim` | `1000` |" in page.read_text()
