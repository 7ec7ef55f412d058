package cluster

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"jim/codec"
)

// Presence subjects (core NATS; nothing is stored on the server).
const (
	presenceSubject = "jim.presence."      // + node: its deltas, heartbeats, hello and goodbye
	syncSubject     = "jim.presence.sync." // + node: snapshot requests to that node
	syncInbox       = "_jim.psync."        // + asker + "." + request id: snapshot chunks
)

// Presence message types.
const (
	presDelta byte = 1 + iota // users that came or went, seq = this delta's number
	presBeat                  // heartbeat, seq = the last delta published
	presBye                   // the node is closing: forget its users now
	presSnap                  // one chunk of a snapshot, seq = the last delta it includes
	presHello                 // a node starting: live nodes answer with a heartbeat
)

// Record operations in deltas and snapshots.
const (
	opAdd byte = 1
	opDel byte = 2
)

const (
	presVersion = 1
	// maxPresenceMsg bounds a delta or snapshot chunk, well under NATS's
	// default 1 MiB payload limit.
	maxPresenceMsg = 256 << 10
	// presenceLinger is how long the announcer waits after the first
	// change before publishing, so that a burst of logins becomes one
	// message instead of one per login.
	presenceLinger = 20 * time.Millisecond
	// presenceInterval is the least time between two deltas of a node.
	// Every node receives every delta, and with dozens of nodes the cost
	// per message (not per user in it) dominated logins: one login per
	// message made each login cost a millisecond of CPU across 56 nodes.
	// A node whose users change rarely still announces within the linger.
	presenceInterval = 500 * time.Millisecond
	// syncRetry is how long a snapshot may take before it is asked again.
	syncRetry = 2 * time.Second
	// maxBuffered bounds the deltas kept while a snapshot is awaited;
	// beyond it they are dropped and a newer snapshot is asked for.
	maxBuffered = 4096
)

var errPresence = errors.New("cluster: malformed presence message")

// presHeader starts every presence message.
type presHeader struct {
	typ    byte
	node   string
	epoch  uint64 // random per process: a restarted node is a new epoch
	seq    uint64
	chunk  int // snapshots: this chunk's index
	chunks int // snapshots: how many chunks
}

func appendPresHeader(dst []byte, h *presHeader) []byte {
	dst = append(dst, presVersion, h.typ)
	dst = binary.AppendUvarint(dst, uint64(len(h.node)))
	dst = append(dst, h.node...)
	dst = binary.LittleEndian.AppendUint64(dst, h.epoch)
	dst = binary.AppendUvarint(dst, h.seq)
	if h.typ == presSnap {
		dst = binary.AppendUvarint(dst, uint64(h.chunk))
		dst = binary.AppendUvarint(dst, uint64(h.chunks))
	}
	return dst
}

// parsePres splits a presence message into its header and its records.
func parsePres(b []byte) (presHeader, []byte, error) {
	var h presHeader
	if len(b) < 2 || b[0] != presVersion || b[1] < presDelta || b[1] > presHello {
		return h, nil, errPresence
	}
	h.typ = b[1]
	b = b[2:]
	node, b, ok := readBytes(b)
	if !ok || len(node) == 0 || len(b) < 8 {
		return h, nil, errPresence
	}
	h.node = string(node)
	h.epoch = binary.LittleEndian.Uint64(b)
	b = b[8:]
	var k int
	if h.seq, k = binary.Uvarint(b); k <= 0 {
		return h, nil, errPresence
	}
	b = b[k:]
	if h.typ == presSnap {
		c, k := binary.Uvarint(b)
		if k <= 0 {
			return h, nil, errPresence
		}
		b = b[k:]
		n, k := binary.Uvarint(b)
		if k <= 0 || n == 0 || c >= n || n > 1<<20 {
			return h, nil, errPresence
		}
		b = b[k:]
		h.chunk, h.chunks = int(c), int(n)
	}
	return h, b, nil
}

func readBytes(b []byte) (field, rest []byte, ok bool) {
	l, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < l {
		return nil, nil, false
	}
	return b[k : k+int(l)], b[k+int(l):], true
}

