package dispatch

import (
	"slices"
	"strings"
	"time"

	"jim/codec"
	"jim/storage"
)

// handler is one command's implementation. public handlers run before login.
type handler struct {
	public bool
	fn     func(d *Dispatcher, c Conn, p *Packet)
}

var handlers = [...]*handler{
	codec.CmdAuthReq:       {public: true, fn: (*Dispatcher).handleAuth},
	codec.CmdLoginReq:      {public: true, fn: (*Dispatcher).handleLogin},
	codec.CmdCloseReq:      {public: true, fn: (*Dispatcher).handleClose},
	codec.CmdJoinGroupReq:  {fn: (*Dispatcher).handleJoin},
	codec.CmdExitGroupReq:  {fn: (*Dispatcher).handleLeave},
	codec.CmdChatReq:       {fn: (*Dispatcher).handleChat},
	codec.CmdGetUserReq:    {fn: (*Dispatcher).handleGetUser},
	codec.CmdGetMessageReq: {fn: (*Dispatcher).handleGetMessage},
}

// handlerFor returns the worker-side handler of cmd, nil if jim has none (the
// request is then answered as an unknown command, like J-IM's unhandled
// codes 0, 2, 4, ... and the unimplemented cancel 15).
func handlerFor(cmd codec.Cmd) *handler {
	if cmd < 0 || int(cmd) >= len(handlers) {
		return nil
	}
	return handlers[cmd]
}

// maxGroupUsersInReply caps the member list of each group in a get-user
// reply, so asking about a huge group cannot build a huge frame.
const maxGroupUsersInReply = 1000

// authKeySuffix is what J-IM appends to the echoed token (ImConst.AUTH_KEY).
const authKeySuffix = "authKey"

// handleAuth answers cmd 3 as J-IM does: there is no real check, a non-empty
// token is echoed back with "authKey" appended. Real authentication is the
// login's Authenticator.
func (d *Dispatcher) handleAuth(c Conn, p *Packet) {
	var req codec.AuthReq
	if len(p.Body) == 0 || codec.Unmarshal(p.Body, &req) != nil || req.Token == "" {
		d.reply(c, p, codec.CmdAuthResp, codec.StatusResp(codec.CmdAuthResp, codec.StatusAuthFailed))
		return
	}
	d.reply(c, p, codec.CmdAuthResp, d.marshal(&codec.Resp{
		Code: codec.StatusAuthOK, Command: codec.CmdAuthResp, Msg: codec.StatusAuthOK.Msg(),
		Data: map[string]string{"token": req.Token + authKeySuffix},
	}))
}

func (d *Dispatcher) handleLogin(c Conn, p *Packet) {
	var req codec.LoginReq
	if err := codec.Unmarshal(p.Body, &req); err != nil {
		d.loginFailed(c, p)
		return
	}
	d.login(c, p, req)
}

// MaxIDLen is the longest user id, group id or client message id jim
// accepts, in bytes. J-IM sets no bound; jim needs one because ids are
// parts of storage keys and NATS subjects, and a single oversized one must
// be refused on its own rather than reach the store. 256 bytes holds any
// e-mail address, UUID or OpenID subject, and keeps a private
// conversation's key (two ids) within the JetStream store's 1,000 bytes.
const MaxIDLen = 256

// ValidID reports whether id can name a user or a group: not empty, at
// most MaxIDLen bytes and without a NUL byte, which separates the two
// users of a private conversation in its storage key (with NULs allowed,
// "a"+"b\x00c" and "a\x00b"+"c" would be one conversation).
func ValidID(id string) bool {
	return id != "" && len(id) <= MaxIDLen && strings.IndexByte(id, 0) < 0
}

func (d *Dispatcher) loginFailed(c Conn, p *Packet) {
	d.m.loginFailed.Inc()
	d.reply(c, p, codec.CmdLoginResp, codec.StatusResp(codec.CmdLoginResp, codec.StatusLoginFailed))
	c.Close("login failed")
}

