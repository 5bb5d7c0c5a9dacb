// wxnet web client: the Web WeChat API (docs/web.md), plain JS, no build step.
'use strict';

const CGI = '/cgi-bin/mmwebwx-bin';
const CHUNK = 512 * 1024;
const $ = (id) => document.getElementById(id);

const state = {
  uin: 0, sid: '', skey: '', passTicket: '', me: null, syncKey: null,
  contacts: new Map(),   // UserName -> contact object
  chats: [],             // UserNames, most recent first
  messages: new Map(),   // UserName -> [message view]
  current: '',
  running: false,
};

function baseRequest() {
  return { Uin: state.uin, Sid: state.sid, Skey: state.skey, DeviceID: 'e' + String(Math.random()).slice(2, 17) };
}

async function postJSON(path, body) {
  const res = await fetch(CGI + path, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(Object.assign({ BaseRequest: baseRequest() }, body)),
  });
  if (!res.ok) throw new Error('HTTP ' + res.status);
  const obj = await res.json();
  const ret = obj.BaseResponse ? obj.BaseResponse.Ret : -1;
  if (ret === 1100 || ret === 1101 || ret === 1102) { loggedOut(); throw new Error('logged out'); }
  if (ret !== 0) throw new Error((obj.BaseResponse && obj.BaseResponse.ErrMsg) || 'Ret ' + ret);
  return obj;
}

function unescapeContent(s) {
  const t = document.createElement('textarea');
  t.innerHTML = s.replace(/<br\/>/g, '\n');
  return t.value;
}

// ---------------------------------------------------------------- login
async function login() {
  const text = await (await fetch('/jslogin?appid=wxnet&fun=new')).text();
  const m = /window\.QRLogin\.uuid = "([^"]*)"/.exec(text);
  if (!m) { $('login-status').textContent = 'Server refused a login code; reload to retry'; return; }
  const uuid = m[1];
  $('qr').src = '/qrcode/' + encodeURIComponent(uuid);
  $('uuid').textContent = uuid;
  document.body.dataset.uuid = uuid;
  for (;;) {
    let body;
    try {
      body = await (await fetch(CGI + '/login?loginicon=true&tip=0&uuid=' + encodeURIComponent(uuid) + '&r=' + Date.now())).text();
    } catch (e) { await sleep(2000); continue; }
    const code = Number((/window\.code=(\d+)/.exec(body) || [])[1]);
    if (code === 201) $('login-status').textContent = 'Scanned: confirm on your phone';
    else if (code === 200) {
      const uri = /window\.redirect_uri="(\S+?)"/.exec(body)[1];
      return finishLogin(uri);
    } else if (code === 400) { $('login-status').textContent = 'The code expired: getting a new one'; return login(); }
  }
}

async function finishLogin(uri) {
  const u = new URL(uri, location.href);
  const res = await fetch(u.pathname + u.search + '&fun=new&version=v2');
  const xml = await res.text();
  const tag = (n) => (new RegExp('<' + n + '>([^<]*)</' + n + '>').exec(xml) || [])[1] || '';
  if (tag('ret') !== '0') { $('login-status').textContent = 'Login failed: ' + tag('message'); return; }
  state.skey = tag('skey'); state.sid = tag('wxsid'); state.uin = Number(tag('wxuin'));
  state.passTicket = tag('pass_ticket');
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
  document.body.dataset.state = 'ready';
  renderChats();
  state.running = true;
  syncLoop();
}

