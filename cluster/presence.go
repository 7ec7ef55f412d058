package cluster

import (
	"context"
	"encoding/base64"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"jim/codec"
)

// markerTTL is how long a removal marker stays in the bucket: long enough
// for every watcher to see it, short enough that users who come and go do
// not pile markers up.
const markerTTL = time.Minute

func nodeKey(node string) string { return "n." + node }

func userKey(uid, node string) string {
	return "u." + base64.RawURLEncoding.EncodeToString([]byte(uid)) + "." + node
}

// parseKey splits a bucket key into its user (empty for a heartbeat) and
// node.
func parseKey(key string) (uid, node string, ok bool) {
	switch {
	case strings.HasPrefix(key, "n."):
		return "", key[2:], len(key) > 2
	case strings.HasPrefix(key, "u."):
		rest := key[2:]
		i := strings.IndexByte(rest, '.')
		if i < 0 {
			return "", "", false
		}
		b, err := base64.RawURLEncoding.DecodeString(rest[:i])
		if err != nil || len(b) == 0 {
			return "", "", false
		}
		return string(b), rest[i+1:], i+1 < len(rest)
	}
	return "", "", false
}

// setupPresence creates (or finds) the bucket and loads the current
// presence into the view before returning.
func (n *Node) setupPresence(replicas int) error {
	if replicas <= 0 {
		replicas = 1
	}
	js, err := jetstream.New(n.nc)
	if err != nil {
		return fmt.Errorf("cluster: jetstream: %w", err)
	}
	ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, Bucket)
	if err != nil {
		// Presence is rebuilt by the nodes whenever it is lost, so memory
		// storage is enough and keeps writes off the disk.
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: Bucket, Description: "jim: which node holds which user",
			History: 1, Storage: jetstream.MemoryStorage, Replicas: replicas,
			LimitMarkerTTL: markerTTL,
		})
		if err != nil {
			// Another node may have created it meanwhile.
			if kv2, err2 := js.KeyValue(ctx, Bucket); err2 == nil {
				kv, err = kv2, nil
			}
		}
		if err != nil {
			return fmt.Errorf("cluster: presence bucket: %w", err)
		}
	}
	n.kv = kv
	w, err := kv.WatchAll(n.ctx)
	if err != nil {
		return fmt.Errorf("cluster: watching presence: %w", err)
	}
	ready := make(chan struct{})
	n.wg.Add(2)
	go n.watch(w, ready)
	go n.sweepLoop()
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("cluster: loading presence: %w", ctx.Err())
	}
}

// watch applies bucket updates to the view. The initial values are dated
// by the server's timestamp (so a heartbeat long gone counts as dead at
// once), live ones by their arrival.
func (n *Node) watch(w jetstream.KeyWatcher, ready chan struct{}) {
	defer n.wg.Done()
	defer func() { _ = w.Stop() }()
	initial := true
	for {
		var e jetstream.KeyValueEntry
		select {
		case <-n.ctx.Done():
			return
		case e = <-w.Updates():
		}
		if e == nil {
			if initial {
				initial = false
				close(ready)
			}
			continue
		}
		uid, node, ok := parseKey(e.Key())
		if !ok {
			continue
		}
		now := time.Now()
		seen := now
		if initial {
			if c := e.Created(); c.Before(now) {
				seen = c
			}
		}
		put := e.Operation() == jetstream.KeyValuePut
		n.m.presenceIn.Inc()
		switch {
		case uid == "" && put:
			n.view.heartbeat(node, seen)
		case uid == "":
			n.view.nodeGone(node)
		case put:
			var u codec.User
			if len(e.Value()) > 0 && codec.Unmarshal(e.Value(), &u) == nil {
				n.view.set(uid, node, &u)
			} else {
				n.view.set(uid, node, nil)
			}
		default:
			n.view.del(uid, node)
			if node == n.id {
				// Our own entry went away while the user may still be
				// here: another node took us for dead. Write it again.
				if h := n.handler(); h != nil && h.LocalUser(uid) != nil {
					n.UserChanged(uid)
				}
			}
		}
	}
}