// appendAdd encodes "uid is on the node" with its terminal and, when the
// user has a nick, avatar or sign, its profile as JSON.
func appendAdd(dst []byte, uid, term string, prof []byte) []byte {
	dst = append(dst, opAdd)
	dst = binary.AppendUvarint(dst, uint64(len(uid)))
	dst = append(dst, uid...)
	dst = binary.AppendUvarint(dst, uint64(len(term)))
	dst = append(dst, term...)
	dst = binary.AppendUvarint(dst, uint64(len(prof)))
	return append(dst, prof...)
}

func appendDel(dst []byte, uid string) []byte {
	dst = append(dst, opDel)
	dst = binary.AppendUvarint(dst, uint64(len(uid)))
	return append(dst, uid...)
}

// presRecord is one decoded record; uid and term alias the message.
type presRecord struct {
	op   byte
	uid  []byte
	term []byte
	prof []byte
}

// nextRecord decodes the first record of b.
func nextRecord(b []byte) (presRecord, []byte, error) {
	var r presRecord
	if len(b) == 0 || (b[0] != opAdd && b[0] != opDel) {
		return r, nil, errPresence
	}
	r.op = b[0]
	var ok bool
	if r.uid, b, ok = readBytes(b[1:]); !ok || len(r.uid) == 0 {
		return r, nil, errPresence
	}
	if r.op == opAdd {
		if r.term, b, ok = readBytes(b); !ok {
			return r, nil, errPresence
		}
		if r.prof, b, ok = readBytes(b); !ok {
			return r, nil, errPresence
		}
	}
	return r, b, nil
}

// profileOf is what a node announces of a local user: the terminal, and the
// profile as JSON only when there is more to it than the terminal.
func profileOf(u *codec.User) (string, []byte) {
	if u.Nick == "" && u.Avatar == "" && u.Sign == "" {
		return u.Terminal, nil
	}
	b, err := codec.Marshal(&codec.User{Nick: u.Nick, Avatar: u.Avatar, Sign: u.Sign, Terminal: u.Terminal})
	if err != nil {
		return u.Terminal, nil
	}
	return u.Terminal, b
}

// ---- the announcing side: this node's own users ----

type annEntry struct {
	term string
	prof []byte
}

// presenceLoop writes this node's heartbeat every PresenceTTL/4 and, after
// a change, the delta of its users. Publishes are core NATS: buffered by the
// connection, never a round trip per login; what a lost connection swallowed
// the other nodes notice by the sequence numbers and repair with a snapshot.
func (n *Node) presenceLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.ttl / 4)
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
			n.heartbeat()
			continue
		case <-n.wake:
		}
		// Let a burst of logins gather into one message, and keep to one
		// message per presenceInterval while changes keep coming.
		wait := max(presenceLinger, presenceInterval-time.Since(last))
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(wait):
		}
		last = time.Now()
		n.dirtyMu.Lock()
		batch := n.dirty
		n.dirty = make(map[string]struct{})
		n.dirtyMu.Unlock()
		n.announce(batch)
	}
}

// announce publishes the changes among batch's users, as deltas of at most
// maxPresenceMsg bytes, each with the next sequence number.
func (n *Node) announce(batch map[string]struct{}) {
	h := n.handler()
	if h == nil || len(batch) == 0 {
		return
	}
	n.annMu.Lock()
	defer n.annMu.Unlock()
	var msg []byte
	count := 0
	begin := func() {
		msg = appendPresHeader(msg[:0], &presHeader{typ: presDelta, node: n.id, epoch: n.epoch, seq: n.annSeq + 1})
		count = 0
	}
	send := func() {
		if count == 0 {
			return
		}
		n.annSeq++
		n.publishPresence(presenceSubject+n.id, msg)
		msg = nil
		begin()
	}
	begin()
	for uid := range batch {
		u := h.LocalUser(uid)
		old, had := n.announced[uid]
		if u != nil {
			term, prof := profileOf(u)
			if had && old.term == term && bytes.Equal(old.prof, prof) {
				continue
			}
			n.announced[uid] = annEntry{term: term, prof: prof}
			msg = appendAdd(msg, uid, term, prof)
		} else {
			if !had {
				continue
			}
			delete(n.announced, uid)
			msg = appendDel(msg, uid)
		}
		count++
		if len(msg) >= maxPresenceMsg {
			send()
		}
	}
	send()
}

