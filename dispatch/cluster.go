package dispatch

import (
	"jim/codec"
	"jim/storage"
)

// Cluster connects a Dispatcher to the other nodes of a jim cluster: it
// knows which node holds which user (presence) and carries encoded messages
// between nodes (routing). The package cluster implements it on NATS; a nil
// Cluster in Options means a single node.
//
// No method may block: they are called from dispatch workers and from the
// ordered queues that finish chats.
type Cluster interface {
	// Start begins handing messages from other nodes to h and publishing
	// this node's presence, which it reads from h. New calls it once,
	// when the Dispatcher is ready to receive.
	Start(h ClusterHandler)
	// Publish sends m to the other nodes that need it: a ClusterUser
	// message to the nodes holding m.Target, a ClusterKick to every node,
	// a ClusterGroup message once to every other node.
	Publish(m ClusterMsg)
	// UserChanged tells that m's user logged in on this node or closed its
	// last connection here; the Cluster reads the current state back with
	// ClusterHandler.LocalUser when it publishes.
	UserChanged(uid string)
	// Remote returns the profile of uid as another node published it, and
	// whether any other live node holds a connection of uid.
	Remote(uid string) (*codec.User, bool)
}

// ClusterHandler is the side of a Dispatcher a Cluster talks to.
type ClusterHandler interface {
	// ClusterDeliver handles a message from another node. It is called on
	// the Cluster's receiving goroutine, in arrival order, and never blocks.
	ClusterDeliver(m ClusterMsg)
	// ClusterUndelivered takes back a ClusterUser chat that reached no
	// node: it goes to the target's offline queue. It never blocks.
	ClusterUndelivered(m ClusterMsg)
	// LocalUser returns uid's profile if uid has a connection on this node,
	// else nil.
	LocalUser(uid string) *codec.User
	// LocalUsers lists the users with a connection on this node, for a
	// Cluster that must publish its presence again (after a reconnect).
	LocalUsers() []string
}

// ClusterKind says what a ClusterMsg is for.
type ClusterKind uint8

// Kinds of messages between nodes.
const (
	// ClusterUser is sent to Target's connections (a private chat).
	ClusterUser ClusterKind = iota + 1
	// ClusterGroup is sent to the online members of group Target, except
	// user Except (a group chat or a join or leave notice).
	ClusterGroup
	// ClusterKick closes every connection of user Target, each first
	// getting the close ack.
	ClusterKick
)

// String names the kind, for metrics and logs.
func (k ClusterKind) String() string {
	switch k {
	case ClusterUser:
		return "user"
	case ClusterGroup:
		return "group"
	case ClusterKick:
		return "kick"
	}
	return "unknown"
}

// ClusterMsg is one message between nodes: the command and its JSON, encoded
// once by the node it comes from, and whom it is for.
type ClusterMsg struct {
	Kind   ClusterKind
	Cmd    codec.Cmd
	Target string // user id (ClusterUser, ClusterKick) or group id (ClusterGroup)
	Except string // ClusterGroup: a member not to send to
	JSON   []byte
}

// onlineAnywhere reports whether uid has a connection on this node or, in a
// cluster, on another live node.
func (d *Dispatcher) onlineAnywhere(uid string) bool {
	if d.hub.online(uid) {
		return true
	}
	return d.remoteOnline(uid)
}

func (d *Dispatcher) remoteOnline(uid string) bool {
	if d.cluster == nil {
		return false
	}
	_, ok := d.cluster.Remote(uid)
	return ok
}

// userChanged passes a local presence change on to the cluster.
func (d *Dispatcher) userChanged(uid string) {
	if d.cluster != nil {
		d.cluster.UserChanged(uid)
	}
}

// publish hands m to the cluster, if any.
func (d *Dispatcher) publish(m ClusterMsg) {
	if d.cluster != nil {
		d.cluster.Publish(m)
	}
}

