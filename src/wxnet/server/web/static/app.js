// wxnet web client: the Web WeChat API (docs/web.md), plain JS, no build step.
'use strict';

const CGI = '/cgi-bin/mmwebwx-bin';
const CHUNK = 512 * 1024;
const HISTORY_PAGE = 30;     // messages per webwxhistory page of one conversation
const RECENT_PAGE = 100;     // the first page over every conversation, after login
const TIME_GAP = 300;        // seconds between messages that earn a new time line
const $ = (id) => document.getElementById(id);

const state = freshState();

function freshState() {
  return {
    uin: 0, sid: '', skey: '', passTicket: '', me: null, syncKey: null,
    contacts: new Map(),   // UserName -> contact object
    chats: [],             // UserNames, most recent first
    messages: new Map(),   // UserName -> [message view], oldest first
    unread: new Map(),     // UserName -> unread count
    history: new Map(),    // UserName -> { next, opened, loading }
    recalled: new Map(),   // MsgId of a recalled message -> the line that replaces it
    current: '',
    running: false,
    generation: 0,         // bumped on every logout: stale loops stop
  };
}

function baseRequest() {
  return { Uin: state.uin, Sid: state.sid, Skey: state.skey, DeviceID: 'e' + String(Math.random()).slice(2, 17) };
}

async function postJSON(path, body) {
  const gen = state.generation;
  const res = await fetch(CGI + path, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(Object.assign({ BaseRequest: baseRequest() }, body)),
  });
  if (!res.ok) throw new Error('HTTP ' + res.status);
  const obj = await res.json();
  const ret = obj.BaseResponse ? obj.BaseResponse.Ret : -1;
  if (ret === 1100 || ret === 1101 || ret === 1102) {
    if (gen === state.generation) loggedOut('Logged out');  // once per session
    throw new Error('logged out');
  }
  if (ret !== 0) throw new Error((obj.BaseResponse && obj.BaseResponse.ErrMsg) || 'Ret ' + ret);
  return obj;
}

function unescapeContent(s) {
  const t = document.createElement('textarea');
  t.innerHTML = s.replace(/<br\/>/g, '\n');
  return t.value;
}

function xmlTag(xml, name) {
  const m = new RegExp('<' + name + '(?:\\s[^>]*)?>(?:<!\\[CDATA\\[)?([\\s\\S]*?)(?:\\]\\]>)?</' + name + '>').exec(xml);
  return m ? m[1] : '';
}

function cookie(name) {
  const m = new RegExp('(?:^|; )' + name + '=([^;]*)').exec(document.cookie);
  return m ? decodeURIComponent(m[1]) : '';
}

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

// ---------------------------------------------------------------- times
function pad(n) { return String(n).padStart(2, '0'); }

function clock(t) {
  const d = new Date(t * 1000);
  return pad(d.getHours()) + ':' + pad(d.getMinutes());
}

function dayOf(t) {
  const d = new Date(t * 1000);
  return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate());
}

/** "14:05" today, "Yesterday 14:05", else "2026-11-30 14:05" (or the date alone, short). */
function when(t, short) {
  const now = Date.now() / 1000;
  if (dayOf(t) === dayOf(now)) return clock(t);
  if (dayOf(t) === dayOf(now - 86400)) return short ? 'Yesterday' : 'Yesterday ' + clock(t);
  return short ? dayOf(t) : dayOf(t) + ' ' + clock(t);
}

function timeElement(t, short, cls) {
  const el = document.createElement('time');
  el.className = cls;
  el.dateTime = new Date(t * 1000).toISOString();
  el.textContent = when(t, short);
  return el;
}

