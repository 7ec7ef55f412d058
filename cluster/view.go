package cluster

import (
	"hash/maphash"
	"sort"
	"sync"
	"time"

	"jim/codec"
)

// view is this node's picture of which other node holds which user. It is
// kept small because every node holds one for the whole cluster: one map
// entry per user, keyed by a 64-bit hash of the user id (seeded per
// process) and holding a node index and an interned terminal in 32 bits,
// with the rare user on several nodes and the users whose profile has more
// than a terminal in side maps. Nothing in it is a pointer, so the garbage
// collector never walks it; a million users cost about 18 bytes each
// (table.go).
//
// Two user ids with the same hash would make the absent one look online
// where the other is: with a million users online the chance for a lookup
// is about 5e-14, and the cost is a chat routed to a node that finds no
// connection and queues it offline, as it does for a user who just left.
type view struct {
	self      string
	deadAfter time.Duration
	seed      maphash.Seed

	mu      sync.RWMutex
	nodes   map[string]*nodeRec
	byIdx   []*nodeRec // index -> node; nil when free
	free    []uint16
	users   table               // hash(uid) -> slot, or multiSlot
	multi   map[uint64][]uint32 // users on several nodes: their slots
	rich    map[uint64]*codec.User
	terms   []*codec.User // interned terminal-only profiles; 0 is none
	termIdx map[string]uint16
	entries int
}

// A slot is a node index (low 16 bits) and a terminal index (high 16 bits).
const (
	multiSlot = ^uint32(0)
	maxNodes  = 1<<16 - 1 // index 0xffff is never used, so multiSlot is no node
)

func slotNode(s uint32) uint16 { return uint16(s) }
func slotTerm(s uint32) uint16 { return uint16(s >> 16) }

type nodeRec struct {
	id    string
	idx   uint16
	last  time.Time // last message from it
	count int       // entries on it
}

func newView(self string, deadAfter time.Duration) *view {
	return &view{self: self, deadAfter: deadAfter, seed: maphash.MakeSeed(),
		nodes: map[string]*nodeRec{}, multi: map[uint64][]uint32{},
		rich: map[uint64]*codec.User{}, terms: []*codec.User{nil}, termIdx: map[string]uint16{}}
}

func (v *view) key(uid string) uint64      { return maphash.String(v.seed, uid) }
func (v *view) keyBytes(uid []byte) uint64 { return maphash.Bytes(v.seed, uid) }

// nodeLocked returns node's record, creating it (without a heartbeat), or
// nil when every node index is taken.
func (v *view) nodeLocked(node string) *nodeRec {
	if r := v.nodes[node]; r != nil {
		return r
	}
	r := &nodeRec{id: node}
	if k := len(v.free); k > 0 {
		r.idx, v.free = v.free[k-1], v.free[:k-1]
		v.byIdx[r.idx] = r
	} else {
		if len(v.byIdx) >= maxNodes {
			// More nodes than any cluster of jim will see: names that
			// only forged presence messages carry. Sharing another node's
			// index would credit its users to it, so the newcomer is
			// ignored until a node is forgotten and frees an index.
			return nil
		}
		r.idx = uint16(len(v.byIdx))
		v.byIdx = append(v.byIdx, r)
	}
	v.nodes[node] = r
	return r
}

func (v *view) heartbeat(node string, t time.Time) {
	v.mu.Lock()
	if r := v.nodeLocked(node); r != nil && t.After(r.last) {
		r.last = t
	}
	v.mu.Unlock()
}

// maxTerm bounds an interned terminal. Terminals are protocol names
// ("tcp", "ws"), and the table is never emptied: a longer one, which only
// a forged presence message carries, would stay in memory for good.
const maxTerm = 64

// termLocked interns a terminal-only profile.
func (v *view) termLocked(term string) uint16 {
	if term == "" || len(term) > maxTerm {
		return 0
	}
	if i, ok := v.termIdx[term]; ok {
		return i
	}
	if len(v.terms) >= 1<<16 {
		return 0
	}
	i := uint16(len(v.terms))
	v.terms = append(v.terms, &codec.User{Terminal: term})
	v.termIdx[term] = i
	return i
}