// LocalUser returns uid's profile if uid is connected to this node.
func (d *Dispatcher) LocalUser(uid string) *codec.User {
	prof, conns := d.hub.profile(uid)
	if prof == nil || len(conns) == 0 {
		return nil
	}
	u := &codec.User{UserID: uid, Nick: prof.Nick, Avatar: prof.Avatar, Sign: prof.Sign,
		Status: "online", Terminal: conns[0].Protocol()}
	return u
}

// LocalUsers lists the users connected to this node.
func (d *Dispatcher) LocalUsers() []string { return d.hub.users() }

// ClusterDeliver delivers a message another node published. It runs on the
// cluster's receiving goroutine and hands the work to the ordered queues,
// keyed by target, so messages for one receiver keep the order in which
// their node published them.
func (d *Dispatcher) ClusterDeliver(m ClusterMsg) {
	switch m.Kind {
	case ClusterUser:
		d.fin.submit(m.Target, func() { d.clusterUser(m) })
	case ClusterGroup:
		d.fin.submit(m.Target, func() { d.clusterGroup(m) })
	case ClusterKick:
		d.fin.submit(m.Target, func() { d.kick(m.Target, nil) })
	}
}

// ClusterUndelivered queues a chat that no node took for its recipient's
// offline queue.
func (d *Dispatcher) ClusterUndelivered(m ClusterMsg) {
	if m.Kind != ClusterUser || m.Cmd != codec.CmdChatReq {
		return
	}
	d.fin.submit(m.Target, func() { d.queueMissed(m.Target, m.JSON) })
}

func (d *Dispatcher) clusterUser(m ClusterMsg) {
	conns := d.hub.conns(m.Target)
	o := codec.NewOutbound(m.Cmd, m.JSON)
	n := d.sendAll(conns, o)
	if m.Cmd != codec.CmdChatReq {
		return
	}
	d.m.deliveries.Add(float64(n))
	if n == 0 {
		// The sender's node saw the user here, but the user has gone: keep
		// the message for them as a local miss would be kept.
		d.queueMissed(m.Target, m.JSON)
	}
}

func (d *Dispatcher) clusterGroup(m ClusterMsg) {
	o := codec.NewOutbound(m.Cmd, m.JSON)
	f := d.hub.groupFanout(m.Target).without(m.Except)
	if m.Cmd != codec.CmdChatReq {
		d.sendAll(f.conns, o)
		return
	}
	n, missed := d.deliver(f, o)
	d.m.deliveries.Add(float64(n))
	for _, u := range missed {
		d.queueMissed(u, m.JSON)
	}
}

// chatForward is the shape of a forwarded chat (codec.AppendChatForward).
type chatForward struct {
	Data codec.ChatBody `json:"data"`
}

// queueMissed puts a forwarded chat on uid's offline queue. The message was
// stored by the node it came from (the store is shared in a cluster), so it
// is only queued, not stored again.
func (d *Dispatcher) queueMissed(uid string, fwd []byte) {
	var f chatForward
	if err := codec.Unmarshal(fwd, &f); err != nil || f.Data.ID == "" {
		d.log.Warn("dispatch: undecodable chat from another node", "user", uid, "err", err)
		return
	}
	cb := &f.Data
	msg := &storage.Message{ID: cb.ID, Seq: cb.Seq, ChatType: int(cb.ChatType), From: cb.From, To: cb.To,
		GroupID: cb.GroupID, MsgType: int(cb.MsgType), Content: cb.Content, CreateTime: int64(cb.CreateTime),
		Extras: cb.Extras}
	if cb.ChatType == codec.ChatTypeGroup {
		msg.Conv = storage.GroupConv(cb.GroupID)
	} else {
		msg.Conv = storage.PrivateConv(cb.From, cb.To)
	}
	if err := d.store.QueueOffline(d.ctx, uid, []*storage.Message{msg}); err != nil {
		d.log.Warn("dispatch: queueing missed delivery", "user", uid, "err", err)
	}
}
