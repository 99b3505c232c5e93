// Draws a stream's DAG as SVG: one row per event (parents above children), one lane per
// author, an edge for every `prev` link between held events. Merges (several `prev`), forks
// (several children) and heads get their own classes; the counts go on the <svg> as data.

const NS = "http://www.w3.org/2000/svg";
const LANE = 150, ROW = 28, TOP = 40, LEFT = 30;

function el(name, attrs, parent) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

// Rows: an event's depth is one more than its deepest held parent; ties are broken by time,
// then author and seq, so concurrent writers interleave as they happened.
export function layout(events, heads) {
  const byCid = new Map(events.map((e) => [e.cid, e]));
  const depth = new Map();
  const depthOf = (e) => {
    if (depth.has(e.cid)) return depth.get(e.cid);
    depth.set(e.cid, 0); // a cycle cannot exist in a hash-linked DAG; this only guards recursion
    let d = 0;
    for (const p of e.prev) if (byCid.has(p)) d = Math.max(d, depthOf(byCid.get(p)) + 1);
    depth.set(e.cid, d);
    return d;
  };
  const order = [...events].sort((a, b) =>
    depthOf(a) - depthOf(b) || a.time - b.time || String(a.author).localeCompare(String(b.author)) || a.seq - b.seq);
  const authors = [];
  for (const e of [...events].sort((a, b) => a.time - b.time || a.seq - b.seq))
    if (!authors.includes(e.author)) authors.push(e.author);
  const children = new Map();
  const edges = [];
  for (const e of events)
    for (const p of e.prev)
      if (byCid.has(p)) {
        edges.push([e.cid, p]);
        children.set(p, (children.get(p) || 0) + 1);
      }
  const headSet = new Set(heads);
  const nodes = order.map((e, i) => ({
    event: e,
    x: LEFT + authors.indexOf(e.author) * LANE,
    y: TOP + i * ROW,
    head: headSet.has(e.cid),
    merge: e.prev.length > 1,
    fork: (children.get(e.cid) || 0) > 1,
  }));
  return { nodes, edges, authors };
}

export function drawDag(box, stream, onSelect) {
  const { nodes, edges, authors } = layout(stream.events, stream.heads);
  const at = new Map(nodes.map((n) => [n.event.cid, n]));
  const width = LEFT * 2 + Math.max(1, authors.length) * LANE;
  const height = TOP + nodes.length * ROW + 10;
  const svg = el("svg", { class: "dag", width, height, viewBox: `0 0 ${width} ${height}` });
  authors.forEach((a, i) => {
    const x = LEFT + i * LANE;
    el("line", { class: "lane", x1: x, x2: x, y1: 24, y2: height }, svg);
    el("text", { x: x - 10, y: 16 }, svg).textContent = `${String(a).slice(0, 6)}…${String(a).slice(-4)}`;
  });
  for (const [child, parent] of edges) {
    const c = at.get(child), p = at.get(parent);
    const my = (c.y + p.y) / 2;
    el("path", {
      class: c.x === p.x ? "edge" : "edge cross",
      d: `M${c.x},${c.y} C${c.x},${my} ${p.x},${my} ${p.x},${p.y}`,
    }, svg);
  }
  for (const n of nodes) {
    const cls = ["event"];
    if (n.head) cls.push("head");
    if (n.merge) cls.push("merge");
    if (n.fork) cls.push("fork");
    if (!n.event.verified) cls.push("unverified");
    const c = el("circle", { class: cls.join(" "), cx: n.x, cy: n.y, r: 8, "data-cid": n.event.cid }, svg);
    el("title", {}, c).textContent = `seq ${n.event.seq} · ${n.event.cid}`;
    el("text", { x: n.x + 12, y: n.y + 4 }, svg).textContent = `#${n.event.seq}`;
    c.addEventListener("click", () => {
      svg.querySelectorAll(".selected").forEach((s) => s.classList.remove("selected"));
      c.classList.add("selected");
      onSelect(n.event);
    });
  }
  const stats = {
    nodes: nodes.length,
    edges: edges.length,
    heads: nodes.filter((n) => n.head).length,
    merges: nodes.filter((n) => n.merge).length,
    forks: nodes.filter((n) => n.fork).length,
    authors: authors.length,
  };
  for (const [k, v] of Object.entries(stats)) svg.dataset[k] = v;
  box.replaceChildren(svg);
  return stats;
}
