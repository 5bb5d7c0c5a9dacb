// Drive an unmodified wechat4u (npm) against a wxnet server: node wechat4u_harness.js BASE
// Events go to stdout as JSON lines; commands come from stdin as JSON lines (like
// itchat_harness.py). The only change to the library is the documented host override
// (research/web-protocol.md 11.3): getCONF is wrapped so every URL points at BASE.
'use strict'
const fs = require('fs')
const readline = require('readline')

const BASE = process.argv[2]
const conf = require('wechat4u/lib/util/conf')
const orig = conf.getCONF
conf.getCONF = () => {
  const c = orig('wx.qq.com')
  for (const k in c) {
    if (typeof c[k] === 'string' && c[k].startsWith('https://')) c[k] = c[k].replace(/^https:\/\/[^/?]+/, BASE)
  }
  return c
}
const Wechat = require('wechat4u')

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const bot = new Wechat()
bot.setPollingTargetGetter(() => '')
bot.on('uuid', (uuid) => emit({ event: 'qr', uuid }))
bot.on('login', () => emit({ event: 'login', me: bot.user.UserName }))
bot.on('logout', () => emit({ event: 'exit' }))
bot.on('error', (err) => emit({ event: 'liberror', error: String(err && err.message || err) }))
bot.on('message', async (msg) => {
  const ev = {
    event: 'message', type: msg.MsgType, from: msg.FromUserName, to: msg.ToUserName,
    group: msg.FromUserName.startsWith('@@'), text: msg.Content, id: msg.MsgId,
  }
  if (msg.MsgType === bot.CONF.MSGTYPE_IMAGE) {
    try {
      const res = await bot.getMsgImg(msg.MsgId)
      ev.size = res.data.length
      ev.head = Buffer.from(res.data).subarray(0, 4).toString('hex')
    } catch (e) { ev.error = String(e) }
  } else if (msg.MsgType === bot.CONF.MSGTYPE_VIDEO || (msg.MsgType === bot.CONF.MSGTYPE_APP && msg.AppMsgType === 6)) {
    try {
      const res = msg.MsgType === bot.CONF.MSGTYPE_VIDEO
        ? await bot.getVideo(msg.MsgId)
        : await bot.getDoc(msg.FromUserName, msg.MediaId, msg.FileName)
      ev.size = res.data.length
      ev.head = Buffer.from(res.data).subarray(0, 4).toString('hex')
      ev.name = msg.FileName
    } catch (e) { ev.error = String(e) }
  }
  emit(ev)
})

function userName (nick) {
  for (const k in bot.contacts) if (bot.contacts[k].NickName === nick) return k
  throw new Error('no contact ' + nick)
}

const rl = readline.createInterface({ input: process.stdin })
rl.on('line', async (line) => {
  const cmd = JSON.parse(line)
  try {
    if (cmd.op === 'contacts') {
      const all = Object.values(bot.contacts)
      emit({
        event: 'contacts',
        friends: all.filter((c) => !c.UserName.startsWith('@@') && c.UserName !== bot.user.UserName).map((c) => c.NickName),
        rooms: all.filter((c) => c.UserName.startsWith('@@')).map((c) => ({ nick: c.NickName, members: (c.MemberList || []).length })),
      })
    } else if (cmd.op === 'send') {
      const r = await bot.sendMsg(cmd.text, userName(cmd.to))
      emit({ event: 'sent', ret: r.BaseResponse.Ret, id: r.MsgID })
    } else if (cmd.op === 'image') {
      const r = await bot.sendMsg({ file: fs.readFileSync(cmd.path), filename: 'image.png' }, userName(cmd.to))
      emit({ event: 'sent', ret: r.BaseResponse.Ret, id: r.MsgID })
    } else if (cmd.op === 'revoke') {
      const r = await bot.revokeMsg(cmd.id, userName(cmd.to))
      emit({ event: 'revoked', ret: r.BaseResponse.Ret })
    } else if (cmd.op === 'restart') {
      // as its own recovery does: drop the pending retry of the old loop, then webwxinit
      // again on the same session (restart() emits 'login' again)
      clearTimeout(bot.retryPollingId)
      await bot.restart()
      emit({ event: 'restarted' })
    } else if (cmd.op === 'file' || cmd.op === 'video') { // sendMsg picks the send by extension
      const r = await bot.sendMsg({ file: fs.readFileSync(cmd.path), filename: require('path').basename(cmd.path) }, userName(cmd.to))
      emit({ event: 'sent', ret: r.BaseResponse.Ret, id: r.MsgID })
    } else if (cmd.op === 'logout') {
      await bot.logout() // stop() sends the same request without waiting for it
      emit({ event: 'loggedout' })
      bot.stop()
      setTimeout(() => process.exit(0), 100)
    }
  } catch (e) {
    emit({ event: 'error', op: cmd.op, error: String(e && e.stack || e) })
  }
})
bot.start()