// login binds c to the authenticated user, rejoins the user's groups (cmd 9
// to their online members, before the cmd-6 reply as in J-IM) and replies
// with the user.
func (d *Dispatcher) login(c Conn, p *Packet, req codec.LoginReq) {
	u, err := d.auth.Authenticate(d.ctx, req)
	if err != nil || u == nil || !ValidID(u.UserID) {
		d.log.Debug("dispatch: login refused", "remote", c.RemoteAddr(), "err", err)
		d.loginFailed(c, p)
		return
	}
	// The id may alias the whole login body (sonic does not copy strings);
	// a copy keeps only the id alive for as long as the session lasts.
	uid := strings.Clone(u.UserID)
	u.UserID = uid
	if cur := c.UserID(); cur != "" && cur != uid {
		// Switching users on a live connection would leave the old user's
		// state half torn down; the client must reconnect instead.
		d.m.loginRefused.Inc()
		d.reply(c, p, codec.CmdLoginResp, codec.StatusResp(codec.CmdLoginResp, codec.StatusLoginFailed))
		return
	}
	prof := &codec.User{UserID: uid, Nick: u.Nick, Avatar: u.Avatar, Sign: u.Sign, Status: "online", Terminal: c.Protocol()}
	c.SetUserID(uid)
	d.hub.bind(c, prof)
	d.userChanged(uid)

	groups, err := d.store.UserGroups(d.ctx, uid)
	if err != nil {
		d.log.Warn("dispatch: loading user groups", "user", uid, "err", err)
	}
	for _, gid := range d.defGroups {
		if slices.Contains(groups, gid) {
			continue
		}
		if err := d.store.JoinGroup(d.ctx, gid, uid); err != nil {
			d.log.Warn("dispatch: joining default group", "user", uid, "group", gid, "err", err)
			continue
		}
		groups = append(groups, gid)
	}
	slices.Sort(groups)
	out := &codec.User{UserID: uid, Nick: prof.Nick, Avatar: prof.Avatar, Sign: prof.Sign,
		Status: "online", Terminal: prof.Terminal, Groups: make([]*codec.Group, 0, min(len(groups), 1024))}
	// What the login sends the user itself, its own cmd-9 notices and the
	// group list of its reply, is bounded by the reply budget, half each:
	// a user in 100,000 groups was sent 15 MB of notices and a 4.6 MB
	// reply, over the outbound limit, and was disconnected as a slow
	// consumer at every login, for good. Past the budget the user still
	// rejoins every group and the other members still hear of it; cmd 17
	// and the groups' messages tell the rest.
	half := d.maxReply / 2
	noticed, listed := 0, 0
	for _, gid := range groups {
		d.hub.joinOnline(uid, gid)
		n := d.joinNotice(gid, prof, noticed < half)
		noticed += n
		if listed < half {
			name := d.groupNames[gid]
			out.Groups = append(out.Groups, &codec.Group{GroupID: gid, Name: name, Users: []*codec.User{}})
			listed += jsonStrLen(gid) + jsonStrLen(name) + 48
		}
	}
	d.m.loginOK.Inc()
	d.reply(c, p, codec.CmdLoginResp, d.marshal(&codec.LoginResp{
		Code: codec.StatusLoginOK, Command: codec.CmdLoginResp, Msg: codec.StatusLoginOK.Msg(), User: out,
	}))
}

// joinNotice tells gid's online members that u joined (cmd 9, J-IM demo
// listener shape: user and group at the top level), the joiner too when
// toSelf. It returns the bytes sent to each of the joiner's connections.
func (d *Dispatcher) joinNotice(gid string, u *codec.User, toSelf bool) int {
	json := d.marshal(&codec.JoinNotify{
		Code: codec.StatusJoinGroupOK, Command: codec.CmdJoinGroupNotify, Group: gid,
		Msg: codec.StatusJoinGroupOK.Msg(), User: &codec.User{UserID: u.UserID, Nick: u.Nick, Status: "online"},
	})
	o := codec.NewOutbound(codec.CmdJoinGroupNotify, json)
	self := 0
	if toSelf {
		self = len(json) + 16 // with its frame header
	}
	if d.noticeCap > 0 && d.hub.groupOnlineCount(gid) > d.noticeCap {
		// In a big group a notice per join to every member is quadratic
		// traffic (10,000 logins would send 50 million notices); only the
		// joiner hears of it, which is what J-IM clients wait for.
		if toSelf {
			d.sendAll(d.hub.conns(u.UserID), o)
		}
		return self
	}
	fan, except := d.hub.groupFanout(gid), ""
	if !toSelf {
		fan, except = fan.without(u.UserID), u.UserID
	}
	d.sendAll(fan.conns, o)
	d.publish(ClusterMsg{Kind: ClusterGroup, Cmd: codec.CmdJoinGroupNotify, Target: gid, Except: except, JSON: json})
	return self
}

