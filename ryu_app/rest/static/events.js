// Events and actions, polled every second: GET events?since=<last id> (only
// new events travel) and GET actions when the controller has that route.
// Fields an event kind adds are shown generically as "name value" text.

import { ApiError, api, clear, el, every, fmtTime, table } from "./util.js";

const MAX_EVENTS = 500;
const BASE = new Set(["id", "ts", "task_id", "kind"]);

function detail(obj, skip) {
  return Object.entries(obj).filter(([k]) => !skip.has(k))
    .map(([k, v]) => `${k} ${typeof v === "object" && v !== null ? JSON.stringify(v)
      : (typeof v === "number" && /(_end|_at|^ts|^expires)$/.test(k) ? fmtTime(v) : v)}`).join("  ");
}

export function mount(main) {
  const events = [];
  let since = 0;
  const kindFilter = el("select", { id: "event-kind" }, el("option", { value: "", text: "all kinds" }));
  const eventsBox = el("div", { id: "events" });
  const actionsBox = el("div", { id: "actions" });
  kindFilter.addEventListener("change", () => renderEvents());
  main.append(el("h1", { text: "Events" }), el("p", {}, el("label", {}, "Show ", kindFilter)), eventsBox,
    el("h2", { text: "Actions" }), actionsBox);

  function renderEvents() {
    const kinds = [...new Set(events.map((e) => e.kind))].sort();
    const have = [...kindFilter.options].map((o) => o.value).slice(1);
    if (kinds.join() !== have.join()) {
      const value = kindFilter.value;
      kindFilter.replaceChildren(el("option", { value: "", text: "all kinds" }),
        ...kinds.map((k) => el("option", { value: k, text: k })));
      kindFilter.value = kinds.includes(value) ? value : "";
    }
    const shown = events.filter((e) => !kindFilter.value || e.kind === kindFilter.value);
    clear(eventsBox).append(shown.length ? table(["ID", "TIME", "TASK", "KIND", "DETAIL"],
      shown.slice().reverse().map((e) => ({ attrs: { class: `event kind-${e.kind}`, "data-kind": e.kind, "data-id": e.id },
        cells: [e.id, fmtTime(e.ts), el("a", { href: `#/task/${encodeURIComponent(e.task_id)}`, text: e.task_id }),
          e.kind, detail(e, BASE)] })), { id: "events-table" }) : el("p", { class: "empty", text: "no events yet" }));
  }

  const stopEvents = every(1000, async () => {
    const body = await api(`/measure/v1/events?since=${since}`);
    if (body.events.length) {
      events.push(...body.events);
      since = Math.max(since, ...body.events.map((e) => e.id));
      events.splice(0, Math.max(0, events.length - MAX_EVENTS));
    }
    renderEvents();
  });
  let actionsApi = true;
  const stopActions = every(2000, async () => {
    if (!actionsApi) return;
    let body;
    try {
      body = await api("/measure/v1/actions");
    } catch (exc) {
      if (exc instanceof ApiError && (exc.status === 404 || exc.status === 405)) {
        actionsApi = false;
        clear(actionsBox).append(el("p", { class: "empty", text: "this controller has no actions API" }));
        return;
      }
      throw exc;
    }
    const list = Array.isArray(body) ? body : body.actions || [];
    const columns = [...new Set(list.flatMap((a) => Object.keys(a)))].slice(0, 9);
    clear(actionsBox).append(list.length ? table(columns.map((c) => c.toUpperCase()),
      list.map((a) => ({ attrs: { class: "action" }, cells: columns.map((c) => (typeof a[c] === "object" && a[c] !== null ? JSON.stringify(a[c]) : a[c])) })),
      { id: "actions-table" }) : el("p", { class: "empty", text: "no actions" }));
  });
  return () => { stopEvents(); stopActions(); };
}
