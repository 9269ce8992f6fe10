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

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// setup() runs before the editor has mounted its canvas and restored its drafts; loading a graph
// then throws inside the editor. Wait until the canvas exists and the first frames are drawn.
async function editorReady() {
  for (let i = 0; i < 200; i++) {
    if (app.canvas && app.canvas.graph && document.querySelector("canvas")) {
      await sleep(250);
      return true;
    }
    await sleep(50);
  }
  return false;
}

async function openDefaultWorkflow() {
  if (new URLSearchParams(window.location.search).has("template")) return; // an explicit choice wins
  if (!(await editorReady())) return;
  if (!isForeignOrEmpty()) return;
  const response = await api.fetchApi("/guidegraph/default_workflow");
  if (!response.ok) return;
  const { name, workflow } = await response.json();
  if (workflow) await app.loadGraphData(workflow, true, true, name);
}

app.registerExtension({
  name: "guidegraph.DefaultWorkflow",
  setup() {
    // Not awaited: the editor finishes its own start (mounting the canvas, restoring drafts) first.
    openDefaultWorkflow().catch((error) => console.warn("guidegraph: default workflow", error));
  },
});