// heartbeat tells the cluster this node lives and which delta it is at.
func (n *Node) heartbeat() { n.control(presBeat) }

// control publishes a message without records (heartbeat, hello, goodbye).
func (n *Node) control(typ byte) {
	n.annMu.Lock()
	defer n.annMu.Unlock()
	n.publishPresence(presenceSubject+n.id, appendPresHeader(nil, &presHeader{typ: typ, node: n.id, epoch: n.epoch, seq: n.annSeq}))
}

func (n *Node) publishPresence(subj string, b []byte) {
	if err := n.nc.Publish(subj, b); err != nil {
		n.log.Debug("cluster: presence publish", "err", err)
		return
	}
	n.m.presenceOut.Inc()
}

// serveSync answers a snapshot request: every announced user and the
// sequence number of the last delta they reflect, in chunks.
func (n *Node) serveSync(msg *nats.Msg) {
	if msg.Reply == "" {
		return
	}
	var bodies [][]byte
	var body []byte
	n.annMu.Lock()
	seq := n.annSeq
	for uid, e := range n.announced {
		body = appendAdd(body, uid, e.term, e.prof)
		if len(body) >= maxPresenceMsg-512 {
			bodies = append(bodies, body)
			body = nil
		}
	}
	n.annMu.Unlock()
	if len(body) > 0 || len(bodies) == 0 {
		bodies = append(bodies, body)
	}
	for i, b := range bodies {
		h := &presHeader{typ: presSnap, node: n.id, epoch: n.epoch, seq: seq, chunk: i, chunks: len(bodies)}
		out := append(appendPresHeader(make([]byte, 0, len(b)+64), h), b...)
		n.publishPresence(msg.Reply, out)
	}
}

// republish is called after a reconnect: a heartbeat at once, so nodes
// that took this one for dead, or missed a delta, ask for a snapshot.
func (n *Node) republish() {
	if n.handler() == nil {
		return
	}
	n.heartbeat()
}