// set records uid on node with profile u (nil: none).
func (v *view) set(uid, node string, u *codec.User) {
	v.mu.Lock()
	defer v.mu.Unlock()
	r := v.nodeLocked(node)
	if r == nil {
		return
	}
	k := v.key(uid)
	var term string
	if u != nil {
		term = u.Terminal
	}
	if u != nil && (u.Nick != "" || u.Avatar != "" || u.Sign != "") {
		v.rich[k] = u
	} else {
		// A profile is the user's, not the node's: the latest
		// announcement is it, so one without a nick, avatar or sign
		// clears what an earlier one said.
		delete(v.rich, k)
	}
	v.setLocked(k, r, v.termLocked(term))
}

func (v *view) setLocked(uid uint64, r *nodeRec, term uint16) {
	slot := uint32(r.idx) | uint32(term)<<16
	old, ok := v.users.get(uid)
	switch {
	case !ok:
		v.users.set(uid, slot)
	case old == multiSlot:
		ss := v.multi[uid]
		for i, s := range ss {
			if slotNode(s) == r.idx {
				ss[i] = slot
				return
			}
		}
		v.multi[uid] = append(ss, slot)
	case slotNode(old) == r.idx:
		v.users.set(uid, slot)
		return
	default:
		v.users.set(uid, multiSlot)
		v.multi[uid] = []uint32{old, slot}
	}
	v.entries++
	r.count++
}

func (v *view) del(uid, node string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if r := v.nodes[node]; r != nil {
		v.delLocked(v.key(uid), r)
	}
}

func (v *view) delLocked(uid uint64, r *nodeRec) {
	old, ok := v.users.get(uid)
	switch {
	case !ok:
		return
	case old == multiSlot:
		ss := v.multi[uid]
		i := 0
		for i < len(ss) && slotNode(ss[i]) != r.idx {
			i++
		}
		if i == len(ss) {
			return
		}
		ss = append(ss[:i], ss[i+1:]...)
		if len(ss) == 1 {
			v.users.set(uid, ss[0])
			delete(v.multi, uid)
		} else {
			v.multi[uid] = ss
		}
	case slotNode(old) == r.idx:
		v.users.del(uid)
		delete(v.rich, uid)
	default:
		return
	}
	v.entries--
	r.count--
}

// apply applies a delta's records for node.
func (v *view) apply(node string, recs []presRecord) {
	v.mu.Lock()
	defer v.mu.Unlock()
	r := v.nodeLocked(node)
	if r == nil {
		return
	}
	for i := range recs {
		v.applyLocked(r, &recs[i])
	}
}

func (v *view) applyLocked(r *nodeRec, rec *presRecord) {
	uid := v.keyBytes(rec.uid)
	if rec.op == opDel {
		v.delLocked(uid, r)
		return
	}
	var u codec.User
	if len(rec.prof) > 0 && codec.Unmarshal(rec.prof, &u) == nil && (u.Nick != "" || u.Avatar != "" || u.Sign != "") {
		v.rich[uid] = &codec.User{Nick: u.Nick, Avatar: u.Avatar, Sign: u.Sign, Terminal: u.Terminal}
	} else {
		delete(v.rich, uid) // as in set: the latest announcement is the profile
	}
	v.setLocked(uid, r, v.termLocked(string(rec.term)))
}

// replaceNode makes recs node's entries: a snapshot.
func (v *view) replaceNode(node string, recs []presRecord) {
	v.mu.Lock()
	defer v.mu.Unlock()
	r := v.nodeLocked(node)
	if r == nil {
		return
	}
	v.dropEntriesLocked(r)
	for i := range recs {
		v.applyLocked(r, &recs[i])
	}
}