// exitNotice tells gid's online members other than uid that uid left (cmd
// 10, data-wrapped as in J-IM). u may be nil when the profile is gone.
func (d *Dispatcher) exitNotice(gid, uid string, u *codec.User) {
	user := &codec.User{UserID: uid, Status: "offline"}
	if u != nil {
		user.Nick = u.Nick
	}
	if d.noticeCap > 0 && d.hub.groupOnlineCount(gid) > d.noticeCap {
		return // see joinNotice
	}
	json := d.marshal(&codec.Resp{Command: codec.CmdExitGroupNotify, Data: &codec.ExitNotifyData{Group: gid, User: user}})
	d.sendAll(d.hub.groupFanout(gid).without(uid).conns, codec.NewOutbound(codec.CmdExitGroupNotify, json))
	d.publish(ClusterMsg{Kind: ClusterGroup, Cmd: codec.CmdExitGroupNotify, Target: gid, Except: uid, JSON: json})
}

// handleJoin is cmd 7. As in J-IM a blank groupId closes the connection and
// success has no direct reply, only the cmd-9 notice (which the joiner gets
// too); cmd 8 is sent only for a refusal.
func (d *Dispatcher) handleJoin(c Conn, p *Packet) {
	var req codec.GroupReq
	_ = codec.Unmarshal(p.Body, &req) // bad JSON is a blank groupId
	gid := req.ID()
	if strings.TrimSpace(gid) == "" {
		c.Close("join group without groupId")
		return
	}
	if !ValidID(gid) {
		d.joinRefused(c, p, gid, codec.JoinResultUnknown)
		return
	}
	uid := c.UserID()
	if d.maxMembers > 0 && !d.hub.inGroup(uid, gid) {
		members, err := d.store.GroupMembers(d.ctx, gid)
		if err != nil {
			d.joinRefused(c, p, gid, codec.JoinResultUnknown)
			return
		}
		if len(members) >= d.maxMembers && !slices.Contains(members, uid) {
			d.joinRefused(c, p, gid, codec.JoinResultFull)
			return
		}
	}
	if d.maxGroups > 0 && !d.hub.inGroup(uid, gid) {
		groups, err := d.store.UserGroups(d.ctx, uid)
		if err != nil {
			d.joinRefused(c, p, gid, codec.JoinResultUnknown)
			return
		}
		if len(groups) >= d.maxGroups && !slices.Contains(groups, gid) {
			d.refuseJoin(c, p, gid, codec.JoinResultFull, groupsPerUserLimit)
			return
		}
	}
	if err := d.store.JoinGroup(d.ctx, gid, uid); err != nil {
		d.log.Warn("dispatch: join group", "user", uid, "group", gid, "err", err)
		d.joinRefused(c, p, gid, codec.JoinResultUnknown)
		return
	}
	d.hub.joinOnline(uid, gid)
	prof, _ := d.hub.profile(uid)
	if prof == nil {
		prof = &codec.User{UserID: uid}
	}
	d.joinNotice(gid, prof, true)
}

func (d *Dispatcher) joinRefused(c Conn, p *Packet, gid string, result int) {
	d.refuseJoin(c, p, gid, result, nil)
}

// joinLimit is the data of a join refused by a per-user limit rather than
// by the group itself; J-IM clients read only result and ignore it.
type joinLimit struct {
	Limit string `json:"limit"`
}

// groupsPerUserLimit marks a refusal by Options.MaxGroupsPerUser.
var groupsPerUserLimit = &joinLimit{Limit: "groups_per_user"}

func (d *Dispatcher) refuseJoin(c Conn, p *Packet, gid string, result int, data *joinLimit) {
	r := &codec.JoinGroupResp{
		Code: codec.StatusJoinGroupFailed, Command: codec.CmdJoinGroupResp, Group: gid,
		Msg: codec.StatusJoinGroupFailed.Msg(), Result: result,
	}
	if data != nil {
		r.Data = data
	}
	d.reply(c, p, codec.CmdJoinGroupResp, d.marshal(r))
}

// handleLeave is jim's cmd 21: the only way membership ends (a disconnect
// keeps it). It is idempotent.
func (d *Dispatcher) handleLeave(c Conn, p *Packet) {
	var req codec.GroupReq
	_ = codec.Unmarshal(p.Body, &req)
	gid := req.ID()
	if strings.TrimSpace(gid) == "" {
		d.reply(c, p, codec.CmdExitGroupReq, codec.StatusResp(codec.CmdExitGroupReq, codec.StatusInvalidVerify))
		return
	}
	uid := c.UserID()
	if err := d.store.LeaveGroup(d.ctx, gid, uid); err != nil {
		d.log.Warn("dispatch: leave group", "user", uid, "group", gid, "err", err)
		d.reply(c, p, codec.CmdExitGroupReq, codec.StatusResp(codec.CmdExitGroupReq, codec.StatusStoreFailed))
		return
	}
	was := d.hub.inGroup(uid, gid)
	d.hub.leaveOnline(uid, gid)
	if was {
		prof, _ := d.hub.profile(uid)
		d.exitNotice(gid, uid, prof)
	}
	d.reply(c, p, codec.CmdExitGroupReq, codec.StatusResp(codec.CmdExitGroupReq, codec.StatusLeaveGroupOK))
}