// ---------------------------------------------------------------- login
async function login() {
  const gen = state.generation;
  const text = await (await fetch('/jslogin?appid=wxnet&fun=new&r=' + Date.now())).text();
  const m = /window\.QRLogin\.uuid = "([^"]*)"/.exec(text);
  if (!m || !m[1]) { $('login-status').textContent = 'Server refused a login code; reload to retry'; return; }
  const uuid = m[1];
  $('qr').src = '/qrcode/' + encodeURIComponent(uuid);
  $('uuid').textContent = uuid;
  document.body.dataset.uuid = uuid;
  for (;;) {
    if (gen !== state.generation) return;
    let body;
    try {
      body = await (await fetch(CGI + '/login?loginicon=true&tip=0&uuid=' + encodeURIComponent(uuid) + '&r=' + Date.now())).text();
    } catch (e) { await sleep(2000); continue; }
    if (gen !== state.generation) return;  // logged out meanwhile: a newer code is shown
    const code = Number((/window\.code=(\d+)/.exec(body) || [])[1]);
    if (code === 201) $('login-status').textContent = 'Scanned: confirm on your phone';
    else if (code === 200) {
      const uri = /window\.redirect_uri="(\S+?)"/.exec(body)[1];
      return finishLogin(uri);
    } else if (code === 400) { $('login-status').textContent = 'The code expired: here is a new one'; return login(); }
  }
}

async function finishLogin(uri) {
  const u = new URL(uri, location.href);
  const res = await fetch(u.pathname + u.search + '&fun=new&version=v2');
  const xml = await res.text();
  if (xmlTag(xml, 'ret') !== '0') { $('login-status').textContent = 'Login failed: ' + xmlTag(xml, 'message'); return; }
  state.skey = xmlTag(xml, 'skey'); state.sid = xmlTag(xml, 'wxsid'); state.uin = Number(xmlTag(xml, 'wxuin'));
  state.passTicket = xmlTag(xml, 'pass_ticket');
  const init = await postJSON('/webwxinit?r=' + -Date.now() + '&pass_ticket=' + state.passTicket, {});
  state.me = init.User; state.syncKey = init.SyncKey;
  state.contacts.set(state.me.UserName, state.me);
  for (const c of init.ContactList) addContact(c);
  await postJSON('/webwxstatusnotify?pass_ticket=' + state.passTicket, {
    Code: 3, FromUserName: state.me.UserName, ToUserName: state.me.UserName, ClientMsgId: Date.now(),
  });
  let seq = 0;
  do {
    const r = await (await fetch(CGI + '/webwxgetcontact?seq=' + seq + '&skey=' + state.skey + '&r=' + Date.now())).json();
    for (const c of r.MemberList || []) addContact(c);
    seq = r.Seq || 0;
  } while (seq);
  $('login').hidden = true; $('app').hidden = false;
  $('me-name').textContent = state.me.NickName;
  $('me-avatar').replaceWith(Object.assign(avatar(state.me.UserName, 'avatar'), { id: 'me-avatar' }));
  await loadRecent();
  renderChats(); renderMessages();
  document.body.dataset.state = 'ready';
  state.running = true;
  syncLoop(state.generation);
}

/** The session is over (logout, or it ended elsewhere): forget it and show a new code. */
function loggedOut(why) {
  const gen = state.generation + 1;
  Object.assign(state, freshState(), { generation: gen });
  document.body.dataset.state = 'loggedout';
  delete document.body.dataset.uuid;
  $('app').hidden = true; $('login').hidden = false;
  $('chats').replaceChildren(); $('messages').replaceChildren();
  $('conv-title').textContent = 'Select a chat';
  $('qr').removeAttribute('src');
  $('login-status').textContent = why + ': scan the new code to log in again';
  login();  // a fresh code: the old one is used up
}

// ---------------------------------------------------------------- contacts and chats
function addContact(c) {
  state.contacts.set(c.UserName, c);
  if (c.UserName !== (state.me && state.me.UserName) && !state.chats.includes(c.UserName)) state.chats.push(c.UserName);
}

function nameOf(userName) {
  const c = state.contacts.get(userName);
  return c ? (c.RemarkName || c.NickName || userName) : userName;
}

function memberName(room, userName) {
  const r = state.contacts.get(room);
  const m = r && (r.MemberList || []).find((x) => x.UserName === userName);
  return m ? (m.DisplayName || m.NickName) : nameOf(userName);
}

