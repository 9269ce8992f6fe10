// guidegraph: open one of our workflows instead of the editor's stock graph.
// The stock graph (and a blank canvas on first boot) uses nodes this backend does not have; when the
// canvas shows such a graph, or nothing, load the server's default workflow in a new tab.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

function currentNodes() {
  const graph = app.graph;
  return (graph && (graph._nodes || graph.nodes)) || [];
}

function isForeignOrEmpty() {
  const nodes = currentNodes();
  if (nodes.length === 0) return true;
  const known = (globalThis.LiteGraph && globalThis.LiteGraph.registered_node_types) || {};
  return nodes.some((node) => !(node.type in known));
}

app.registerExtension({
  name: "guidegraph.DefaultWorkflow",
  async setup() {
    const params = new URLSearchParams(window.location.search);
    if (params.has("template")) return; // an explicit choice wins
    await new Promise((resolve) => setTimeout(resolve, 0)); // let the editor restore its drafts first
    if (!isForeignOrEmpty()) return;
    const response = await api.fetchApi("/guidegraph/default_workflow");
    if (!response.ok) return;
    const { name, workflow } = await response.json();
    if (workflow) await app.loadGraphData(workflow, true, true, name);
  },
});
