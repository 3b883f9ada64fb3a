// Tasks page: the task list, create by pasting a YAML policy (the API's own
// validation message shown inline), delete.

import { api, clear, el, every, table } from "./util.js";

const EXAMPLE = `tasks:
  - name: hh-udp
    kind: heavy_hitters
    key: src_dst
    increment: bytes
    filter: {proto: udp}
    threshold: 0.05
    report_interval: 1
`;

function deleteButton(task, armed, refresh) {
  const button = el("button", { type: "button", class: "delete", "data-task": task.id,
    text: armed.has(task.id) ? "Confirm delete" : "Delete" });
  button.addEventListener("click", async () => {
    if (!armed.has(task.id)) {  // two clicks, no modal dialog; survives the list's refresh
      armed.add(task.id);
      button.textContent = "Confirm delete";
      return;
    }
    armed.delete(task.id);
    button.disabled = true;
    try {
      await api(`/measure/v1/tasks/${encodeURIComponent(task.id)}`, { method: "DELETE" });
    } catch (exc) {
      button.textContent = exc.message;
    }
    refresh();
  });
  return button;
}

export function mount(main) {
  const listBox = el("div", { id: "task-list" });
  const editor = el("textarea", { id: "yaml", rows: 12, cols: 70, spellcheck: "false" });
  editor.value = EXAMPLE;
  const error = el("pre", { id: "create-error", class: "error" });
  const ok = el("p", { id: "create-ok", class: "ok" });
  const create = el("button", { id: "create", type: "button", text: "Create tasks" });
  let refresh = () => {};
  const armed = new Set();
  create.addEventListener("click", async () => {
    error.textContent = "";
    ok.textContent = "";
    try {
      const body = await api("/measure/v1/tasks", { method: "POST", yaml: editor.value });
      ok.textContent = `created ${body.tasks.map((t) => `task ${t.id} (${t.name})`).join(", ")}`;
    } catch (exc) {
      // exactly the API's text: every error when it lists them, else its "error"
      error.textContent = exc.details && exc.details.length > 1
        ? `${exc.details.length} errors:\n${exc.details.join("\n")}` : (exc.details?.[0] ?? exc.message);
    }
    refresh();
  });
  main.append(el("h1", { text: "Tasks" }), listBox,
    el("h2", { text: "Create from a YAML policy" }),
    el("p", { class: "hint", text: "Paste a policy (the format of policies/*.yaml); the controller validates it." }),
    editor, el("div", {}, create), error, ok);
  const load = async () => {
    const { tasks } = await api("/measure/v1/tasks");
    const rows = tasks.map((t) => {
      const agents = Object.values(t.agents || {});
      const good = agents.filter((v) => v === "ok").length;
      return { attrs: { class: "task", "data-task": t.id, "data-name": t.name },
        cells: [el("a", { href: `#/task/${encodeURIComponent(t.id)}`, text: t.id }),
          el("a", { href: `#/task/${encodeURIComponent(t.id)}`, text: t.name }), t.kind, t.status,
          agents.length ? `${good}/${agents.length}` : "-", t.last_error || "", deleteButton(t, armed, refresh)] };
    });
    clear(listBox).append(tasks.length ? table(["ID", "NAME", "KIND", "STATUS", "AGENTS OK", "ERROR", ""], rows,
      { id: "tasks-table" }) : el("p", { class: "empty", text: "no tasks" }));
  };
  refresh = () => load().catch(() => {});
  return every(2000, load);
}