function avatarUrl(userName) {
  const c = state.contacts.get(userName);
  const path = userName.startsWith('@@') ? '/webwxgetheadimg' : '/webwxgeticon';
  const url = c && c.HeadImgUrl ? c.HeadImgUrl : CGI + path + '?seq=0&username=' + encodeURIComponent(userName);
  return url.replace(/skey=[^&]*/, 'skey=' + encodeURIComponent(state.skey));
}

/** The server's avatar (a coloured square) with the name's first letter on it. */
function avatar(userName, cls, label) {
  const box = document.createElement('span');
  box.className = cls;
  const img = document.createElement('img');
  img.alt = ''; img.src = avatarUrl(userName);
  const letter = document.createElement('span'); letter.className = 'initial';
  letter.textContent = Array.from((label || nameOf(userName)).replace(/^@.*/, '?'))[0] || '';
  box.append(img, letter);
  return box;
}

function renderChats() {
  const ul = $('chats');
  ul.replaceChildren();
  for (const name of state.chats) {
    const li = document.createElement('li');
    li.dataset.user = name;
    if (name === state.current) li.classList.add('active');
    const list = state.messages.get(name) || [];
    const last = list[list.length - 1];
    const unread = state.unread.get(name) || 0;
    const face = document.createElement('span'); face.className = 'face';
    face.append(avatar(name, 'avatar'));
    if (unread) {
      li.classList.add('unread');
      const b = document.createElement('span'); b.className = 'badge';
      b.textContent = unread > 99 ? '99+' : String(unread);
      face.append(b);
    }
    const info = document.createElement('span'); info.className = 'info';
    const top = document.createElement('span'); top.className = 'top';
    const n = document.createElement('span'); n.className = 'name'; n.textContent = nameOf(name);
    top.append(n);
    if (last && last.t) top.append(timeElement(last.t, true, 'when'));
    const preview = document.createElement('span'); preview.className = 'last';
    preview.textContent = last ? last.preview : '';
    info.append(top, preview);
    li.append(face, info);
    li.addEventListener('click', () => openChat(name));
    ul.append(li);
  }
}

function openChat(name) {
  state.current = name;
  const hadUnread = state.unread.get(name) || 0;
  state.unread.delete(name);
  $('conv-title').textContent = nameOf(name);
  renderChats(); renderMessages(true);
  if (hadUnread || !(state.history.get(name) || {}).opened) markRead(name);
  if (!(state.history.get(name) || {}).opened) loadHistory(name, true);
  if (name.startsWith('@@') && !(state.contacts.get(name) || {}).MemberCount) {
    postJSON('/webwxbatchgetcontact?type=ex&r=' + Date.now(), { Count: 1, List: [{ UserName: name, EncryChatRoomId: '' }] })
      .then((r) => { for (const c of r.ContactList) state.contacts.set(c.UserName, c); renderMessages(); })
      .catch(() => {});
  }
}

function markRead(name) {
  postJSON('/webwxstatusnotify?pass_ticket=' + state.passTicket, {
    Code: 1, FromUserName: state.me.UserName, ToUserName: name, ClientMsgId: Date.now(),
  }).catch(() => {});
}

function touch(peer) {
  const i = state.chats.indexOf(peer);
  if (i >= 0) state.chats.splice(i, 1);
  state.chats.unshift(peer);
}

// ---------------------------------------------------------------- history
/** The first page over every conversation: previews, order and unread counts. */
async function loadRecent() {
  let r;
  try { r = await postJSON('/webwxhistory', { UserName: '', Count: RECENT_PAGE, Before: 0 }); } catch (e) { return; }
  for (const msg of r.MsgList.slice().reverse()) addView(viewOf(msg), { history: true, quiet: true });
  const latest = (name) => { const l = state.messages.get(name) || []; return l[l.length - 1]; };
  state.chats.sort((a, b) => {
    const x = latest(a), y = latest(b);
    return x && y ? order(y, x) : x ? -1 : y ? 1 : 0;
  });
  for (const u of r.UnreadList || []) state.unread.set(u.UserName, u.Count);
}