// sweepLoop drops nodes whose heartbeat stopped. The first live node by id
// also purges their entries from the bucket, for the nodes that start later.
func (n *Node) sweepLoop() {
	defer n.wg.Done()
	t := time.NewTicker(max(n.ttl/8, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		n.expireMissed(time.Now())
		for _, dead := range n.view.sweep(time.Now()) {
			users := n.view.dropNode(dead)
			n.log.Info("cluster: node gone", "dead", dead, "users", len(users))
			if n.handler() == nil || n.view.firstLive() != n.id {
				continue
			}
			for _, uid := range users {
				n.removeKey(userKey(uid, dead))
			}
			n.removeKey(nodeKey(dead))
		}
	}
}

// presenceLoop writes this node's heartbeat and its users' entries. Entries
// are core NATS publishes into the bucket's subjects: buffered, never a
// round trip per login; a connection loss is repaired by republish.
func (n *Node) presenceLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.ttl / 4)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
			n.heartbeat()
		case <-n.wake:
		}
		n.dirtyMu.Lock()
		var batch map[string]struct{}
		if len(n.dirty) > 0 {
			batch, n.dirty = n.dirty, make(map[string]struct{})
		}
		n.dirtyMu.Unlock()
		h := n.handler()
		for uid := range batch {
			if u := h.LocalUser(uid); u != nil {
				n.putUser(uid, u)
			} else {
				n.removeKey(userKey(uid, n.id))
			}
		}
	}
}

