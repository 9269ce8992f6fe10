// guidegraph's editor extension: our default workflow, outputs after a reload, guidegraph in About.
//
// - The editor's default graph (loaded when there is nothing to restore, and by "Load Default") uses
//   nodes this backend does not have: a call that loads "the default" gets the server's default
//   workflow instead.
// - Node outputs are kept in the page only: after a reload, the open workflow shows the outputs of
//   its last completed run again.
// - A fresh browser profile starts on a blank "Unsaved Workflow" tab: it is replaced by the default
//   workflow, saved as the user's copy and fitted to the view. Only once per profile: after that the
//   editor restores the user's own tabs untouched (a reload never opens another copy).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const OPENED_KEY = "guidegraph.defaultWorkflowOpened";
const TITLE_HEIGHT = 30;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let fetched = null;
function defaultWorkflow() {
  fetched ??= api
    .fetchApi("/guidegraph/default_workflow")
    .then((response) => (response.ok ? response.json() : { name: null, workflow: null }))
    .catch(() => ({ name: null, workflow: null }));
  return fetched;
}

// "Load the default" is a call without graph data; give it ours.
const loadGraphData = app.loadGraphData.bind(app);
app.loadGraphData = async (graph, clean = true, restoreView = true, name = null, options = {}) => {
  if (!graph || typeof graph !== "object" || Array.isArray(graph)) {
    const found = await defaultWorkflow();
    if (found.workflow) [graph, name] = [found.workflow, name ?? found.name];
  }
  return loadGraphData(graph, clean, restoreView, name, options);
};

function workflows() {
  return app.extensionManager?.workflow;
}

// The editor mounts its canvas and restores or creates its first tab after setup() has run.
async function firstTab() {
  for (let i = 0; i < 400; i++) {
    const active = workflows()?.activeWorkflow;
    if (app.canvas?.graph && active?.changeTracker) {
      await sleep(250);
      return workflows().activeWorkflow;
    }
    await sleep(50);
  }
  return null;
}

const isBlank = (workflow) =>
  workflow?.isTemporary && !workflow.isModified && (app.graph?._nodes || app.graph?.nodes || []).length === 0;

// The workflow with its view (extra.ds) set to show every node, below the editor's top bars.
function fitted(workflow) {
  const element = app.canvas?.canvas;
  const nodes = workflow.nodes || [];
  if (!element || !nodes.length) return workflow;
  const [left, top, right, bottom] = [70, 110, 40, 40]; // the editor's bars over the canvas
  const x0 = Math.min(...nodes.map((n) => n.pos[0]));
  const y0 = Math.min(...nodes.map((n) => n.pos[1] - TITLE_HEIGHT));
  const x1 = Math.max(...nodes.map((n) => n.pos[0] + (n.size?.[0] ?? 200)));
  const y1 = Math.max(...nodes.map((n) => n.pos[1] + (n.size?.[1] ?? 100)));
  const width = element.clientWidth - left - right;
  const height = element.clientHeight - top - bottom;
  const scale = Math.min(1, width / (x1 - x0), height / (y1 - y0));
  const offset = [
    (left + (width - (x1 - x0) * scale) / 2) / scale - x0,
    (top + (height - (y1 - y0) * scale) / 2) / scale - y0,
  ];
  return { ...workflow, extra: { ...workflow.extra, ds: { scale, offset } } };
}

async function openOnFreshProfile() {
  if (localStorage.getItem(OPENED_KEY)) return; // not a fresh profile: leave the user's tabs alone
  if (new URLSearchParams(window.location.search).has("template")) return; // an explicit choice wins
  const blank = await firstTab();
  if (!isBlank(blank)) return;
  const { name, workflow } = await defaultWorkflow();
  if (!workflow) return;
  await loadGraphData(fitted(workflow), true, true, name);
  if (workflows().isOpen?.(blank)) await workflows().closeWorkflow(blank);
  localStorage.setItem(OPENED_KEY, name);
  // Saved as the user's own copy (workflows/<name>.json): a clean tab, not an unsaved one; where a
  // copy exists already (another browser on this server), the tab stays an unsaved template.
  await workflows()
    .saveWorkflow(workflows().activeWorkflow)
    .catch((error) => console.info("guidegraph: default workflow kept unsaved", error?.message));
}

// Node outputs live in the page only; after a reload, show the images of the open workflow's last
// completed run again (the job whose workflow_id is this graph's id), unless something is shown.
async function restoreLastOutputs() {
  if (!(await firstTab())) return;
  const id = app.rootGraph?.id;
  if (!id || Object.keys(app.nodeOutputs || {}).length) return;
  const query = new URLSearchParams({ status: "completed", workflow_id: id, limit: "1" });
  const { jobs } = await (await api.fetchApi(`/jobs?${query}`)).json();
  if (!jobs?.length) return;
  const job = await (await api.fetchApi(`/jobs/${encodeURIComponent(jobs[0].id)}`)).json();
  if (job.outputs && !Object.keys(app.nodeOutputs || {}).length) app.nodeOutputs = job.outputs;
}

const stats = await api.getSystemStats().catch(() => null);
const version = stats?.system?.guidegraph_version;

app.registerExtension({
  name: "guidegraph.DefaultWorkflow",
  aboutPageBadges: version ? [{ label: `guidegraph v${version}`, url: "/", icon: "pi pi-sitemap" }] : [],
  setup() {
    // Not awaited: the editor finishes its own start (mounting the canvas, restoring tabs) first.
    openOnFreshProfile().catch((error) => console.warn("guidegraph: default workflow", error));
    restoreLastOutputs().catch((error) => console.warn("guidegraph: last outputs", error));
  },
});