func (d *Dispatcher) handleChat(c Conn, p *Packet) {
	var cb codec.ChatBody
	if err := codec.Unmarshal(p.Body, &cb); err != nil {
		d.reply(c, p, codec.CmdChatResp, codec.StatusResp(codec.CmdChatResp, codec.StatusSendFailed))
		return
	}
	d.chat(c.UserID(), &cb, true, func(resp roomy) {
		d.send(c, codec.NewOutboundRoom(codec.CmdChatResp, p.Seq, p.HasSeq, resp))
		if !p.arrived.IsZero() {
			d.m.chatAck.Observe(time.Since(p.arrived).Seconds())
		}
	})
}

// roomy is a reply's JSON after codec.TCPRoom spare bytes, so that its TCP
// frame is built in place (codec.NewOutboundRoom). The chat path uses it:
// the ack is its most frequent reply.
type roomy []byte

// json returns the JSON without the room.
func (r roomy) json() []byte { return r[codec.TCPRoom:] }

// withRoom copies json after a room: for the rare replies encoded elsewhere
// (the fixed status replies).
func withRoom(json []byte) roomy {
	return append(make([]byte, codec.TCPRoom, codec.TCPRoom+len(json)), json...)
}

// chat stores and delivers one chat message from user from, and hands the
// sender's cmd-12 reply to done. The message is durable before anyone sees
// it; one Outbound carries it to every receiving connection. checkMember is
// false only for the HTTP API's pseudo-sender.
//
// The worker that calls chat does not wait for the disk: the append is
// queued and the rest runs when the store reports it durable, on the
// conversation's ordered queue. That lets one group commit hold as many
// messages as are in flight, and keeps each conversation in seq order.
func (d *Dispatcher) chat(from string, cb *codec.ChatBody, checkMember bool, done func(roomy)) {
	cb.Normalize()
	clientID := cb.ID
	if len(clientID) > MaxIDLen || !ValidID(from) {
		done(withRoom(codec.StatusResp(codec.CmdChatResp, codec.StatusSendFailed)))
		return
	}
	// The sender is whoever is logged in, whatever the body claims.
	cb.From, cb.ID, cb.Seq, cb.Cmd = from, "", 0, codec.FlexInt(codec.CmdChatReq)
	if cb.CreateTime <= 0 {
		cb.CreateTime = codec.FlexInt(d.now().UnixMilli())
	}
	msg := &storage.Message{ChatType: int(cb.ChatType), From: from, MsgType: int(cb.MsgType),
		Content: cb.Content, CreateTime: int64(cb.CreateTime), Extras: cb.Extras, ClientID: clientID}
	var offline []string
	switch cb.ChatType {
	case codec.ChatTypePrivate:
		if !ValidID(cb.To) {
			done(withRoom(codec.StatusResp(codec.CmdChatResp, codec.StatusSendFailed)))
			return
		}
		cb.GroupID = ""
		msg.To, msg.Conv = cb.To, storage.PrivateConv(from, cb.To)
		if !d.onlineAnywhere(cb.To) {
			offline = []string{cb.To}
		}
	case codec.ChatTypeGroup:
		gid := cb.GroupID
		if !ValidID(gid) {
			done(withRoom(codec.StatusResp(codec.CmdChatResp, codec.StatusSendFailed)))
			return
		}
		cb.To = ""
		if checkMember && !d.hub.inGroup(from, gid) {
			done(withRoom(codec.StatusResp(codec.CmdChatResp, codec.StatusForbidden)))
			return
		}
		members, err := d.store.GroupMembers(d.ctx, gid)
		if err != nil {
			d.log.Warn("dispatch: group members", "group", gid, "err", err)
			done(withRoom(codec.StatusResp(codec.CmdChatResp, codec.StatusStoreFailed)))
			return
		}
		msg.GroupID, msg.Conv = gid, storage.GroupConv(gid)
		for _, m := range d.hub.offlineOf(gid, members) {
			if !d.remoteOnline(m) {
				offline = append(offline, m)
			}
		}
	default:
		done(withRoom(codec.StatusResp(codec.CmdChatResp, codec.StatusSendFailed)))
		return
	}

	d.inflight.Add(1)
	appended := time.Now()
	d.store.AppendAsync(d.ctx, msg, offline, func(ack storage.Ack, err error) {
		d.m.storeAppend.Observe(time.Since(appended).Seconds())
		// On the store's goroutine: hand off at once, keyed by conversation.
		d.fin.submit(msg.Conv, func() {
			defer d.inflight.Done()
			done(d.finishChat(msg, cb, offline, clientID, ack, err))
		})
	})
}