// dropEntriesLocked removes every entry on r and returns how many there
// were. It walks the whole view, which happens only when a node goes or is
// loaded again, never per message.
func (v *view) dropEntriesLocked(r *nodeRec) int {
	n := r.count
	if n == 0 {
		return 0
	}
	var uids []uint64
	v.users.each(func(uid uint64, s uint32) {
		if s == multiSlot || slotNode(s) == r.idx {
			uids = append(uids, uid)
		}
	})
	for _, uid := range uids {
		v.delLocked(uid, r)
	}
	return n
}

// liveLocked reports whether node's heartbeat is recent. The own node is
// always live.
func (v *view) liveLocked(r *nodeRec, now time.Time) bool {
	if r.id == v.self {
		return true
	}
	return now.Sub(r.last) <= v.deadAfter
}

// liveSlotLocked returns the node of slot s if it is live and not self.
func (v *view) liveSlotLocked(s uint32, now time.Time) *nodeRec {
	i := int(slotNode(s))
	if i >= len(v.byIdx) {
		return nil
	}
	r := v.byIdx[i]
	if r == nil || r.id == v.self || !v.liveLocked(r, now) {
		return nil
	}
	return r
}

// remote returns uid's profile on a live node other than self. The profile
// is shared: callers must not modify it.
func (v *view) remote(uid string) (*codec.User, bool) {
	now := time.Now()
	v.mu.RLock()
	defer v.mu.RUnlock()
	k := v.key(uid)
	s, ok := v.users.get(k)
	if !ok {
		return nil, false
	}
	if s == multiSlot {
		found := false
		for _, x := range v.multi[k] {
			if v.liveSlotLocked(x, now) != nil {
				s, found = x, true
				break
			}
		}
		if !found {
			return nil, false
		}
	} else if v.liveSlotLocked(s, now) == nil {
		return nil, false
	}
	if len(v.rich) > 0 {
		if u := v.rich[k]; u != nil {
			return u, true
		}
	}
	return v.terms[slotTerm(s)], true
}

// remoteNodes appends to dst the live nodes other than self holding uid.
func (v *view) remoteNodes(uid string, dst []string) []string {
	now := time.Now()
	v.mu.RLock()
	defer v.mu.RUnlock()
	k := v.key(uid)
	s, ok := v.users.get(k)
	if !ok {
		return dst
	}
	if s != multiSlot {
		if r := v.liveSlotLocked(s, now); r != nil {
			dst = append(dst, r.id)
		}
		return dst
	}
	for _, x := range v.multi[k] {
		if r := v.liveSlotLocked(x, now); r != nil {
			dst = append(dst, r.id)
		}
	}
	return dst
}

// liveOthers appends to dst every live node other than self.
func (v *view) liveOthers(dst []string) []string {
	now := time.Now()
	v.mu.RLock()
	defer v.mu.RUnlock()
	for node, r := range v.nodes {
		if node != v.self && v.liveLocked(r, now) {
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
	for node, r := range v.nodes {
		if node != v.self && v.liveLocked(r, now) {
			return true
		}
	}
	return false
}

// swept is a node the sweep found silent and when it last spoke.
type swept struct {
	node string
	last time.Time
}

// sweep returns the nodes whose heartbeat is older than deadAfter.
func (v *view) sweep(now time.Time) []swept {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var dead []swept
	for node, r := range v.nodes {
		if !v.liveLocked(r, now) {
			dead = append(dead, swept{node, r.last})
		}
	}
	return dead
}

// dropNode forgets a node and its entries and returns how many entries it
// had.
func (v *view) dropNode(node string) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	if node == v.self {
		return 0
	}
	r := v.nodes[node]
	if r == nil {
		return 0
	}
	users := v.dropEntriesLocked(r)
	delete(v.nodes, node)
	v.byIdx[r.idx] = nil
	v.free = append(v.free, r.idx)
	return users
}

// firstLive is the smallest live node id, self included.
func (v *view) firstLive() string {
	now := time.Now()
	v.mu.RLock()
	defer v.mu.RUnlock()
	live := []string{v.self}
	for node, r := range v.nodes {
		if node != v.self && v.liveLocked(r, now) {
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
	for node, r := range v.nodes {
		if node != v.self && v.liveLocked(r, now) {
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
