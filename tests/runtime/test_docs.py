"""Node documentation for people: a plain summary for the editor's tooltip, a Markdown help page."""

from __future__ import annotations

from graph_runtime.api import Context, Float, Node, Output, Socket
from graph_runtime.docs import help_markdown, summary
from graph_runtime.registry import Registry, node_info


class Mix(Node):
    """Mix two values: ``out = a + w·(b − a)`` (Someone & Other 2021, "A Paper (with parentheses)").

    ``w`` = 0 is ``a``; see (Another et al. 2019) for the rest.
    """

    display_name = "Mix Values"
    inputs = (
        Socket("a", type="FLOAT", tooltip="where to start"),
        Socket("b", type="FLOAT", optional=True, tooltip="where to go"),
        Float("w", default=0.5, min=0.0, max=1.0, tooltip="how far | to go"),
    )
    outputs = (Output("out", "FLOAT", tooltip="the mix"),)

    @staticmethod
    def run(ctx: Context, a: float, b: float | None, w: float) -> tuple[float]:
        return (a + w * ((b or 0.0) - a),)


def test_the_summary_is_the_first_paragraph_without_markup_or_citations() -> None:
    assert summary(Mix.description) == "Mix two values: out = a + w·(b − a)."
    assert summary("") == ""


def test_the_help_page_renders_literals_as_code_and_lists_inputs_and_outputs() -> None:
    page = help_markdown(Mix)
    assert page.startswith("# Mix Values\n")
    assert "`out = a + w·(b − a)` (Someone & Other 2021" in page  # citations stay in the help page
    assert "| b (optional) | FLOAT |  |  | where to go |" in page
    assert "| w | FLOAT | `0.5` | 0.0 … 1.0 | how far \\| to go |" in page
    assert "- **out** (FLOAT): the mix" in page


def test_a_pack_node_is_badged_as_that_pack_in_object_info() -> None:
    registry = Registry()
    registry.add(Mix, pack="mypack")
    entry = registry.object_info()["Mix"]
    assert entry["python_module"] == "custom_nodes.mypack" and entry["display_name"] == "Mix Values"
    assert entry["description"] == "Mix two values: out = a + w·(b − a)."
    assert node_info(Mix)["python_module"] == Mix.__module__  # added directly: no pack to name