// finishChat delivers a message the store has made durable and returns the
// sender's reply. Recipients are looked up again now: whoever came online
// since the append gets it live (and possibly from the offline queue too,
// which the client de-duplicates by id), whoever left is queued offline.
func (d *Dispatcher) finishChat(msg *storage.Message, cb *codec.ChatBody, offline []string, clientID string, ack storage.Ack, err error) roomy {
	if err != nil {
		d.log.Warn("dispatch: storing chat", "from", msg.From, "conv", msg.Conv, "err", err)
		return withRoom(codec.StatusResp(codec.CmdChatResp, codec.StatusStoreFailed))
	}
	ackData := &codec.ChatAck{ClientID: clientID, ID: ack.ID, Seq: ack.Seq}
	if ack.Duplicate {
		// Already stored and delivered once: the client lost our ack. Whether
		// the receiver was online then is not recorded, so the retry is told
		// "ok"; the message is either delivered or queued offline.
		return d.chatResp(codec.StatusOK, ackData)
	}
	cb.ID, cb.Seq = ack.ID, ack.Seq
	// Encoded once, with room for the TCP header in front (NewOutboundRoom).
	buf := make([]byte, codec.TCPRoom, codec.TCPRoom+codec.ChatForwardLen(cb))
	buf, err = codec.AppendChatForward(buf, cb)
	if err != nil {
		d.log.Error("dispatch: encoding chat", "err", err)
		return withRoom(codec.StatusResp(codec.CmdChatResp, codec.StatusSendFailed))
	}
	out := codec.NewOutboundRoom(codec.CmdChatReq, 0, false, buf)
	fwd := out.JSON
	var f *fanout
	if cb.ChatType == codec.ChatTypePrivate {
		// Looked up now, not at the append: whoever came online since gets
		// it live.
		f = &fanout{}
		if cs := d.hub.conns(cb.To); len(cs) > 0 {
			f.users, f.conns, f.first = []string{cb.To}, cs, []int{0}
		}
	} else {
		f = d.hub.groupFanout(cb.GroupID)
	}
	start := time.Now()
	n, missed := d.deliver(f, out)
	d.m.fanout.Observe(time.Since(start).Seconds())
	remote := false
	if d.cluster != nil {
		// Other nodes get the encoded message once each: the recipient's
		// node for a private chat, every node for a group, which fans it
		// out to its own online members.
		if cb.ChatType == codec.ChatTypePrivate {
			if remote = d.remoteOnline(cb.To); remote {
				d.cluster.Publish(ClusterMsg{Kind: ClusterUser, Cmd: codec.CmdChatReq, Target: cb.To, JSON: fwd})
			}
		} else {
			d.cluster.Publish(ClusterMsg{Kind: ClusterGroup, Cmd: codec.CmdChatReq, Target: cb.GroupID, JSON: fwd})
		}
	}
	d.m.deliveries.Add(float64(n))
	if cb.ChatType == codec.ChatTypePrivate && n == 0 && !remote && len(missed) == 0 && len(offline) == 0 {
		// Online (here or on another node) at the check, gone everywhere
		// by now: queue it, so the message is not lost to them.
		missed = append(missed, cb.To)
	}
	for _, u := range missed {
		if slices.Contains(offline, u) {
			continue // queued with the append already
		}
		// Online at the check, gone at the send: queue it as if the user
		// had been offline, so the message is not lost to them.
		if err := d.store.QueueOffline(d.ctx, u, []*storage.Message{msg}); err != nil {
			d.log.Warn("dispatch: queueing missed delivery", "user", u, "err", err)
		}
	}
	if cb.ChatType == codec.ChatTypePrivate && n == 0 && !remote {
		return d.chatResp(codec.StatusOffline, ackData)
	}
	return d.chatResp(codec.StatusOK, ackData)
}

