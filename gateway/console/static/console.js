// taostake console: reads the JSON API with the token kept in sessionStorage.
// Every value from the API is written with textContent or as an attribute value, never
// parsed as HTML: tweets, reasons and messages are untrusted text.
"use strict";

(() => {
  const TOKEN_KEY = "taostake.console.token";
  const POLL_MS = { trades: 3000, streams: 5000, positions: 10000, scores: 15000 };
  const SETTLED = new Set(["succeeded", "failed"]);
  const FINISHED = new Set(["skipped", "rejected", "dry_run", "ended"]);
  const SVG_NS = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  let token = null;
  let polls = [];
  let selected = null; // { id, updated } of the trade whose trace is shown
  let netuidChosen = false; // the operator picked a subnet: stop following the latest trade
  const errors = new Map(); // source -> message
  const seen = new Map(); // trade_id -> last status shown

  // ------------------------------------------------------------------ helpers
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(path, params) {
    const url = new URL(path, window.location.origin);
    for (const [key, value] of Object.entries(params || {})) {
      if (value !== undefined && value !== null) url.searchParams.set(key, String(value));
    }
    let response;
    try {
      response = await fetch(url, {
        headers: { Authorization: "Bearer " + token, Accept: "application/json" },
        cache: "no-store",
        credentials: "omit",
        referrerPolicy: "no-referrer",
        redirect: "error",
      });
    } catch (err) {
      throw new ApiError(0, "network_error", "the gateway cannot be reached");
    }
    let body = null;
    try {
      body = await response.json();
    } catch (err) {
      body = null;
    }
    if (!response.ok) {
      const error = body && typeof body.error === "object" && body.error ? body.error : {};
      throw new ApiError(
        response.status,
        String(error.code || "http_" + response.status),
        String(error.message || response.statusText || "request failed"),
      );
    }
    return body;
  }

  // el("td", { cls: "a b", text: "x", title: "y", data: { tradeId: "…" } }, child, …)
  function el(tag, opts, ...children) {
    const node = document.createElement(tag);
    decorate(node, opts || {});
    node.append(...children.filter((child) => child !== null && child !== undefined));
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "cls") node.setAttribute("class", value);
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, String(value));
    }
    node.append(...children);
    return node;
  }

  function decorate(node, opts) {
    if (opts.cls) node.className = opts.cls;
    if (opts.text !== undefined && opts.text !== null) node.textContent = String(opts.text);
    if (opts.title) node.title = String(opts.title);
    for (const [key, value] of Object.entries(opts.data || {})) node.dataset[key] = String(value);
  }

  const safeClass = (value) => String(value).toLowerCase().replace(/[^a-z0-9_-]+/g, "-");
  const dash = (value) => (value === null || value === undefined || value === "" ? "—" : String(value));
  const short = (value, head = 6, tail = 5) => {
    const text = String(value || "");
    return text.length > head + tail + 1 ? text.slice(0, head) + "…" + text.slice(-tail) : text;
  };

  function when(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return dash(iso);
    return date.toISOString().slice(0, 19).replace("T", " ");
  }

  const clock = () => new Date().toISOString().slice(11, 19) + " UTC";

  function phase(status) {
    if (SETTLED.has(status)) return "settled";
    if (FINISHED.has(status)) return "finished";
    return "in flight";
  }

  const phaseDone = (status) => SETTLED.has(status) || FINISHED.has(status);

  function dl(pairs) {
    const list = el("dl");
    for (const [label, value, cls] of pairs) {
      list.append(el("dt", { text: label }), el("dd", { text: dash(value), cls: cls || "" }));
    }
    return list;
  }

  function showErrors() {
    $("error").textContent = [...errors.values()].filter(Boolean).join(" · ");
  }

  // ------------------------------------------------------------------ sign in / out
  async function signIn(candidate) {
    token = candidate;
    $("signin-error").textContent = "";
    $("signin-button").disabled = true;
    try {
      await api("/api/v1/trades", { limit: 1 });
    } catch (err) {
      token = null;
      sessionStorage.removeItem(TOKEN_KEY);
      $("signin-error").textContent =
        err.status === 401
          ? "Token refused: " + err.message
          : err.status === 403
            ? "This token may not read: " + err.message
            : "Could not sign in (" + err.code + "): " + err.message;
      return;
    } finally {
      $("signin-button").disabled = false;
    }
    sessionStorage.setItem(TOKEN_KEY, candidate);
    $("signin").hidden = true;
    $("app").hidden = false;
    $("signout").hidden = false;
    $("who").textContent = "signed in";
    start();
  }

  function signOut(message) {
    for (const poll of polls) poll.stop();
    polls = [];
    token = null;
    selected = null;
    netuidChosen = false;
    errors.clear();
    seen.clear();
    sessionStorage.removeItem(TOKEN_KEY);
    for (const id of ["trades", "positions", "streams"]) $(id).tBodies[0].replaceChildren();
    $("trace").replaceChildren(el("p", { cls: "muted", text: "Choose a trade above." }));
    $("score-chart").replaceChildren();
    $("scores-summary").textContent = "";
    $("netuid").value = "";
    $("error").textContent = "";
    $("app").hidden = true;
    $("signout").hidden = true;
    $("who").textContent = "";
    $("signin").hidden = false;
    $("signin-error").textContent = message || "";
    $("token").focus();
  }

  // Runs `task` now and then `ms` after each run ends (never two at once).
  function every(name, task, ms) {
    const poll = { stopped: false, timer: null };
    poll.stop = () => {
      poll.stopped = true;
      clearTimeout(poll.timer);
    };
    const tick = async () => {
      if (poll.stopped) return;
      try {
        await task();
        errors.delete(name);
      } catch (err) {
        if (poll.stopped) return;
        if (err instanceof ApiError && err.status === 401) {
          signOut("Token refused: " + err.message);
          return;
        }
        errors.set(name, name + ": " + (err.code ? err.code + ": " : "") + err.message);
      }
      showErrors();
      if (!poll.stopped) poll.timer = setTimeout(tick, ms);
    };
    polls.push(poll);
    tick();
    return poll;
  }

  function start() {
    every("trades", refreshTrades, POLL_MS.trades);
    every("positions", refreshPositions, POLL_MS.positions);
    every("streams", refreshStreams, POLL_MS.streams);
    every("scores", refreshScores, POLL_MS.scores);
  }

  // ------------------------------------------------------------------ trades
  async function refreshTrades() {
    const page = await api("/api/v1/trades", { limit: 25 });
    $("trades").tBodies[0].replaceChildren(...page.items.map(tradeRow));
    $("trades-empty").hidden = page.items.length > 0;
    $("trades-updated").textContent = "updated " + clock();
    // A trade that just finished moved stake or added a score: refresh those now.
    const finished = page.items.some(
      (item) => seen.has(item.trade_id) && seen.get(item.trade_id) !== item.status && phaseDone(item.status),
    );
    const firstSight = page.items.some((item) => !seen.has(item.trade_id)) && seen.size > 0;
    for (const item of page.items) seen.set(item.trade_id, item.status);
    if (finished || firstSight) {
      await Promise.allSettled([refreshPositions(), refreshScores()]);
    }
    if (!netuidChosen && $("netuid").value === "" && page.items.length > 0) {
      $("netuid").value = String(page.items[0].netuid);
      await refreshScores();
    }
    if (selected) {
      const trade = page.items.find((item) => item.trade_id === selected.id);
      if (trade && trade.updated_at !== selected.updated) await showTrace(selected.id);
    }
  }

  function tradeRow(trade) {
    const row = el(
      "tr",
      { cls: "trade", data: { tradeId: trade.trade_id } },
      el("td", { text: when(trade.created_at) }),
      el("td", { cls: "mono", text: short(trade.trade_id, 8, 4), title: trade.trade_id }),
      el("td", { text: trade.netuid }),
      el("td", { cls: "mono", text: short(trade.hotkey), title: trade.hotkey }),
      el("td", { text: trade.source }),
      el("td", { cls: "status status-" + safeClass(trade.status), text: trade.status }),
      el("td", {
        cls: "phase phase-" + safeClass(phase(trade.status)),
        text: phase(trade.status),
        title: trade.reason || "",
      }),
    );
    if (selected && selected.id === trade.trade_id) row.classList.add("selected");
    row.tabIndex = 0;
    row.addEventListener("click", () => selectTrade(trade.trade_id));
    row.addEventListener("keydown", (event) => {
      if (event.key === "Enter") selectTrade(trade.trade_id);
    });
    return row;
  }

  async function selectTrade(id) {
    selected = { id, updated: null };
    for (const row of $("trades").tBodies[0].rows) {
      row.classList.toggle("selected", row.dataset.tradeId === id);
    }
    try {
      await showTrace(id);
      errors.delete("trace");
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return signOut("Token refused: " + err.message);
      errors.set("trace", "trace: " + err.message);
    }
    showErrors();
  }

  async function showTrace(id) {
    const trade = await api("/api/v1/trades/" + encodeURIComponent(id));
    if (!selected || selected.id !== id) return;
    selected.updated = trade.updated_at;
    const action = trade.stake_action;
    const tweets = trade.tweets;
    const sentiment = trade.sentiment;
    const sections = [
      section("Trade", dl([
        ["trade", trade.trade_id, "mono trace-id"],
        ["subnet", trade.netuid],
        ["hotkey", trade.hotkey, "mono"],
        ["source", trade.source],
        ["status", trade.status, "trace-status status-" + safeClass(trade.status)],
        ["reason", trade.reason],
        ["requested by", trade.requested_by, "mono"],
        ["created", when(trade.created_at)],
        ["updated", when(trade.updated_at)],
      ])),
      section("Tweets", tweets ? tweetList(tweets) : el("p", { cls: "muted", text: "Not fetched yet." })),
      section("Score", sentiment ? dl([
        ["score", sentiment.score, "trace-score"],
        ["backend", sentiment.backend, "trace-backend"],
        ["model", sentiment.model],
        ["reason", sentiment.reason],
        ["fallback", sentiment.fallback_reason],
        ["scored", when(sentiment.scored_at)],
      ]) : el("p", { cls: "muted", text: "Not scored yet." })),
      section("Decision", action ? dl([
        ["direction", action.direction, "trace-direction"],
        ["status", action.status],
        ["reason", action.reason, "trace-reason"],
        ["amount TAO", action.amount_tao],
        ["amount alpha", action.amount_alpha],
        ["coldkey", action.coldkey, "mono"],
      ]) : el("p", { cls: "muted", text: "No decision yet." })),
      section("Extrinsic", action ? dl([
        ["hash", action.extrinsic_hash, "mono extrinsic-hash"],
        ["block", action.block, "trace-block"],
        ["block hash", action.block_hash, "mono"],
        ["fee (rao)", action.fee_rao, "trace-fee"],
        ["success", action.success === null ? null : action.success ? "yes" : "no"],
        ["message", action.message],
        ["error", action.error_name],
      ]) : el("p", { cls: "muted", text: "Nothing submitted." })),
      section("Settlement", el("p", { cls: "settlement", text: settlement(trade, action) })),
    ];
    $("trace").replaceChildren(el("div", { cls: "trace" }, ...sections));
  }

  function section(title, body) {
    return el("section", {}, el("h3", { text: title }), body);
  }

  function tweetList(batch) {
    const wrap = el("div");
    wrap.append(dl([
      ["source", batch.source],
      ["query", batch.query],
      ["found", batch.count],
      ["error", batch.error],
    ]));
    const list = el("ol", { cls: "tweets" });
    for (const tweet of Array.isArray(batch.tweets) ? batch.tweets : []) {
      const author = tweet && (tweet.username || tweet.user_name);
      list.append(
        el(
          "li",
          { cls: "tweet" },
          el("span", { cls: "tweet-text", text: tweet && tweet.text !== undefined ? tweet.text : "" }),
          author ? el("div", { cls: "author", text: "@" + author }) : null,
        ),
      );
    }
    wrap.append(list);
    return wrap;
  }

  function settlement(trade, action) {
    if (!action) return FINISHED.has(trade.status) ? "No extrinsic: " + dash(trade.reason) : "Waiting for the stake stage.";
    switch (action.status) {
      case "succeeded":
        return "Settled: succeeded in block " + dash(action.block) + ".";
      case "failed":
        return action.block !== null ? "Settled: failed in block " + action.block + "." : "Failed: " + dash(action.reason);
      case "included":
        return "In block " + dash(action.block) + "; its outcome could not be read yet.";
      case "unknown":
        return "Sent; the outcome is not known yet (settlement looks for its hash).";
      case "submitting":
        return "Being submitted.";
      default:
        return "No extrinsic (" + action.status + "): " + dash(action.reason);
    }
  }

  // ------------------------------------------------------------------ positions
  async function refreshPositions() {
    const page = await api("/api/v1/positions", { history: 20, limit: 50 });
    const chain = page.chain || {};
    $("chain-status").textContent =
      chain.status === "ok"
        ? "Chain stake read at block " + chain.block + "."
        : "Chain stake not read: " + dash(chain.status) + (chain.message ? " (" + chain.message + ")" : "") + ".";
    $("positions").tBodies[0].replaceChildren(...page.positions.map(positionRow));
    $("positions-empty").hidden = page.positions.length > 0;
    $("positions-updated").textContent = "updated " + clock();
  }

  function positionRow(position) {
    const last = position.last_action;
    return el(
      "tr",
      { cls: "position", data: { netuid: position.netuid, hotkey: position.hotkey } },
      el("td", { text: position.netuid }),
      el("td", { cls: "mono", text: short(position.hotkey), title: position.hotkey }),
      el("td", { cls: "net-staked", text: position.net_staked_tao }),
      el("td", { cls: "chain-stake", text: dash(position.chain_stake_alpha) }),
      el("td", { text: position.succeeded + " / " + position.actions, title: "succeeded / recorded" }),
      el("td", {
        text: last.direction + " " + last.status + " · " + when(last.created_at),
        title: last.reason || "",
      }),
      el("td", {}, sparkline(position.history), historyTable(position.history)),
    );
  }

  function sparkline(history) {
    const values = history.map((point) => Number(point.net_staked_tao_after)).reverse();
    const chart = svg("svg", { cls: "spark", viewBox: "0 0 100 20", "aria-hidden": "true" });
    if (values.length < 2) return chart;
    const low = Math.min(0, ...values);
    const high = Math.max(...values);
    const span = high - low || 1;
    const points = values.map((value, i) => {
      const x = (i / (values.length - 1)) * 100;
      const y = 19 - ((value - low) / span) * 18;
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    chart.append(svg("polyline", { cls: "line", points: points.join(" ") }));
    return chart;
  }

  function historyTable(history) {
    if (history.length === 0) return el("span", { cls: "muted", text: " no stake moved" });
    const rows = history.map((point) =>
      el(
        "tr",
        {},
        el("td", { text: when(point.created_at) }),
        el("td", { text: point.direction }),
        el("td", { text: point.direction === "remove" ? dash(point.amount_alpha) + " α" : dash(point.amount_tao) + " TAO" }),
        el("td", { text: dash(point.block) }),
        el("td", { cls: "mono", text: short(point.extrinsic_hash, 8, 4), title: point.extrinsic_hash || "" }),
        el("td", { text: point.net_staked_tao_after }),
        el("td", { text: dash(point.chain_stake_before_alpha) }),
      ),
    );
    const head = el(
      "tr",
      {},
      ...["time", "move", "amount", "block", "extrinsic", "net TAO after", "chain stake before"].map((label) =>
        el("th", { text: label }),
      ),
    );
    return el(
      "details",
      {},
      el("summary", { text: history.length + (history.length === 1 ? " move" : " moves") }),
      el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows)),
    );
  }

  // ------------------------------------------------------------------ scores
  async function refreshScores() {
    const raw = $("netuid").value.trim();
    if (raw === "") return;
    const netuid = Number(raw);
    if (!Number.isInteger(netuid) || netuid < 0 || netuid > 65535) {
      throw new ApiError(0, "validation_error", "subnet must be an integer 0..65535");
    }
    const page = await api("/api/v1/subnets/" + netuid + "/scores", { limit: 200 });
    drawChart(page.netuid, page.items.slice().reverse());
  }

  function drawChart(netuid, items) {
    const chart = $("score-chart");
    const W = 640, H = 240, L = 40, R = 14, T = 12, B = 30;
    const points = items
      .filter((item) => item.score !== null && !Number.isNaN(Date.parse(item.scored_at)))
      .sort((a, b) => Date.parse(a.scored_at) - Date.parse(b.scored_at));
    const unscored = items.length - points.length;
    const withoutScore = unscored + (unscored === 1 ? " trade" : " trades") + " without a score";
    const nodes = [];
    const y = (score) => T + ((100 - score) / 200) * (H - T - B);
    for (const level of [100, 50, 0, -50, -100]) {
      nodes.push(svg("line", { cls: level === 0 ? "zero" : "grid", x1: L, x2: W - R, y1: y(level), y2: y(level) }));
      nodes.push(svg("text", { cls: "axis-label", x: L - 6, y: y(level) + 3, "text-anchor": "end", text: String(level) }));
    }
    if (points.length === 0) {
      nodes.push(svg("text", { cls: "empty", x: W / 2, y: H / 2 - 8, "text-anchor": "middle", text: "No scores for subnet " + netuid + " yet." }));
      chart.replaceChildren(...nodes);
      chart.dataset.points = "0";
      $("scores-summary").textContent = unscored ? withoutScore + "." : "";
      return;
    }
    const times = points.map((item) => Date.parse(item.scored_at));
    const first = Math.min(...times);
    const last = Math.max(...times);
    const x = (time) => (last === first ? (L + W - R) / 2 : L + ((time - first) / (last - first)) * (W - L - R));
    const coords = points.map((item, i) => [x(times[i]), y(Math.max(-100, Math.min(100, item.score)))]);
    nodes.push(svg("polyline", { cls: "line", points: coords.map(([cx, cy]) => cx.toFixed(1) + "," + cy.toFixed(1)).join(" ") }));
    points.forEach((item, i) => {
      const dot = svg("circle", {
        cls: "point " + safeClass(item.backend),
        cx: coords[i][0].toFixed(1),
        cy: coords[i][1].toFixed(1),
        r: 3.5,
        "data-score": String(item.score),
        "data-trade-id": item.trade_id,
      });
      dot.append(svg("title", { text: when(item.scored_at) + " · score " + item.score + " (" + item.backend + ")" }));
      dot.addEventListener("click", () => selectTrade(item.trade_id));
      nodes.push(dot);
    });
    nodes.push(svg("text", { cls: "axis-label", x: L, y: H - 8, "text-anchor": "start", text: when(points[0].scored_at) }));
    if (points.length > 1) {
      nodes.push(svg("text", { cls: "axis-label", x: W - R, y: H - 8, "text-anchor": "end", text: when(points[points.length - 1].scored_at) }));
    }
    chart.replaceChildren(...nodes);
    chart.dataset.points = String(points.length);
    const latest = points[points.length - 1];
    $("scores-summary").textContent =
      "Subnet " + netuid + ": " + points.length + (points.length === 1 ? " score" : " scores") +
      (unscored ? ", " + withoutScore : "") +
      "; latest " + latest.score + " (" + latest.backend + ") at " + when(latest.scored_at) + ".";
  }

  // ------------------------------------------------------------------ streams
  async function refreshStreams() {
    const report = await api("/api/v1/streams");
    $("streams").tBodies[0].replaceChildren(
      ...report.streams.map((row) =>
        el(
          "tr",
          { data: { stream: row.stream } },
          el("td", { cls: "mono", text: row.stream }),
          el("td", { text: dash(row.group) }),
          el("td", { text: row.length }),
          el("td", { cls: row.lag ? "warn" : "", text: dash(row.lag) }),
          el("td", { text: dash(row.pending) }),
          el("td", { text: dash(row.consumers) }),
          el("td", {
            cls: row.oldest_pending_idle_s > 60 ? "warn" : "",
            text: row.oldest_pending_idle_s === null ? "—" : row.oldest_pending_idle_s.toFixed(1) + " s",
          }),
        ),
      ),
    );
    const dead = $("dead-letters");
    dead.textContent = "Dead letters: " + report.dead_letters +
      (report.dead_letters > 0 ? " (inspect with python -m pipeline dead-letter list)" : "");
    dead.className = report.dead_letters > 0 ? "warn" : "muted";
    $("streams-updated").textContent = "updated " + clock();
  }

  // ------------------------------------------------------------------ wiring
  document.addEventListener("DOMContentLoaded", () => {
    $("signin-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("token").value.trim();
      $("token").value = "";
      if (value) signIn(value);
    });
    $("signout").addEventListener("click", () => signOut(""));
    $("scores-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      netuidChosen = true;
      try {
        await refreshScores();
        errors.delete("scores");
      } catch (err) {
        if (err instanceof ApiError && err.status === 401) return signOut("Token refused: " + err.message);
        errors.set("scores", "scores: " + err.message);
      }
      showErrors();
    });
    const stored = sessionStorage.getItem(TOKEN_KEY);
    if (stored) signIn(stored);
  });
})();