// UserChanged queues uid's entry of this node to be announced again from
// the dispatcher's current state. It never blocks.
func (n *Node) UserChanged(uid string) {
	n.dirtyMu.Lock()
	n.dirty[uid] = struct{}{}
	n.dirtyMu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// ---- the receiving side: the other nodes' users ----

// peer is what this node knows of another node's announcements. Only the
// presence goroutine touches peers (under peerMu, for Connect's wait).
type peer struct {
	epoch  uint64
	seq    uint64 // last delta applied
	synced bool   // the view holds a snapshot plus every delta since

	silentAt time.Time // when the sweep found it silent; zero while it speaks

	reqID uint64 // snapshot request in flight; 0: none
	reqAt time.Time
	// The snapshot chunks received so far for reqID, by index, out of
	// total. A map, not a slice of total: the count is the sender's word,
	// and a short chunk claiming a million must not cost a million slots.
	chunks  map[int][]byte
	total   int
	snapSeq uint64

	buf []bufDelta // deltas received while not synced, in arrival order
}

type bufDelta struct {
	seq  uint64
	recs []byte
}

// presenceIn applies presence messages to the view and keeps every peer
// synced. One goroutine does it all, so the per-peer state needs no more
// than a lock for readers outside.
func (n *Node) presenceIn() {
	defer n.wg.Done()
	t := time.NewTicker(max(n.ttl/8, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case m := <-n.presCh:
			n.peerMu.Lock()
			n.handlePresence(m)
			n.peerMu.Unlock()
		case now := <-t.C:
			n.expireMissed(now)
			n.peerMu.Lock()
			n.presenceTick(now)
			n.peerMu.Unlock()
		}
	}
}

func (n *Node) handlePresence(m *nats.Msg) {
	if strings.HasPrefix(m.Subject, syncInbox) {
		n.handleSnapChunk(m)
		return
	}
	h, recs, err := parsePres(m.Data)
	if err != nil {
		n.m.badFrames.Inc()
		return
	}
	if h.node == n.id {
		// Our own, echoed by the wildcard subscription: it queued behind
		// everything else we receive, so it tells how far behind we are.
		n.selfHeard = time.Now()
		return
	}
	n.m.presenceIn.Inc()
	now := time.Now()
	p := n.peers[h.node]
	if p != nil && p.epoch != h.epoch {
		// The node restarted: what we know of its previous life is void.
		n.forgetPeer(h.node, "restarted")
		p = nil
	}
	if p == nil {
		if h.typ == presBye {
			return
		}
		p = &peer{epoch: h.epoch}
		n.peers[h.node] = p
		n.view.heartbeat(h.node, now)
		n.requestSync(h.node, p, now)
	}
	if !p.silentAt.IsZero() && h.typ != presBye {
		// Back with the same epoch: its entries are still here, and the
		// sequence numbers below tell whether it announced anything we
		// missed while it was silent.
		n.log.Info("cluster: node back", "node", h.node, "silent", now.Sub(p.silentAt).Round(time.Millisecond))
		p.silentAt = time.Time{}
	}
	switch h.typ {
	case presBeat, presHello:
		n.view.heartbeat(h.node, now)
		if h.typ == presHello && n.handler() != nil {
			// A node is starting: tell it at once that this one is here.
			n.heartbeat()
		}
		if p.synced && h.seq > p.seq {
			// A delta went missing (a slow consumer, a reconnect).
			p.synced = false
			n.requestSync(h.node, p, now)
		}
	case presDelta:
		n.view.heartbeat(h.node, now)
		switch {
		case !p.synced:
			n.buffer(h.node, p, h.seq, recs, now)
		case h.seq <= p.seq:
			// Already in the snapshot.
		case h.seq == p.seq+1:
			n.applyDelta(h.node, recs)
			p.seq = h.seq
		default:
			p.synced = false
			n.buffer(h.node, p, h.seq, recs, now)
			n.requestSync(h.node, p, now)
		}
	case presBye:
		n.forgetPeer(h.node, "closed")
	}
}

func (n *Node) buffer(node string, p *peer, seq uint64, recs []byte, now time.Time) {
	if len(p.buf) >= maxBuffered {
		// A newer snapshot covers everything buffered so far.
		p.buf = nil
		n.requestSync(node, p, now)
		return
	}
	p.buf = append(p.buf, bufDelta{seq: seq, recs: recs})
}

// requestSync asks node for a snapshot; the chunks come to this node's
// sync inbox under a fresh request id, so stale ones are told apart.
func (n *Node) requestSync(node string, p *peer, now time.Time) {
	n.reqSeq++
	p.reqID, p.reqAt, p.chunks = n.reqSeq, now, nil
	msg := &nats.Msg{Subject: syncSubject + node, Reply: syncInbox + n.id + "." + strconv.FormatUint(p.reqID, 10)}
	if err := n.nc.PublishMsg(msg); err != nil {
		n.log.Debug("cluster: presence sync request", "node", node, "err", err)
	}
	n.m.syncs.Inc()
}

func (n *Node) handleSnapChunk(m *nats.Msg) {
	id, err := strconv.ParseUint(m.Subject[strings.LastIndexByte(m.Subject, '.')+1:], 10, 64)
	if err != nil {
		return
	}
	if m.Header.Get("Status") == "503" {
		// Nobody serves that node's snapshots: it is gone or closing. Its
		// heartbeats stop and the sweep forgets it; if it lives, the
		// retry asks again.
		for _, p := range n.peers {
			if p.reqID == id {
				p.reqID = 0
			}
		}
		return
	}
	h, recs, err := parsePres(m.Data)
	if err != nil || h.typ != presSnap {
		n.m.badFrames.Inc()
		return
	}
	p := n.peers[h.node]
	if p == nil || p.reqID != id || p.epoch != h.epoch {
		return // stale, or from a previous life of the node
	}
	if p.chunks == nil {
		p.chunks, p.total, p.snapSeq = map[int][]byte{}, h.chunks, h.seq
	}
	if _, dup := p.chunks[h.chunk]; dup || h.chunks != p.total || h.seq != p.snapSeq {
		return
	}
	p.chunks[h.chunk] = recs
	if len(p.chunks) < p.total {
		return
	}
	// Complete: the node's entries become the snapshot, then the deltas
	// that came after it.
	var all []presRecord
	for i := range p.total {
		for c := p.chunks[i]; len(c) > 0; {
			r, rest, err := nextRecord(c)
			if err != nil {
				n.m.badFrames.Inc()
				break
			}
			if r.op == opAdd {
				all = append(all, r)
			}
			c = rest
		}
	}
	n.view.replaceNode(h.node, all)
	p.seq, p.synced, p.reqID, p.chunks = p.snapSeq, true, 0, nil
	buf := p.buf
	p.buf = nil
	for i, d := range buf {
		switch {
		case d.seq <= p.seq:
		case d.seq == p.seq+1:
			n.applyDelta(h.node, d.recs)
			p.seq = d.seq
		default:
			p.synced = false
			p.buf = append(p.buf, buf[i:]...)
			n.requestSync(h.node, p, time.Now())
			return
		}
	}
}

func (n *Node) applyDelta(node string, recs []byte) {
	var batch []presRecord
	for len(recs) > 0 {
		r, rest, err := nextRecord(recs)
		if err != nil {
			n.m.badFrames.Inc()
			break
		}
		batch = append(batch, r)
		recs = rest
	}
	n.view.apply(node, batch)
}

// forgetAfter is how many PresenceTTLs a node may stay silent, on top of
// the 3/4 TTL after which its users look offline, before this node drops
// its entries (and, should it speak again, asks it for a new snapshot).
const forgetAfter = 4

// presenceTick marks nodes whose heartbeat stopped as silent, forgets those
// silent for long, and asks again for snapshots that did not come.
func (n *Node) presenceTick(now time.Time) {
	// A node whose own heartbeats come back late has a backlog of
	// presence messages, other nodes' heartbeats among them: their silence
	// is ours. Dropping them would empty the view of live users and ask
	// every one of them for a snapshot, which deepens the backlog (at a
	// million connections on two cores this fed on itself). The sweep
	// waits until the echo is current again; a node that did die is
	// dropped then.
	if !n.selfHeard.IsZero() && now.Sub(n.selfHeard) > n.view.deadAfter*2/3 {
		n.m.presenceLag.Inc()
		return
	}
	for _, d := range n.view.sweep(now) {
		// Its users look offline already: lookups check the heartbeat.
		// Its entries and sequence number stay a while, so a node that
		// was only starved (a pause, a saturated machine) comes back
		// with its next heartbeat at no cost, where dropping it at once
		// cost a walk of the whole view here and a snapshot of the node's
		// users, asked by every node together.
		if now.Sub(d.last) > n.view.deadAfter+forgetAfter*n.ttl {
			n.forgetPeer(d.node, "silent")
			continue
		}
		if p := n.peers[d.node]; p != nil && p.silentAt.IsZero() {
			p.silentAt = now
			n.m.presenceSilent.Inc()
			n.log.Info("cluster: node silent", "node", d.node, "since", d.last)
		}
	}
	for node, p := range n.peers {
		if !p.synced && (p.reqID == 0 || now.Sub(p.reqAt) > syncRetry) {
			n.requestSync(node, p, now)
		}
	}
}

func (n *Node) forgetPeer(node, why string) {
	delete(n.peers, node)
	users := n.view.dropNode(node)
	n.log.Info("cluster: node gone", "dead", node, "why", why, "users", users)
}

// allSynced reports whether every node heard of so far has been loaded.
func (n *Node) allSynced() bool {
	n.peerMu.Lock()
	defer n.peerMu.Unlock()
	for _, p := range n.peers {
		if !p.synced {
			return false
		}
	}
	return true
}

// Remote returns uid's profile on another live node and whether there is
// one.
func (n *Node) Remote(uid string) (*codec.User, bool) { return n.view.remote(uid) }

// RemoteNodes returns the live nodes other than this one that hold uid.
func (n *Node) RemoteNodes(uid string) []string { return n.view.remoteNodes(uid, nil) }