// deliver sends o to every connection of f. It returns how many connections
// accepted it and the users none of whose connections did.
func (d *Dispatcher) deliver(f *fanout, o *codec.Outbound) (int, []string) {
	if d.mc != nil && len(f.conns) >= multicastMin {
		return d.deliverMany(f, o)
	}
	n := 0
	var missed []string
	conns, first := f.conns, f.first
	for i, u := range f.users {
		end := len(conns)
		if i+1 < len(first) {
			end = first[i+1]
		}
		got := 0
		for _, c := range conns[first[i]:end] {
			if c.Send(o) {
				got++
			}
		}
		if got == 0 {
			missed = append(missed, u)
		}
		n += got
	}
	d.m.out.Add(float64(n))
	return n, missed
}

// deliverMany is deliver through the Multicaster. Refusals are rare (a
// connection closed since the fan-out list was built), so the users missed
// are worked out only from the refused indexes.
func (d *Dispatcher) deliverMany(f *fanout, o *codec.Outbound) (int, []string) {
	failed := d.mc.SendMany(f.conns, o, nil)
	n := len(f.conns) - len(failed)
	d.m.out.Add(float64(n))
	var missed []string
	for k := 0; k < len(failed); {
		// The user owning conns[failed[k]], and its connections' range.
		i, _ := slices.BinarySearch(f.first, failed[k]+1)
		i--
		start, end := f.first[i], len(f.conns)
		if i+1 < len(f.first) {
			end = f.first[i+1]
		}
		refused := 0
		for ; k < len(failed) && failed[k] < end; k++ {
			refused++
		}
		if refused == end-start {
			missed = append(missed, f.users[i])
		}
	}
	return n, missed
}

func (d *Dispatcher) chatResp(s codec.Status, ack *codec.ChatAck) roomy {
	msg := s.Msg()
	// The field names and numbers take under 96 bytes.
	buf := make([]byte, codec.TCPRoom, codec.TCPRoom+96+len(msg)+len(ack.ClientID)+len(ack.ID))
	buf, err := codec.AppendResp(buf, &codec.Resp{Code: s, Command: codec.CmdChatResp, Msg: msg, Data: ack})
	if err != nil {
		d.log.Error("dispatch: encoding reply", "err", err)
		return withRoom(codec.StatusResp(codec.CmdUnknown, codec.StatusUnknownCmd))
	}
	return buf
}

// handleClose is cmd 14. Without a userId it closes this connection; with
// the caller's own userId it closes all of the caller's connections; another
// user's id is refused (J-IM let anyone kick anyone). Every closed
// connection first gets the 10021 ack.
func (d *Dispatcher) handleClose(c Conn, p *Packet) {
	var req codec.CloseReq
	if body := strings.TrimSpace(string(p.Body)); body != "" {
		if err := codec.Unmarshal(p.Body, &req); err != nil {
			d.reply(c, p, codec.CmdCloseReq, codec.StatusResp(codec.CmdCloseReq, codec.StatusInvalidVerify))
			return
		}
	}
	ack := codec.StatusResp(codec.CmdCloseReq, codec.StatusCloseOK)
	target, self := req.User(), c.UserID()
	if target == "" {
		d.reply(c, p, codec.CmdCloseReq, ack)
		c.Close("close requested")
		return
	}
	if target != self {
		d.reply(c, p, codec.CmdCloseReq, codec.StatusResp(codec.CmdCloseReq, codec.StatusForbidden))
		return
	}
	d.reply(c, p, codec.CmdCloseReq, ack)
	c.Close("close requested")
	d.kick(self, c)
	// All nodes, as for /api/user/close: presence may lag a fresh login.
	d.publish(ClusterMsg{Kind: ClusterKick, Cmd: codec.CmdCloseReq, Target: self})
}

// kick sends the close ack to every connection of uid except skip and closes
// them. It returns how many connections were closed.
func (d *Dispatcher) kick(uid string, skip Conn) int {
	conns := d.hub.conns(uid)
	o := codec.NewOutbound(codec.CmdCloseReq, codec.StatusResp(codec.CmdCloseReq, codec.StatusCloseOK))
	n := 0
	for _, x := range conns {
		if x == skip {
			continue
		}
		d.send(x, o)
		x.Close("closed by user")
		n++
	}
	return n
}