/** One more page of a conversation, older than what it shows (the first when opened). */
async function loadHistory(name, first) {
  const h = state.history.get(name) || { next: 0, opened: false, loading: false };
  state.history.set(name, h);
  if (h.loading || (!first && !h.next)) return;
  h.loading = true;
  const gen = state.generation;
  try {
    const r = await postJSON('/webwxhistory', { UserName: name, Count: HISTORY_PAGE, Before: first ? 0 : h.next });
    if (gen !== state.generation) return;
    for (const msg of r.MsgList.slice().reverse()) addView(viewOf(msg), { history: true, quiet: true });
    if (first || h.next) h.next = r.Next;
    h.opened = true;
  } catch (e) {
    return;
  } finally { h.loading = false; }
  if (name === state.current) {
    const ol = $('messages');
    const fromBottom = ol.scrollHeight - ol.scrollTop;
    renderMessages(first);
    if (!first) ol.scrollTop = ol.scrollHeight - fromBottom;  // keep what was in view
  }
  renderChats();
}

// ---------------------------------------------------------------- messages
function fileUrl(msg) {
  return CGI + '/webwxgetmedia?sender=' + encodeURIComponent(msg.FromUserName) + '&mediaid=' + encodeURIComponent(msg.MediaId || '') +
    '&encryfilename=' + encodeURIComponent(msg.FileName || '') + '&filename=' + encodeURIComponent(msg.FileName || '') +
    '&fromuser=' + state.uin + '&pass_ticket=' + encodeURIComponent(state.passTicket) +
    '&webwx_data_ticket=' + encodeURIComponent(cookie('webwx_data_ticket'));
}

function sizeText(n) {
  n = Number(n) || 0;
  if (n < 1024) return n + ' B';
  if (n < 1024 * 1024) return (n / 1024).toFixed(1) + ' KB';
  return (n / 1024 / 1024).toFixed(1) + ' MB';
}

function viewOf(msg) {
  const mine = msg.FromUserName === state.me.UserName;
  const peer = mine ? msg.ToUserName : msg.FromUserName;
  let content = msg.Content, who = mine ? '' : nameOf(peer), sender = mine ? state.me.UserName : peer;
  if (peer.startsWith('@@') && !mine) {
    const m = /^(@[0-9a-z]*):<br\/>/.exec(content);
    if (m) { who = memberName(peer, m[1]); sender = m[1]; content = content.slice(m[0].length); }
  }
  const v = { id: msg.MsgId, peer, mine, who, sender, type: msg.MsgType, t: msg.CreateTime || 0, text: '', state: '' };
  const skey = '&skey=' + encodeURIComponent(state.skey);
  if (msg.MsgType === 3 || msg.MsgType === 47) {
    v.img = CGI + '/webwxgetmsgimg?MsgID=' + msg.MsgId + '&type=slave' + skey;
    v.full = CGI + '/webwxgetmsgimg?MsgID=' + msg.MsgId + skey;
    v.preview = '[image]';
  } else if (msg.MsgType === 43) {
    v.video = CGI + '/webwxgetvideo?msgid=' + msg.MsgId + skey;
    v.poster = CGI + '/webwxgetmsgimg?MsgID=' + msg.MsgId + '&type=slave' + skey;
    v.seconds = msg.PlayLength || 0;
    v.preview = '[video]';
  } else if (msg.MsgType === 49 && (msg.AppMsgType === 6 || /<type>6<\/type>/.test(unescapeContent(content)))) {
    const xml = unescapeContent(content);
    v.file = { name: msg.FileName || unescapeContent(xmlTag(xml, 'title')), size: msg.FileSize || xmlTag(xml, 'totallen'), url: fileUrl(msg) };
    v.preview = '[file] ' + v.file.name;
  } else if (msg.MsgType === 34) {
    v.text = '[voice message, ' + Math.round((msg.VoiceLength || 0) / 1000) + ' s]'; v.preview = '[voice]';
  } else if (msg.MsgType === 10002) {
    const xml = unescapeContent(content);
    v.type = 10000; v.recall = true;
    v.text = unescapeContent(xmlTag(xml, 'replacemsg')) || 'A message was recalled';
    v.targets = [xmlTag(xml, 'msgid'), msg.MsgId].filter((x) => x);
    v.id = 'recall-' + msg.MsgId;
    v.preview = v.text;
  } else if (msg.MsgType === 10000) {
    v.text = unescapeContent(content); v.preview = v.text;
  } else {
    v.text = unescapeContent(content); v.preview = v.text;
  }
  return v;
}