function loggedOut() {
  state.running = false;
  document.body.dataset.state = 'loggedout';
  $('app').hidden = true; $('login').hidden = false;
  $('login-status').textContent = 'Logged out';
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

function renderChats() {
  const ul = $('chats');
  ul.replaceChildren();
  for (const name of state.chats) {
    const li = document.createElement('li');
    li.dataset.user = name;
    if (name === state.current) li.classList.add('active');
    const list = state.messages.get(name) || [];
    if (list.some((m) => m.unread)) li.classList.add('unread');
    const n = document.createElement('span'); n.className = 'name'; n.textContent = nameOf(name);
    const last = document.createElement('span'); last.className = 'last';
    last.textContent = list.length ? list[list.length - 1].preview : '';
    li.append(n, last);
    li.addEventListener('click', () => openChat(name));
    ul.append(li);
  }
}

function openChat(name) {
  state.current = name;
  for (const m of state.messages.get(name) || []) m.unread = false;
  $('conv-title').textContent = nameOf(name);
  renderChats(); renderMessages();
  if (name.startsWith('@@') && !(state.contacts.get(name) || {}).MemberCount) {
    postJSON('/webwxbatchgetcontact?type=ex&r=' + Date.now(), { Count: 1, List: [{ UserName: name, EncryChatRoomId: '' }] })
      .then((r) => { for (const c of r.ContactList) state.contacts.set(c.UserName, c); renderMessages(); })
      .catch(() => {});
  }
}

function touch(peer) {
  const i = state.chats.indexOf(peer);
  if (i >= 0) state.chats.splice(i, 1);
  state.chats.unshift(peer);
}

// ---------------------------------------------------------------- messages
function viewOf(msg) {
  const mine = msg.FromUserName === state.me.UserName;
  const peer = mine ? msg.ToUserName : msg.FromUserName;
  let content = msg.Content, who = mine ? '' : nameOf(peer);
  if (peer.startsWith('@@') && !mine) {
    const m = /^(@[0-9a-z]*):<br\/>/.exec(content);
    if (m) { who = memberName(peer, m[1]); content = content.slice(m[0].length); }
  }
  const v = { id: msg.MsgId, peer, mine, who, type: msg.MsgType, text: '', img: '', unread: !mine, state: '' };
  if (msg.MsgType === 3 || msg.MsgType === 47) {
    v.img = CGI + '/webwxgetmsgimg?MsgID=' + msg.MsgId + '&type=slave&skey=' + encodeURIComponent(state.skey);
    v.full = CGI + '/webwxgetmsgimg?MsgID=' + msg.MsgId + '&skey=' + encodeURIComponent(state.skey);
    v.preview = '[image]';
  } else if (msg.MsgType === 34) {
    v.text = '[voice message, ' + Math.round((msg.VoiceLength || 0) / 1000) + ' s]'; v.preview = '[voice]';
  } else if (msg.MsgType === 10002) {
    v.text = 'A message was recalled'; v.type = 10000; v.preview = v.text;
  } else {
    v.text = unescapeContent(content); v.preview = v.text;
  }
  return v;
}

function addView(v) {
  if (!state.messages.has(v.peer)) state.messages.set(v.peer, []);
  const list = state.messages.get(v.peer);
  if (v.id && list.some((m) => m.id === v.id)) return;
  if (v.peer === state.current) v.unread = false;
  list.push(v);
  touch(v.peer);
  renderChats();
  if (v.peer === state.current) renderMessages();
}

function renderMessages() {
  const ol = $('messages');
  ol.replaceChildren();
  for (const v of state.messages.get(state.current) || []) {
    const li = document.createElement('li');
    li.className = 'msg' + (v.mine ? ' mine' : '') + (v.type === 10000 ? ' system' : '') + (v.state === 'failed' ? ' failed' : '');
    if (v.id) li.dataset.msgid = v.id;
    if (v.who && state.current.startsWith('@@')) {
      const w = document.createElement('span'); w.className = 'who'; w.textContent = v.who; li.append(w);
    }
    const b = document.createElement('div'); b.className = 'bubble';
    if (v.img) {
      const a = document.createElement('a'); a.href = v.full || v.img; a.target = '_blank';
      const img = document.createElement('img'); img.src = v.img; img.alt = 'image';
      a.append(img); b.append(a);
    } else b.textContent = v.text;
    li.append(b);
    if (v.state) {
      const s = document.createElement('span'); s.className = 'state';
      s.textContent = v.state === 'failed' ? 'Not sent: click to resend' : 'Sending…';
      if (v.state === 'failed') s.addEventListener('click', () => v.retry());
      li.append(s);
    }
    ol.append(li);
  }
  ol.scrollTop = ol.scrollHeight;
}

async function syncLoop() {
  let errors = 0;
  while (state.running) {
    try {
      const q = state.syncKey.List.map((kv) => kv.Key + '_' + kv.Val).join('|');
      const text = await (await fetch(CGI + '/synccheck?r=' + Date.now() + '&uin=' + state.uin + '&sid=' + encodeURIComponent(state.sid) + '&synckey=' + encodeURIComponent(q))).text();
      const m = /retcode:"(\d+)",selector:"(\d+)"/.exec(text);
      if (!m) throw new Error('bad synccheck');
      if (m[1] !== '0') { loggedOut(); return; }
      if (m[2] !== '0') await doSync();
      errors = 0;
    } catch (e) {
      if (!state.running) return;
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

function sendText(to, text) {
  const localId = newLocalId();
  const v = { id: '', peer: to, mine: true, who: '', type: 1, text, preview: text, state: 'sending' };
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
  const v = { id: '', peer: to, mine: true, who: '', type: 3, img: URL.createObjectURL(file), preview: '[image]', state: 'sending' };
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

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

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
$('logout').addEventListener('click', async () => {
  state.running = false;
  await fetch(CGI + '/webwxlogout?redirect=1&type=0&skey=' + encodeURIComponent(state.skey), { method: 'POST' });
  loggedOut();
});

login();