// handleGetUser is cmd 17. Any logged-in user may look up any user: the
// reply carries only presence, terminal, display profile and group member
// lists, which members of a shared group see anyway and which J-IM never
// restricted.
func (d *Dispatcher) handleGetUser(c Conn, p *Packet) {
	fail := func() {
		d.reply(c, p, codec.CmdGetUserResp, codec.StatusResp(codec.CmdGetUserResp, codec.StatusGetUserFailed))
	}
	var req codec.UserReq
	if codec.Unmarshal(p.Body, &req) != nil || req.Type == nil || req.UserID == "" {
		fail()
		return
	}
	var code codec.Status
	typ := int(*req.Type)
	switch typ {
	case codec.UserTypeOnline:
		code = codec.StatusGetOnlineUsersOK
	case codec.UserTypeOffline:
		code = codec.StatusGetOfflineUsersOK
	case codec.UserTypeAll:
		code = codec.StatusGetUserOK
	default:
		fail()
		return
	}
	gids, err := d.store.UserGroups(d.ctx, req.UserID)
	if err != nil {
		fail()
		return
	}
	slices.Sort(gids)
	u := d.userView(req.UserID)
	u.Groups = make([]*codec.Group, 0, len(gids))
	// The member lists are cut to the reply budget as a whole, not only to
	// maxGroupUsersInReply per group: a user in thousands of large groups
	// would otherwise make a reply of hundreds of megabytes, built in
	// memory, for anyone who asks.
	used, listed := 0, 0
	for _, gid := range gids {
		if listed >= d.maxReply/2 {
			// The group list itself is cut too, at half the budget:
			// 100,000 groups alone made a reply of 5 MB.
			break
		}
		members, err := d.store.GroupMembers(d.ctx, gid)
		if err != nil {
			fail()
			return
		}
		slices.Sort(members)
		g := &codec.Group{GroupID: gid, Name: d.groupNames[gid], Users: []*codec.User{}}
		entry := jsonStrLen(gid) + jsonStrLen(g.Name) + 64
		used += entry
		listed += entry
		for _, m := range members {
			mu := d.userView(m)
			on := mu.Status == "online"
			if on {
				g.Online++
			}
			if len(g.Users) < maxGroupUsersInReply && used < d.maxReply &&
				(typ == codec.UserTypeAll || on == (typ == codec.UserTypeOnline)) {
				mu.Terminal = ""
				g.Users = append(g.Users, mu)
				used += jsonStrLen(mu.UserID) + jsonStrLen(mu.Nick) + jsonStrLen(mu.Avatar) + jsonStrLen(mu.Sign) + 48
			}
		}
		u.Groups = append(u.Groups, g)
	}
	d.reply(c, p, codec.CmdGetUserResp, d.marshal(&codec.Resp{Code: code, Command: codec.CmdGetUserResp, Msg: code.Msg(), Data: u}))
}

// userView is uid's public user object with its current presence.
func (d *Dispatcher) userView(uid string) *codec.User {
	prof, conns := d.hub.profile(uid)
	if prof == nil || len(conns) == 0 {
		if d.cluster != nil {
			if ru, ok := d.cluster.Remote(uid); ok {
				u := &codec.User{UserID: uid, Status: "online"}
				if ru != nil {
					u.Nick, u.Avatar, u.Sign, u.Terminal = ru.Nick, ru.Avatar, ru.Sign, ru.Terminal
				}
				return u
			}
		}
		return &codec.User{UserID: uid, Status: "offline"}
	}
	return &codec.User{UserID: uid, Nick: prof.Nick, Avatar: prof.Avatar, Sign: prof.Sign,
		Status: "online", Terminal: conns[0].Protocol()}
}

