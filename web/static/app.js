// jim chat page: one WebSocket to the page's own host, J-IM JSON commands.
// All user-supplied text is put into the page with textContent only.
"use strict";

(function () {
  const CMD = {
    LOGIN_RESP: 6, JOIN: 7, JOIN_RESP: 8, JOIN_NOTICE: 9, EXIT_NOTICE: 10,
    CHAT: 11, CHAT_RESP: 12, HEARTBEAT: 13, CLOSE: 14,
    GET_USER: 17, GET_USER_RESP: 18, GET_MSG: 19, GET_MSG_RESP: 20, LEAVE: 21,
  };
  const CODE = {
    SENT: 10000, OFFLINE: 10001, LOGIN_OK: 10007, LOGIN_FAILED: 10008,
    ALL_USERS: 10003, ONLINE_USERS: 10005, OFFLINE_MSGS: 10016, HISTORY: 10018,
    LEFT_GROUP: 10106,
  };
  const CHAT_GROUP = 1, CHAT_PRIVATE = 2;
  const HEARTBEAT_MS = 30000;       // cmd 13 while connected
  const DEAD_AFTER_MS = 75000;      // nothing received for this long: reconnect
  const BACKOFF_MIN_MS = 1000, BACKOFF_MAX_MS = 30000;
  const RESUME_PAGE = 200;          // messages per resume request
  const OLDER_PAGE = 50;            // messages per "load older"

  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };

  // ---------- state ----------
  const S = {
    me: "",
    creds: null,          // {user, password, token}
    ws: null,
    loggedIn: false,      // the current socket got its cmd-6 ok
    everLoggedIn: false,  // a login succeeded since "Sign in": keep reconnecting
    attempt: 0,
    reconnectTimer: 0,
    hbTimer: 0,
    lastRecv: 0,
    convs: new Map(),     // key ("u:<user>" | "g:<group>") -> conversation
    active: "",
    groups: new Set(),
    online: new Set(),    // online users sharing a group with me (me excluded)
    groupOnline: new Map(), // group -> online count
    members: new Map(),   // group -> [{userId, status}] from a get-user type 2
    pending: new Map(),   // client id -> own message awaiting its cmd-12
    ackQueue: [],         // client ids in the order sent on this socket
    msgQueue: [],         // what each outstanding cmd 19 asked for, in order
    userQueue: [],        // what each outstanding cmd 17 asked for, in order
    refreshTimer: 0,
  };

  // ---------- storage of the session (tab-scoped) and chat list ----------
  const store = {
    session() {
      try { return JSON.parse(sessionStorage.getItem("jim.session") || "null"); } catch (e) { return null; }
    },
    saveSession(c) { try { sessionStorage.setItem("jim.session", JSON.stringify(c)); } catch (e) { /* private mode */ } },
    clearSession() { try { sessionStorage.removeItem("jim.session"); sessionStorage.removeItem("jim.active"); } catch (e) { /* ignore */ } },
    active() { try { return sessionStorage.getItem("jim.active") || ""; } catch (e) { return ""; } },
    saveActive(k) { try { sessionStorage.setItem("jim.active", k); } catch (e) { /* ignore */ } },
    chats(user) {
      try { return JSON.parse(localStorage.getItem("jim.chats." + user) || "[]"); } catch (e) { return []; }
    },
    saveChats() {
      if (!S.me) return;
      const keys = [...S.convs.values()].filter((c) => c.kind === "u").map((c) => c.key);
      try { localStorage.setItem("jim.chats." + S.me, JSON.stringify(keys)); } catch (e) { /* ignore */ }
    },
  };

  // ---------- conversations and messages ----------
  function convKey(kind, id) { return kind + ":" + id; }

  function getConv(key, create) {
    let c = S.convs.get(key);
    if (!c && create) {
      const kind = key.slice(0, 1), id = key.slice(2);
      c = {
        key, kind, id,
        msgs: [],            // ordered: by seq, unsequenced (pending) last
        byId: new Map(), bySeq: new Map(),
        lastSeq: 0,          // highest seq seen: where a resume starts
        unread: 0,
        lastActivity: 0,
        historyLoaded: false,
        historyLoading: false,
        hasOlder: false,
        loadingOlder: false,
      };
      S.convs.set(key, c);
      if (kind === "u") store.saveChats();
    }
    return c;
  }

  function keyOfChat(cb) {
    if (Number(cb.chatType) === CHAT_GROUP) return convKey("g", String(cb.groupId));
    return convKey("u", cb.from === S.me ? String(cb.to) : String(cb.from));
  }

  function compareMsgs(a, b) {
    const as = a.seq || Infinity, bs = b.seq || Infinity;
    if (as !== bs) return as - bs;
    return a.local - b.local;
  }

  let localCounter = 0;

  function index(conv, m) {
    if (m.id) conv.byId.set(m.id, m);
    if (m.seq) {
      conv.bySeq.set(m.seq, m);
      if (m.seq > conv.lastSeq) conv.lastSeq = m.seq;
    }
    if (m.createTime > conv.lastActivity) conv.lastActivity = m.createTime;
  }

  // ingest adds a stored message (cmd 11 push, history or offline) unless
  // it is already shown. It returns the message when it is new.
  function ingest(cb) {
    const conv = getConv(keyOfChat(cb), true);
    const seq = Number(cb.seq) || 0;
    if ((cb.id && conv.byId.has(cb.id)) || (seq && conv.bySeq.has(seq))) return null;
    if (cb.from === S.me) {
      // Our own group message echoed back before its ack: bind it to the
      // pending copy instead of showing it twice.
      for (const m of conv.msgs) {
        if (!m.id && m.state === "sending" && m.content === String(cb.content ?? "")) {
          m.id = cb.id; m.seq = seq; m.state = "sent";
          pendingDone(m);
          index(conv, m);
          conv.msgs.sort(compareMsgs);
          return null;
        }
      }
    }
    const m = {
      id: cb.id || "", seq, from: String(cb.from ?? ""), content: String(cb.content ?? ""),
      createTime: Number(cb.createTime) || Date.now(), state: cb.from === S.me ? "sent" : "",
      local: ++localCounter, clientId: "",
    };
    conv.msgs.push(m);
    index(conv, m);
    conv.msgs.sort(compareMsgs);
    return m;
  }

  function pendingDone(m) {
    if (m.clientId) {
      S.pending.delete(m.clientId);
      const i = S.ackQueue.indexOf(m.clientId);
      if (i >= 0) S.ackQueue.splice(i, 1);
    }
  }

  function newClientId() {
    const r = new Uint8Array(8);
    (window.crypto || window.msCrypto).getRandomValues(r);
    return "c" + Date.now().toString(36) + Array.from(r, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // ---------- socket ----------
  function wsURL(c) {
    const q = new URLSearchParams();
    if (c.user) q.set("username", c.user);
    if (c.password) q.set("password", c.password);
    if (c.token) q.set("token", c.token);
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/?" + q.toString();
  }

  function send(obj) {
    if (!S.ws || S.ws.readyState !== WebSocket.OPEN) return false;
    S.ws.send(JSON.stringify(obj));
    return true;
  }

  function connect() {
    clearTimeout(S.reconnectTimer);
    S.reconnectTimer = 0;
    setConn(S.everLoggedIn ? "reconnecting" : "connecting", S.everLoggedIn ? "reconnecting…" : "connecting…");
    let ws;
    try {
      ws = new WebSocket(wsURL(S.creds));
    } catch (e) {
      loginError("Cannot open a connection: " + e.message);
      return;
    }
    S.ws = ws;
    S.loggedIn = false;
    S.ackQueue = []; S.msgQueue = []; S.userQueue = [];
    ws.onopen = () => { S.lastRecv = Date.now(); };
    ws.onmessage = (ev) => {
      if (ws !== S.ws) return;
      S.lastRecv = Date.now();
      let m;
      try { m = JSON.parse(ev.data); } catch (e) { return; }
      if (m && typeof m === "object") handle(m);
    };
    ws.onclose = () => {
      if (ws !== S.ws) return;
      S.ws = null;
      const was = S.loggedIn;
      S.loggedIn = false;
      clearInterval(S.hbTimer);
      if (!S.creds) return; // signed out
      if (!S.everLoggedIn) {
        if (!$("login-error").textContent) loginError("Could not connect to the server.");
        showLogin();
        return;
      }
      if (was) S.attempt = 0;
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** S.attempt);
    const delay = Math.round(base / 2 + Math.random() * base / 2);
    S.attempt++;
    setConn("reconnecting", "reconnecting in " + Math.ceil(delay / 1000) + "s…");
    S.reconnectTimer = setTimeout(connect, delay);
  }

  function startHeartbeat() {
    clearInterval(S.hbTimer);
    S.hbTimer = setInterval(() => {
      if (!S.ws) return;
      if (Date.now() - S.lastRecv > DEAD_AFTER_MS) {
        S.ws.close(); // onclose reconnects
        return;
      }
      send({ cmd: CMD.HEARTBEAT, hbbyte: -127 });
    }, HEARTBEAT_MS);
  }

  // ---------- incoming ----------
  function handle(m) {
    switch (m.command) {
      case CMD.LOGIN_RESP: return onLogin(m);
      case CMD.JOIN_NOTICE: return onJoinNotice(m);
      case CMD.JOIN_RESP: return toast("Could not join group " + (m.group || "") + ".");
      case CMD.EXIT_NOTICE: return refreshPresence();
      case CMD.CHAT: return onChat(m.data || {});
      case CMD.CHAT_RESP: return onAck(m);
      case CMD.GET_USER_RESP: return onUsers(m);
      case CMD.GET_MSG_RESP: return onMessages(m);
      case CMD.LEAVE: return onLeft(m);
      case CMD.CLOSE: return; // the server closes the socket; onclose decides
      default: return;
    }
  }

  function onLogin(m) {
    if (m.code !== CODE.LOGIN_OK) {
      S.everLoggedIn = false;
      loginError("Sign-in failed. Check the user id and password or token.");
      store.clearSession();
      return;
    }
    const u = m.user || {};
    const first = !S.everLoggedIn;
    S.me = String(u.userId || S.creds.user);
    S.loggedIn = true;
    S.everLoggedIn = true;
    S.attempt = 0;
    store.saveSession(S.creds);
    setConn("online", "online");
    startHeartbeat();
    if (first) enterApp();
    for (const g of u.groups || []) addGroup(String(g.groupId));

    // Who is online in my groups, then anything queued while I was away.
    requestPresence();
    requestMessages({ kind: "offline" }, { cmd: CMD.GET_MSG, type: 0, userId: S.me });
    // Fill every gap since the last message seen, per conversation.
    if (!first) {
      for (const c of S.convs.values()) {
        if (c.historyLoaded || c.lastSeq > 0) resume(c, c.lastSeq);
      }
    }
    // Re-send what never got an ack; the client id makes a retry safe.
    for (const p of S.pending.values()) transmit(p);
    const a = S.active && getConv(S.active, false);
    if (a && !a.historyLoaded) loadHistory(a);
    renderAll();
  }

  function onJoinNotice(m) {
    const gid = m.group != null ? String(m.group) : "";
    const uid = m.user && m.user.userId;
    if (gid && uid === S.me && !S.groups.has(gid)) {
      addGroup(gid);
      openConv(convKey("g", gid));
    }
    refreshPresence();
  }

  function onChat(cb) {
    if (!cb || cb.content === undefined) return;
    const m = ingest(cb);
    if (!m) { renderAll(); return; }
    const key = keyOfChat(cb);
    const conv = getConv(key, false);
    if (m.from !== S.me && !(key === S.active && isChatVisible())) conv.unread++;
    renderAll();
  }

  function onAck(m) {
    const data = m.data || {};
    let cid = data.clientId;
    if (cid) {
      const i = S.ackQueue.indexOf(cid);
      if (i >= 0) S.ackQueue.splice(i, 1);
    } else {
      cid = S.ackQueue.shift(); // replies come in the order sent
    }
    const p = cid && S.pending.get(cid);
    if (!p) return;
    S.pending.delete(cid);
    const conv = getConv(p.conv, false);
    if (m.code === CODE.SENT) p.state = "sent";
    else if (m.code === CODE.OFFLINE) p.state = "stored";
    else { p.state = "failed"; p.error = m.msg || ""; }
    if (data.id && conv) {
      const dup = conv.byId.get(data.id);
      if (dup && dup !== p) {
        // The stored copy is already shown (echo or history): keep that one.
        dup.state = p.state;
        conv.msgs = conv.msgs.filter((x) => x !== p);
      } else {
        p.id = data.id; p.seq = Number(data.seq) || 0;
        index(conv, p);
        conv.msgs.sort(compareMsgs);
      }
    }
    renderAll();
  }

  function onUsers(m) {
    const req = S.userQueue.shift() || { kind: "presence" };
    const u = m.data;
    if (!u || (m.code !== CODE.ONLINE_USERS && m.code !== CODE.ALL_USERS)) return;
    if (req.kind === "presence") {
      S.online.clear();
      for (const g of u.groups || []) {
        const gid = String(g.groupId);
        addGroup(gid);
        S.groupOnline.set(gid, Number(g.online) || 0);
        for (const x of g.users || []) {
          if (x.userId !== S.me && x.status === "online") S.online.add(String(x.userId));
        }
      }
    } else if (req.kind === "members") {
      const g = (u.groups || []).find((x) => String(x.groupId) === req.group);
      S.members.set(req.group, g ? (g.users || []) : []);
    }
    renderAll();
  }

  function onMessages(m) {
    const req = S.msgQueue.shift();
    if (!req) return;
    const conv = req.key ? getConv(req.key, false) : null;
    if (conv) { conv.historyLoading = false; conv.loadingOlder = false; }
    if (m.code !== CODE.OFFLINE_MSGS && m.code !== CODE.HISTORY) { renderAll(); return; }
    const data = m.data || {};
    const all = [];
    for (const list of Object.values(data.friends || {})) all.push(...list);
    for (const list of Object.values(data.groups || {})) all.push(...list);

    if (req.kind === "offline") {
      let fresh = 0;
      for (const cb of all) {
        const x = ingest(cb);
        if (x) fresh++;
        if (x && x.from !== S.me) {
          const c = getConv(keyOfChat(cb), false);
          if (!(c.key === S.active && isChatVisible())) c.unread++;
        }
      }
      // A reply is bounded in count and bytes, and what it held has left
      // the queue: ask again until the queue is empty, or a page brings
      // nothing new (a server that kept what it sent must not be asked
      // for ever).
      if (fresh > 0) requestMessages({ kind: "offline" }, { cmd: CMD.GET_MSG, type: 0, userId: S.me });
    } else if (conv) {
      let added = 0;
      for (const cb of all) if (ingest(cb)) added++;
      if (req.kind === "history") {
        conv.historyLoaded = true;
        conv.hasOlder = floorSeq(conv) > 1;
      } else if (req.kind === "older") {
        conv.hasOlder = added > 0 && floorSeq(conv) > 1;
        keepScroll = true;
      } else if (req.kind === "resume") {
        conv.historyLoaded = true;
        // A page may end early (the server bounds its bytes too): go on
        // while pages bring new messages.
        if (added > 0) resume(conv, conv.lastSeq);
        if (added && conv.key !== S.active) conv.unread += added;
      }
    }
    renderAll();
  }

  function onLeft(m) {
    if (m.code !== CODE.LEFT_GROUP) { toast("Could not leave the group."); return; }
    const key = S.leaving;
    S.leaving = "";
    if (!key) return;
    S.groups.delete(key.slice(2));
    S.convs.delete(key);
    if (S.active === key) closeConv();
    refreshPresence();
    renderAll();
  }

  // ---------- outgoing ----------
  function requestPresence() {
    if (!S.loggedIn) return;
    S.userQueue.push({ kind: "presence" });
    send({ cmd: CMD.GET_USER, type: 0, userId: S.me });
  }

  function refreshPresence() {
    clearTimeout(S.refreshTimer);
    S.refreshTimer = setTimeout(requestPresence, 250); // notices come in bursts
  }

  function requestMembers(gid) {
    if (!S.loggedIn) return;
    S.userQueue.push({ kind: "members", group: gid });
    send({ cmd: CMD.GET_USER, type: 2, userId: S.me });
  }

  function requestMessages(req, body) {
    if (!S.loggedIn) return false;
    S.msgQueue.push(req);
    return send(body);
  }

  function convTarget(c) {
    return c.kind === "g" ? { groupId: c.id } : { fromUserId: c.id };
  }

  function loadHistory(c) {
    if (c.historyLoading || !S.loggedIn) return;
    c.historyLoading = true;
    // No paging parameters: the newest page of the conversation.
    requestMessages({ kind: "history", key: c.key },
      Object.assign({ cmd: CMD.GET_MSG, type: 1, userId: S.me }, convTarget(c)));
  }

  // floorSeq is the oldest seq of the unbroken run of messages that ends at
  // the newest one: offline messages older than the first history page may
  // sit apart from it, and paging back must fill that hole first.
  function floorSeq(c) {
    let floor = c.lastSeq;
    while (floor > 1 && c.bySeq.has(floor - 1)) floor--;
    return floor;
  }

  function loadOlder(c) {
    const floor = floorSeq(c);
    if (floor <= 1 || c.loadingOlder || !S.loggedIn) return;
    c.loadingOlder = true;
    // seq numbers a conversation 1, 2, 3, ...: the page before seq n ends
    // at offset n-1. ingest skips any message already on screen.
    const end = floor - 1;
    let offset = Math.max(0, end - OLDER_PAGE);
    // The server may cut a page short (it bounds a reply's bytes), from
    // its newest end: the messages just below the floor are then still
    // missing above the ones that came. Fill that gap first, forwards from
    // the highest seq held below it, so every page moves on.
    for (let s = end - 1; s > offset; s--) {
      if (c.bySeq.has(s)) { offset = s; break; }
    }
    requestMessages({ kind: "older", key: c.key },
      Object.assign({ cmd: CMD.GET_MSG, type: 1, userId: S.me, offset: offset, count: end - offset }, convTarget(c)));
    renderAll();
  }

  function resume(c, afterSeq) {
    requestMessages({ kind: "resume", key: c.key },
      Object.assign({ cmd: CMD.GET_MSG, type: 1, userId: S.me, afterSeq: afterSeq, count: RESUME_PAGE }, convTarget(c)));
  }

  function transmit(p) {
    // No createTime: the server stamps it, so times follow seq order.
    const body = { cmd: CMD.CHAT, chatType: p.chatType, msgType: 0, content: p.content, id: p.clientId };
    if (p.chatType === CHAT_GROUP) body.groupId = p.target; else body.to = p.target;
    if (S.loggedIn && send(body)) S.ackQueue.push(p.clientId);
  }

  function sendMessage(text) {
    const c = getConv(S.active, false);
    if (!c || !text) return;
    const p = {
      id: "", seq: 0, from: S.me, content: text, createTime: Date.now(), state: "sending",
      local: ++localCounter, clientId: newClientId(), conv: c.key,
      chatType: c.kind === "g" ? CHAT_GROUP : CHAT_PRIVATE, target: c.id,
    };
    c.msgs.push(p);
    c.lastActivity = p.createTime;
    S.pending.set(p.clientId, p);
    transmit(p);
    stickToBottom = true;
    renderAll();
  }

  function retry(p) {
    p.state = "sending";
    p.clientId = newClientId();
    S.pending.set(p.clientId, p);
    transmit(p);
    renderAll();
  }

  function addGroup(gid) {
    if (!gid) return;
    S.groups.add(gid);
    getConv(convKey("g", gid), true);
  }

  // ---------- view ----------
  let keepScroll = false, stickToBottom = false;

  function initials(s) { return (String(s).trim()[0] || "?"); }

  function colorFor(s) {
    let h = 0;
    for (const ch of String(s)) h = (h * 31 + ch.codePointAt(0)) >>> 0;
    return "hsl(" + (h % 360) + " 45% 48%)";
  }

  function paintAvatar(node, name, group) {
    node.textContent = group ? "#" : initials(name);
    node.style.background = colorFor((group ? "#" : "") + name);
    node.classList.toggle("group", !!group);
  }

  function fmtTime(ms) {
    const d = new Date(ms), now = new Date();
    const t = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    if (d.toDateString() === now.toDateString()) return t;
    return d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + t;
  }

  function stateLabel(m) {
    switch (m.state) {
      case "sending": return "sending…";
      case "sent": return "sent";
      case "stored": return "offline, stored";
      case "failed": return "not sent, retry";
      default: return "";
    }
  }

  function convTitle(c) { return c.kind === "g" ? "#" + c.id : c.id; }

  function isChatVisible() {
    return !!S.active && (window.innerWidth > 720 || $("app").classList.contains("chat-open")) && !document.hidden;
  }

  function renderAll() {
    if (!S.me) return;
    renderConvList();
    renderOnline();
    renderConversation();
  }

  function renderConvList() {
    const ul = $("conv-list");
    const convs = [...S.convs.values()].sort((a, b) =>
      (b.lastActivity - a.lastActivity) || convTitle(a).localeCompare(convTitle(b)));
    ul.replaceChildren();
    for (const c of convs) {
      const li = el("li");
      li.dataset.key = c.key;
      if (c.key === S.active) li.classList.add("active");
      const av = el("span", "avatar");
      paintAvatar(av, c.id, c.kind === "g");
      const meta = el("div", "meta");
      meta.append(el("span", "name", convTitle(c)));
      const last = c.msgs[c.msgs.length - 1];
      let preview = "";
      if (last) preview = (last.from === S.me ? "You: " : (c.kind === "g" ? last.from + ": " : "")) + last.content;
      else if (c.kind === "g") preview = (S.groupOnline.get(c.id) || 0) + " online";
      else preview = S.online.has(c.id) ? "online" : "";
      meta.append(el("span", "preview", preview));
      li.append(av, meta);
      if (c.kind === "u" && S.online.has(c.id)) li.append(el("span", "dot"));
      if (c.unread > 0) li.append(el("span", "badge", String(c.unread)));
      li.addEventListener("click", () => openConv(c.key));
      ul.append(li);
    }
    $("conv-empty").hidden = convs.length > 0;
  }

  function renderOnline() {
    const ul = $("online-list");
    ul.replaceChildren();
    const users = [...S.online].sort();
    for (const u of users) {
      const li = el("li");
      li.dataset.user = u;
      const av = el("span", "avatar");
      paintAvatar(av, u, false);
      const meta = el("div", "meta");
      meta.append(el("span", "name", u));
      li.append(av, meta, el("span", "dot"));
      li.addEventListener("click", () => openConv(convKey("u", u)));
      ul.append(li);
    }
    $("online-count").textContent = users.length ? "(" + users.length + ")" : "";
    $("online-empty").hidden = users.length > 0;
  }

  function renderConversation() {
    const c = S.active && getConv(S.active, false);
    $("empty").hidden = !!c;
    $("conversation").hidden = !c;
    if (!c) return;
    paintAvatar($("chat-avatar"), c.id, c.kind === "g");
    $("chat-title").textContent = convTitle(c);
    if (c.kind === "g") {
      const n = S.groupOnline.get(c.id) || 0;
      $("chat-sub").textContent = "group · " + n + " online";
    } else {
      $("chat-sub").textContent = S.online.has(c.id) ? "online" : "offline";
    }
    $("members-btn").hidden = c.kind !== "g";
    $("leave-btn").hidden = c.kind !== "g";
    if (c.kind !== "g") $("members").hidden = true;
    if (!$("members").hidden) renderMembers(c);

    const box = $("messages");
    const fromBottom = box.scrollHeight - box.scrollTop - box.clientHeight;
    const atBottom = fromBottom < 40;

    const ol = $("msg-list");
    ol.replaceChildren();
    let lastDay = "", prev = null;
    for (const m of c.msgs) {
      const day = new Date(m.createTime).toDateString();
      if (day !== lastDay) {
        lastDay = day;
        prev = null;
        ol.append(el("li", "day", new Date(m.createTime).toLocaleDateString([], { weekday: "short", month: "short", day: "numeric" })));
      }
      // A run of messages from one sender shows the name once.
      const cont = !!prev && prev.from === m.from && m.createTime - prev.createTime < 5 * 60000;
      ol.append(renderMsg(c, m, cont));
      prev = m;
    }
    const oldest = c.msgs.find((x) => x.seq);
    $("load-older").hidden = !c.hasOlder;
    $("load-older").disabled = c.loadingOlder;
    $("load-older").textContent = c.loadingOlder ? "Loading…" : "Load older messages";
    $("history-start").hidden = c.hasOlder || !c.historyLoaded || !oldest;

    if (keepScroll) {
      box.scrollTop = box.scrollHeight - box.clientHeight - fromBottom;
    } else if (atBottom || stickToBottom) {
      box.scrollTop = box.scrollHeight;
    }
    keepScroll = false;
    stickToBottom = false;
  }

  function renderMsg(c, m, cont) {
    const mine = m.from === S.me;
    const li = el("li", "msg" + (mine ? " mine" : "") + (cont ? " cont" : "") + (m.state === "sending" ? " sending" : ""));
    if (m.seq) li.dataset.seq = String(m.seq);
    if (m.id) li.dataset.id = m.id;
    if (m.clientId) li.dataset.clientId = m.clientId;
    if (c.kind === "g" && !mine && !cont) li.append(el("span", "from", m.from));
    li.append(el("div", "bubble", m.content));
    const info = el("div", "info");
    info.append(el("time", "", fmtTime(m.createTime)));
    if (mine && m.state) {
      const st = el("span", "state", stateLabel(m));
      st.dataset.state = m.state;
      if (m.state === "failed") {
        st.title = m.error || "";
        st.addEventListener("click", () => retry(m));
      }
      info.append(st);
    }
    li.append(info);
    return li;
  }

  function renderMembers(c) {
    const ul = $("member-list");
    ul.replaceChildren();
    const list = S.members.get(c.id);
    if (!list) { ul.append(el("li", "", "Loading…")); return; }
    for (const u of list) {
      const li = el("li", u.status === "online" ? "on" : "", String(u.userId));
      if (u.userId !== S.me) li.addEventListener("click", () => openConv(convKey("u", String(u.userId))));
      ul.append(li);
    }
  }

  function openConv(key) {
    const c = getConv(key, true);
    S.active = key;
    store.saveActive(key);
    c.unread = 0;
    $("members").hidden = true;
    $("members-btn").setAttribute("aria-expanded", "false");
    $("app").classList.add("chat-open");
    stickToBottom = true;
    if (!c.historyLoaded) loadHistory(c);
    renderAll();
    if (window.innerWidth > 720) $("composer-input").focus();
  }

  function closeConv() {
    S.active = "";
    store.saveActive("");
    $("app").classList.remove("chat-open");
    renderAll();
  }

  function setConn(state, text) {
    const n = $("conn-state");
    n.dataset.state = state;
    n.textContent = text;
  }

  let toastTimer = 0;
  function toast(text) {
    const t = $("toast");
    t.textContent = text;
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, 3500);
  }

  function loginError(text) { $("login-error").textContent = text; }

  function showLogin() {
    $("app").hidden = true;
    $("login").hidden = false;
    $("login-btn").disabled = false;
  }

  function enterApp() {
    $("login").hidden = true;
    $("app").hidden = false;
    $("me-name").textContent = S.me;
    paintAvatar($("me-avatar"), S.me, false);
    document.title = S.me + " · jim chat";
    for (const key of store.chats(S.me)) if (typeof key === "string" && key.startsWith("u:")) getConv(key, true);
    const saved = store.active();
    if (saved) openConv(saved);
  }

  function signIn(creds) {
    S.creds = creds;
    S.everLoggedIn = false;
    S.attempt = 0;
    loginError("");
    $("login-btn").disabled = true;
    connect();
  }

  function signOut() {
    const ws = S.ws;
    S.creds = null;
    S.everLoggedIn = false;
    S.ws = null;
    clearTimeout(S.reconnectTimer);
    clearInterval(S.hbTimer);
    if (ws) ws.close(1000);
    store.clearSession();
    location.reload();
  }

  // ---------- wiring ----------
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const user = $("login-user").value.trim();
    const password = $("login-pass").value;
    const token = $("login-token").value.trim();
    if (!user && !token) { loginError("Enter a user id, or a token."); return; }
    signIn({ user, password, token });
  });

  $("start-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("start-input").value.trim();
    if (!id) return;
    if (id === S.me) { toast("That is you."); return; }
    $("start-input").value = "";
    openConv(convKey("u", id));
  });

  $("join-group").addEventListener("click", () => {
    const id = $("start-input").value.trim().replace(/^#/, "");
    if (!id) { toast("Enter a group id to join."); return; }
    if (!S.loggedIn) { toast("Not connected."); return; }
    $("start-input").value = "";
    if (S.groups.has(id)) { openConv(convKey("g", id)); return; }
    send({ cmd: CMD.JOIN, groupId: id }); // the cmd-9 notice opens it
  });

  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("composer-input");
    const text = input.value;
    if (!text.trim()) return;
    input.value = "";
    autosize();
    sendMessage(text);
    input.focus();
  });

  const autosize = () => {
    const t = $("composer-input");
    t.style.height = "auto";
    t.style.height = Math.min(t.scrollHeight + 2, 128) + "px";
  };
  $("composer-input").addEventListener("input", autosize);
  $("composer-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });

  $("load-older").addEventListener("click", () => {
    const c = getConv(S.active, false);
    if (c) loadOlder(c);
  });

  $("back-btn").addEventListener("click", closeConv);
  $("logout-btn").addEventListener("click", signOut);

  $("members-btn").addEventListener("click", () => {
    const c = getConv(S.active, false);
    if (!c || c.kind !== "g") return;
    const list = $("messages");
    stickToBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    const box = $("members");
    box.hidden = !box.hidden;
    $("members-btn").setAttribute("aria-expanded", String(!box.hidden));
    if (!box.hidden) requestMembers(c.id);
    renderAll();
  });

  $("leave-btn").addEventListener("click", () => {
    const c = getConv(S.active, false);
    if (!c || c.kind !== "g" || !S.loggedIn) return;
    if (!window.confirm("Leave group " + c.id + "?")) return;
    S.leaving = c.key;
    send({ cmd: CMD.LEAVE, groupId: c.id });
  });

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && S.active) {
      const c = getConv(S.active, false);
      if (c) c.unread = 0;
      renderAll();
    }
  });

  // Leaving the page closes the socket at once, so others see us go offline;
  // a page restored from the back/forward cache connects again.
  window.addEventListener("pagehide", () => {
    const ws = S.ws;
    if (!ws) return;
    S.ws = null;
    S.loggedIn = false;
    clearTimeout(S.reconnectTimer);
    clearInterval(S.hbTimer);
    ws.close(1000);
  });
  window.addEventListener("pageshow", (e) => {
    if (e.persisted && S.everLoggedIn && !S.ws) { S.attempt = 0; connect(); }
  });

  window.addEventListener("online", () => {
    if (S.everLoggedIn && !S.ws) { S.attempt = 0; connect(); }
  });

  // A session from earlier in this tab signs in again by itself.
  const saved = store.session();
  if (saved && (saved.user || saved.token)) {
    $("login-user").value = saved.user || "";
    signIn(saved);
  }
})();