// UserChanged queues uid's entry of this node to be written again from the
// dispatcher's current state. It never blocks.
func (n *Node) UserChanged(uid string) {
	n.dirtyMu.Lock()
	n.dirty[uid] = struct{}{}
	n.dirtyMu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// republish queues every local user, after a reconnect or at start.
func (n *Node) republish() {
	h := n.handler()
	if h == nil {
		return
	}
	n.heartbeat()
	for _, uid := range h.LocalUsers() {
		n.UserChanged(uid)
	}
}

func (n *Node) heartbeat() {
	n.publishKV(nodeKey(n.id), []byte(n.id), nil)
}

func (n *Node) putUser(uid string, u *codec.User) {
	val, err := codec.Marshal(&codec.User{Nick: u.Nick, Avatar: u.Avatar, Sign: u.Sign, Terminal: u.Terminal})
	if err != nil {
		val = nil
	}
	n.publishKV(userKey(uid, n.id), val, nil)
}

// removeKey publishes a purge marker that expires after markerTTL.
func (n *Node) removeKey(key string) {
	hdr := nats.Header{}
	hdr.Set("KV-Operation", "PURGE")
	hdr.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	hdr.Set(jetstream.MsgTTLHeader, markerTTL.String())
	n.publishKV(key, nil, hdr)
}

func (n *Node) publishKV(key string, val []byte, hdr nats.Header) {
	m := &nats.Msg{Subject: n.kvPre + key, Data: val, Header: hdr}
	if err := n.nc.PublishMsg(m); err != nil {
		n.log.Debug("cluster: presence publish", "key", key, "err", err)
		return
	}
	n.m.presenceOut.Inc()
}

// Remote returns uid's profile on another live node and whether there is
// one.
func (n *Node) Remote(uid string) (*codec.User, bool) { return n.view.remote(uid) }

// RemoteNodes returns the live nodes other than this one that hold uid.
func (n *Node) RemoteNodes(uid string) []string { return n.view.remoteNodes(uid, nil) }

// view is this node's copy of the presence bucket.
type view struct {
	self      string
	deadAfter time.Duration

	mu      sync.RWMutex
	users   map[string]map[string]*codec.User // user -> node -> profile
	nodes   map[string]time.Time              // node -> last heartbeat
	entries int
}

func newView(self string, deadAfter time.Duration) *view {
	return &view{self: self, deadAfter: deadAfter,
		users: map[string]map[string]*codec.User{}, nodes: map[string]time.Time{}}
}

func (v *view) heartbeat(node string, t time.Time) {
	v.mu.Lock()
	if t.After(v.nodes[node]) {
		v.nodes[node] = t
	}
	v.mu.Unlock()
}

// nodeGone forgets a node's heartbeat (it closed, or was purged as dead).
func (v *view) nodeGone(node string) {
	if node == v.self {
		return
	}
	v.mu.Lock()
	delete(v.nodes, node)
	v.mu.Unlock()
}

func (v *view) set(uid, node string, u *codec.User) {
	v.mu.Lock()
	m := v.users[uid]
	if m == nil {
		m = make(map[string]*codec.User, 1)
		v.users[uid] = m
	}
	if _, ok := m[node]; !ok {
		v.entries++
	}
	m[node] = u
	v.mu.Unlock()
}

func (v *view) del(uid, node string) {
	v.mu.Lock()
	if m := v.users[uid]; m != nil {
		if _, ok := m[node]; ok {
			delete(m, node)
			v.entries--
			if len(m) == 0 {
				delete(v.users, uid)
			}
		}
	}
	v.mu.Unlock()
}

// liveLocked reports whether node's heartbeat is recent. The own node is
// always live.
func (v *view) liveLocked(node string, now time.Time) bool {
	if node == v.self {
		return true
	}
	t, ok := v.nodes[node]
	return ok && now.Sub(t) <= v.deadAfter
}

func (v *view) remote(uid string) (*codec.User, bool) {
	now := time.Now()
	v.mu.RLock()
	defer v.mu.RUnlock()
	for node, u := range v.users[uid] {
		if node != v.self && v.liveLocked(node, now) {
			return u, true
		}
	}
	return nil, false
}

// remoteNodes appends to dst the live nodes other than self holding uid.
func (v *view) remoteNodes(uid string, dst []string) []string {
	now := time.Now()
	v.mu.RLock()
	defer v.mu.RUnlock()
	for node := range v.users[uid] {
		if node != v.self && v.liveLocked(node, now) {
			dst = append(dst, node)
		}
	}
	return dst
}

// liveOthers appends to dst every live node other than self.
func (v *view) liveOthers(dst []string) []string {
	now := time.Now()
	v.mu.RLock()
	defer v.mu.RUnlock()
	for node := range v.nodes {
		if node != v.self && v.liveLocked(node, now) {
			dst = append(dst, node)
		}
	}
	return dst
}

// othersLive reports whether any node other than self is live.
func (v *view) othersLive() bool {
	now := time.Now()
	v.mu.RLock()
	defer v.mu.RUnlock()
	for node := range v.nodes {
		if node != v.self && v.liveLocked(node, now) {
			return true
		}
	}
	return false
}

// sweep returns the nodes whose heartbeat is older than deadAfter.
func (v *view) sweep(now time.Time) []string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var dead []string
	for node := range v.nodes {
		if !v.liveLocked(node, now) {
			dead = append(dead, node)
		}
	}
	return dead
}

// dropNode forgets a dead node and its entries and returns its users.
func (v *view) dropNode(node string) []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	if node == v.self {
		return nil
	}
	delete(v.nodes, node)
	var users []string
	for uid, m := range v.users {
		if _, ok := m[node]; ok {
			users = append(users, uid)
			delete(m, node)
			v.entries--
			if len(m) == 0 {
				delete(v.users, uid)
			}
		}
	}
	return users
}

// usersOn lists the users with an entry for node.
func (v *view) usersOn(node string) []string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var out []string
	for uid, m := range v.users {
		if _, ok := m[node]; ok {
			out = append(out, uid)
		}
	}
	return out
}

// firstLive is the smallest live node id, self included.
func (v *view) firstLive() string {
	now := time.Now()
	v.mu.RLock()
	defer v.mu.RUnlock()
	live := []string{v.self}
	for node := range v.nodes {
		if node != v.self && v.liveLocked(node, now) {
			live = append(live, node)
		}
	}
	sort.Strings(live)
	return live[0]
}

func (v *view) liveNodes() int {
	now := time.Now()
	v.mu.RLock()
	defer v.mu.RUnlock()
	k := 1
	for node := range v.nodes {
		if node != v.self && v.liveLocked(node, now) {
			k++
		}
	}
	return k
}

func (v *view) entryCount() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.entries
}