function recallInto(v, text) {
  Object.assign(v, { type: 10000, recalled: true, text, preview: text, img: '', video: '', file: null });
}

function order(a, b) {
  if (a.t !== b.t) return (a.t || Infinity) - (b.t || Infinity);
  if (!a.id || !b.id) return a.id ? -1 : b.id ? 1 : 0;  // unsent ones last
  return a.id.length - b.id.length || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

/** Add a message to its conversation. A recall notice turns the recalled message (by its
 * original MsgId, now or when an older page brings it) into the "recalled" line. */
function addView(v, opts) {
  opts = opts || {};
  if (!state.messages.has(v.peer)) state.messages.set(v.peer, []);
  const list = state.messages.get(v.peer);
  if (v.id && list.some((m) => m.id === v.id)) return;
  if (v.recall) {
    for (const id of v.targets) state.recalled.set(id, v.text);
    const target = list.find((m) => m.id && v.targets.includes(m.id));
    if (target) { recallInto(target, v.text); v = null; }
  } else if (v.id && state.recalled.has(v.id)) {
    recallInto(v, state.recalled.get(v.id));
    const i = list.findIndex((m) => m.recall && m.targets.includes(v.id));
    if (i >= 0) list.splice(i, 1);  // the notice stood in for it until now
  }
  if (v) {
    list.push(v);
    list.sort(order);
    if (!opts.history && !v.mine && v.peer !== state.current && !v.recall) {
      state.unread.set(v.peer, (state.unread.get(v.peer) || 0) + 1);
    }
    if (!opts.history) touch(v.peer);
  }
  if (opts.quiet) return;
  renderChats();
  if (v === null || v.peer === state.current) renderMessages(!opts.history);
  if (!opts.history && v && v.peer === state.current && !v.mine) markRead(v.peer);
}

function bubbleOf(v) {
  const b = document.createElement('div'); b.className = 'bubble';
  if (v.img) {
    const a = document.createElement('a'); a.href = v.full || v.img; a.target = '_blank';
    const img = document.createElement('img'); img.src = v.img; img.alt = 'image';
    a.append(img); b.append(a);
  } else if (v.video) {
    b.classList.add('video');
    const video = document.createElement('video');
    video.controls = true; video.preload = 'none'; video.src = v.video; video.poster = v.poster;
    const a = document.createElement('a'); a.className = 'download'; a.href = v.video; a.download = 'video-' + v.id + '.mp4';
    a.textContent = 'Download video' + (v.seconds ? ' (' + v.seconds + ' s)' : '');
    b.append(video, a);
  } else if (v.file) {
    b.classList.add('file');
    const icon = document.createElement('span'); icon.className = 'file-icon';
    const ext = (v.file.name.split('.').pop() || '').slice(0, 4).toUpperCase();
    icon.textContent = v.file.name.includes('.') ? ext : 'FILE';
    const meta = document.createElement('span'); meta.className = 'file-meta';
    const n = document.createElement('span'); n.className = 'file-name'; n.textContent = v.file.name;
    const s = document.createElement('span'); s.className = 'file-size'; s.textContent = sizeText(v.file.size);
    const a = document.createElement('a'); a.className = 'download'; a.href = v.file.url; a.download = v.file.name; a.textContent = 'Download';
    meta.append(n, s, a);
    b.append(icon, meta);
  } else b.textContent = v.text;
  return b;
}

function messageItem(v, room) {
  const li = document.createElement('li');
  const system = v.type === 10000;
  li.className = 'msg' + (v.mine ? ' mine' : '') + (system ? ' system' : '') + (v.recalled || v.recall ? ' recalled' : '') + (v.state === 'failed' ? ' failed' : '');
  if (v.id && !v.recall) li.dataset.msgid = v.id;
  if (v.recall) li.dataset.recalls = v.targets.join(' ');
  if (v.t) li.title = dayOf(v.t) + ' ' + clock(v.t);
  const body = document.createElement('div'); body.className = 'body';
  if (v.who && room && !system) {
    const w = document.createElement('span'); w.className = 'who'; w.textContent = v.who; body.append(w);
  }
  body.append(bubbleOf(v));
  if (v.state) {
    const s = document.createElement('span'); s.className = 'state';
    s.textContent = v.state === 'failed' ? 'Not sent: click to resend' : 'Sending…';
    if (v.state === 'failed') s.addEventListener('click', () => v.retry());
    body.append(s);
  }
  if (!system) li.append(avatar(v.sender, 'avatar', v.who));
  li.append(body);
  return li;
}

function renderMessages(toBottom) {
  const ol = $('messages');
  const atBottom = ol.scrollHeight - ol.scrollTop - ol.clientHeight < 40;
  ol.replaceChildren();
  const h = state.history.get(state.current);
  if (h && h.next) {
    const li = document.createElement('li'); li.className = 'more';
    const btn = document.createElement('button'); btn.type = 'button'; btn.id = 'more';
    btn.textContent = 'Earlier messages';
    btn.addEventListener('click', () => loadHistory(state.current, false));
    li.append(btn); ol.append(li);
  }
  ol.dataset.history = h && h.opened ? (h.next ? 'more' : 'all') : 'none';
  ol.dataset.next = h ? String(h.next) : '';
  const room = state.current.startsWith('@@');
  let lastT = 0;
  for (const v of state.messages.get(state.current) || []) {
    if (v.t && v.t - lastT >= TIME_GAP) {
      const li = document.createElement('li'); li.className = 'time-line';
      li.append(timeElement(v.t, false, 'msg-time'));
      ol.append(li);
    }
    if (v.t) lastT = v.t;
    ol.append(messageItem(v, room));
  }
  if (toBottom || atBottom) ol.scrollTop = ol.scrollHeight;
}

async function syncLoop(gen) {
  let errors = 0;
  while (state.running && gen === state.generation) {
    try {
      const q = state.syncKey.List.map((kv) => kv.Key + '_' + kv.Val).join('|');
      const text = await (await fetch(CGI + '/synccheck?r=' + Date.now() + '&uin=' + state.uin + '&sid=' + encodeURIComponent(state.sid) + '&synckey=' + encodeURIComponent(q))).text();
      if (gen !== state.generation) return;
      const m = /retcode:"(\d+)",selector:"(\d+)"/.exec(text);
      if (!m) throw new Error('bad synccheck');
      if (m[1] !== '0') { loggedOut('Logged out'); return; }
      if (m[2] !== '0') await doSync();
      errors = 0;
    } catch (e) {
      if (!state.running || gen !== state.generation) return;
      errors += 1;
      await sleep(Math.min(30000, 1000 * 2 ** errors));
    }
  }
}

async function doSync() {
  const r = await postJSON('/webwxsync?sid=' + encodeURIComponent(state.sid) + '&skey=' + state.skey, { SyncKey: state.syncKey, rr: -Date.now() });
  state.syncKey = r.SyncCheckKey || r.SyncKey;
  for (const c of r.ModContactList || []) { addContact(c); }
  for (const msg of r.AddMsgList || []) addView(viewOf(msg));
  renderChats();
}

// ---------------------------------------------------------------- sending
function newLocalId() { return String(Date.now()) + String(Math.floor(Math.random() * 10000)).padStart(4, '0'); }

function localView(to, type, extra) {
  return Object.assign({ id: '', peer: to, mine: true, who: '', sender: state.me.UserName, type, t: Math.floor(Date.now() / 1000), text: '', state: 'sending' }, extra);
}

function sendText(to, text) {
  const localId = newLocalId();
  const v = localView(to, 1, { text, preview: text });
  v.retry = async () => {
    v.state = 'sending'; renderMessages();
    try {
      const r = await postJSON('/webwxsendmsg?pass_ticket=' + state.passTicket, {
        Msg: { Type: 1, Content: text, FromUserName: state.me.UserName, ToUserName: to, LocalID: localId, ClientMsgId: localId },
        Scene: 0,
      });
      v.id = r.MsgID; v.state = '';
    } catch (e) { v.state = 'failed'; }
    renderChats(); renderMessages();
  };
  addView(v);
  return v.retry();
}

async function uploadMedia(file, to) {
  const clientMediaId = Date.now();
  const chunks = Math.max(1, Math.ceil(file.size / CHUNK));
  let reply = null;
  for (let i = 0; i < chunks; i++) {
    const form = new FormData();
    form.append('id', 'WU_FILE_0'); form.append('name', file.name); form.append('type', file.type);
    form.append('lastModifiedDate', new Date().toUTCString()); form.append('size', String(file.size));
    if (chunks > 1) { form.append('chunks', String(chunks)); form.append('chunk', String(i)); }
    form.append('mediatype', 'pic');
    form.append('uploadmediarequest', JSON.stringify({
      UploadType: 2, BaseRequest: baseRequest(), ClientMediaId: clientMediaId, TotalLen: file.size,
      StartPos: 0, DataLen: file.size, MediaType: 4, FromUserName: state.me.UserName, ToUserName: to,
    }));
    form.append('pass_ticket', state.passTicket);
    form.append('filename', file.slice(i * CHUNK, (i + 1) * CHUNK), file.name);
    const res = await fetch(CGI + '/webwxuploadmedia?f=json', { method: 'POST', body: form });
    reply = await res.json();
    if (!reply.BaseResponse || reply.BaseResponse.Ret !== 0) throw new Error('upload failed');
  }
  return reply.MediaId;
}

function sendImage(to, file) {
  const localId = newLocalId();
  const v = localView(to, 3, { img: URL.createObjectURL(file), preview: '[image]' });
  let mediaId = '';
  v.retry = async () => {
    v.state = 'sending'; renderMessages();
    try {
      if (!mediaId) mediaId = await uploadMedia(file, to);
      const r = await postJSON('/webwxsendmsgimg?fun=async&f=json&pass_ticket=' + state.passTicket, {
        Msg: { Type: 3, MediaId: mediaId, FromUserName: state.me.UserName, ToUserName: to, LocalID: localId, ClientMsgId: localId },
        Scene: 0,
      });
      v.id = r.MsgID; v.state = '';
    } catch (e) { v.state = 'failed'; }
    renderChats(); renderMessages();
  };
  addView(v);
  return v.retry();
}

$('composer').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = $('text').value;
  if (!text.trim() || !state.current) return;
  $('text').value = '';
  sendText(state.current, text);
});
$('text').addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); $('composer').requestSubmit(); }
});
$('image').addEventListener('change', () => {
  const f = $('image').files[0];
  if (f && state.current) sendImage(state.current, f);
  $('image').value = '';
});
$('messages').addEventListener('scroll', () => {
  if ($('messages').scrollTop < 30 && state.current) loadHistory(state.current, false);
});
$('logout').addEventListener('click', async () => {
  const gen = state.generation;
  state.running = false;
  try {
    await fetch(CGI + '/webwxlogout?redirect=1&type=0&skey=' + encodeURIComponent(state.skey), { method: 'POST' });
  } catch (e) { /* over on this side anyway */ }
  if (gen === state.generation) loggedOut('Logged out');
});

login();