// handleGetMessage is cmd 19: offline messages (type 0, removed once handed
// to the connection) or history (type 1). Only the caller's own messages
// can be read, and group history only by members.
func (d *Dispatcher) handleGetMessage(c Conn, p *Packet) {
	fail := func() {
		d.reply(c, p, codec.CmdGetMessageResp, codec.StatusResp(codec.CmdGetMessageResp, codec.StatusGetMessageFailed))
	}
	var req codec.MessageReq
	uid := c.UserID()
	if codec.Unmarshal(p.Body, &req) != nil || req.Type == nil || req.UserID != uid {
		fail()
		return
	}
	if req.GroupID != "" && !ValidID(req.GroupID) || req.FromUserID != "" && !ValidID(req.FromUserID) {
		fail()
		return
	}
	data := &codec.MessageData{Friends: map[string][]*codec.ChatBody{}, Groups: map[string][]*codec.ChatBody{}, UserID: uid}
	switch int(*req.Type) {
	case codec.MessageTypeOffline:
		f := storage.OfflineFilter{}
		if req.GroupID != "" {
			f.GroupID = req.GroupID // groupId wins, as in J-IM's resolution order
		} else {
			f.From = req.FromUserID
		}
		if f.From != "" || f.GroupID != "" {
			// A filtered fetch scans the whole queue for its matches.
			if !d.startScan() {
				d.reply(c, p, codec.CmdGetMessageResp, codec.StatusResp(codec.CmdGetMessageResp, codec.StatusBusy))
				return
			}
			defer d.endScan()
		}
		msgs, err := d.store.Offline(d.ctx, uid, f)
		if err != nil {
			fail()
			return
		}
		// What does not fit stays queued for the next fetch.
		msgs = fitOldest(msgs, d.maxReply)
		for _, m := range msgs {
			addMessage(data, uid, m)
		}
		json := d.marshal(&codec.Resp{Code: codec.StatusGetOfflineMsgOK, Command: codec.CmdGetMessageResp,
			Msg: codec.StatusGetOfflineMsgOK.Msg(), Data: data})
		// Dropped from the queue only once the connection took them: a
		// refused Send leaves them for the next fetch.
		if d.reply(c, p, codec.CmdGetMessageResp, json) && len(msgs) > 0 {
			if err := d.store.AckOffline(d.ctx, uid, msgs); err != nil {
				d.log.Warn("dispatch: ack offline", "user", uid, "err", err)
			}
		}
	case codec.MessageTypeHistory:
		var conv string
		switch {
		case req.GroupID != "":
			gids, err := d.store.UserGroups(d.ctx, uid)
			if err != nil || !slices.Contains(gids, req.GroupID) {
				fail()
				return
			}
			conv = storage.GroupConv(req.GroupID)
		case req.FromUserID != "":
			conv = storage.PrivateConv(uid, req.FromUserID)
		default:
			fail()
			return
		}
		q := storage.Query{Begin: int64(req.BeginTime), End: int64(req.EndTime), Offset: int(req.Offset), Count: int(req.Count)}
		if req.AfterSeq != nil && *req.AfterSeq > 0 {
			q.AfterSeq = uint64(*req.AfterSeq)
		}
		// Without any paging J-IM returned everything; jim returns the most
		// recent page, which is what such a request is after.
		q.Latest = req.Offset == 0 && req.Count == 0 && req.AfterSeq == nil
		if q.Begin != 0 || q.End != 0 {
			if !d.startScan() {
				d.reply(c, p, codec.CmdGetMessageResp, codec.StatusResp(codec.CmdGetMessageResp, codec.StatusBusy))
				return
			}
			defer d.endScan()
		}
		msgs, err := d.store.History(d.ctx, conv, q)
		if err != nil {
			fail()
			return
		}
		// A page cut short by its size: the latest page keeps its newest
		// messages, any other its oldest, so that afterSeq (or the next
		// offset) continues where it ends.
		if q.Latest {
			msgs = fitNewest(msgs, d.maxReply)
		} else {
			msgs = fitOldest(msgs, d.maxReply)
		}
		if len(msgs) > 0 {
			list := make([]*codec.ChatBody, len(msgs))
			for i, m := range msgs {
				list[i] = toChatBody(m)
			}
			if req.GroupID != "" {
				data.Groups[req.GroupID] = list
			} else {
				data.Friends[req.FromUserID] = list
			}
		}
		d.reply(c, p, codec.CmdGetMessageResp, d.marshal(&codec.Resp{Code: codec.StatusGetHistoryMsgOK,
			Command: codec.CmdGetMessageResp, Msg: codec.StatusGetHistoryMsgOK.Msg(), Data: data}))
	default:
		fail()
	}
}

// startScan takes a slot for a read that scans (see Dispatcher.scans), or
// reports that every slot is taken; endScan gives it back.
func (d *Dispatcher) startScan() bool {
	select {
	case d.scans <- struct{}{}:
		return true
	default:
		d.m.queueFull.Inc()
		return false
	}
}

func (d *Dispatcher) endScan() { <-d.scans }

// addMessage files m under its group, or under the peer of uid's private
// conversation.
func addMessage(data *codec.MessageData, uid string, m *storage.Message) {
	if m.ChatType == storage.ChatGroup {
		data.Groups[m.GroupID] = append(data.Groups[m.GroupID], toChatBody(m))
		return
	}
	peer := m.From
	if peer == uid {
		peer = m.To
	}
	data.Friends[peer] = append(data.Friends[peer], toChatBody(m))
}

func toChatBody(m *storage.Message) *codec.ChatBody {
	return &codec.ChatBody{
		ChatType: codec.FlexInt(m.ChatType), Cmd: codec.FlexInt(codec.CmdChatReq), Content: m.Content,
		CreateTime: codec.FlexInt(m.CreateTime), Extras: m.Extras, From: m.From, GroupID: m.GroupID,
		ID: m.ID, MsgType: codec.FlexInt(m.MsgType), Seq: m.Seq, To: m.To,
	}
}
