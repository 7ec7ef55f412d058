package storage

import (
	"context"
	"slices"
	"sort"
	"sync"
)

// Caps of the in-memory store. Memory is the only budget it has, so every
// per-key collection is bounded and drops its oldest entries first.
const (
	// MemoryHistoryCap is the number of messages kept per conversation.
	MemoryHistoryCap = 10000
	// MemoryOfflineCap is the number of offline messages queued per user.
	MemoryOfflineCap = 10000
	// DedupWindow is the number of recent client message ids remembered per
	// sender for de-duplication.
	DedupWindow = 1024
)

// Memory is a Store kept in process memory: for tests, development and
// single-node deployments that accept losing messages on restart.
type Memory struct {
	mu      sync.Mutex
	closed  bool
	convs   map[string]*memConv
	offline map[string][]*Message
	dedup   map[string]*dedupRing
	members map[string]map[string]struct{} // gid -> uids
	// memberList caches members as a slice per group, dropped on every
	// change: fan-out asks for a group's members per message, and copying
	// a slice is many times cheaper than walking a map of thousands.
	memberList map[string][]string
	byMember   map[string]map[string]struct{} // uid -> gids
}

type memConv struct {
	seq  uint64
	msgs []*Message // ascending Seq; at most MemoryHistoryCap
}

// dedupRing remembers a sender's last DedupWindow client ids.
type dedupRing struct {
	acks  map[string]Ack
	order []string // ring buffer of keys in acks
	next  int
}

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory {
	return &Memory{
		convs:      make(map[string]*memConv),
		offline:    make(map[string][]*Message),
		dedup:      make(map[string]*dedupRing),
		members:    make(map[string]map[string]struct{}),
		memberList: make(map[string][]string),
		byMember:   make(map[string]map[string]struct{}),
	}
}

// Append implements Store.
// AppendAsync implements Store. The memory store is as durable as it gets
// at once, so done runs before AppendAsync returns.
func (m *Memory) AppendAsync(ctx context.Context, msg *Message, offline []string, done func(Ack, error)) {
	done(m.Append(ctx, msg, offline))
}

// Append implements Store.
func (m *Memory) Append(_ context.Context, msg *Message, offline []string) (Ack, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Ack{}, ErrClosed
	}
	var ring *dedupRing
	if msg.ClientID != "" {
		ring = m.dedup[msg.From]
		if ring != nil {
			if a, ok := ring.acks[msg.ClientID]; ok {
				a.Duplicate = true
				return a, nil
			}
		} else {
			ring = &dedupRing{acks: make(map[string]Ack)}
			m.dedup[msg.From] = ring
		}
	}
	c := m.convs[msg.Conv]
	if c == nil {
		c = &memConv{}
		m.convs[msg.Conv] = c
	}
	c.seq++
	msg.ID = NewID()
	msg.Seq = c.seq
	stored := msg.Clone()
	c.msgs = appendCapped(c.msgs, stored, MemoryHistoryCap)
	for _, u := range offline {
		m.offline[u] = appendCapped(m.offline[u], stored, MemoryOfflineCap)
	}
	ack := Ack{ID: msg.ID, Seq: msg.Seq}
	if ring != nil {
		ring.add(msg.ClientID, ack)
	}
	return ack, nil
}

func (r *dedupRing) add(key string, a Ack) {
	if len(r.order) < DedupWindow {
		r.order = append(r.order, key)
	} else {
		delete(r.acks, r.order[r.next])
		r.order[r.next] = key
		r.next = (r.next + 1) % DedupWindow
	}
	r.acks[key] = a
}

// appendCapped appends m, dropping the oldest entries beyond max. It copies
// down instead of reslicing forward so the backing array does not grow
// without bound.
func appendCapped(s []*Message, m *Message, max int) []*Message {
	if len(s) >= max {
		n := copy(s, s[len(s)-max+1:])
		for i := n; i < len(s); i++ {
			s[i] = nil
		}
		s = s[:n]
	}
	return append(s, m)
}

// History implements Store.
func (m *Memory) History(_ context.Context, conv string, q Query) ([]*Message, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	c := m.convs[conv]
	if c == nil {
		return []*Message{}, nil
	}
	// Messages are in Seq order, so AfterSeq is a binary search.
	start := sort.Search(len(c.msgs), func(i int) bool { return c.msgs[i].Seq > q.AfterSeq })
	var match []*Message
	for _, msg := range c.msgs[start:] {
		if q.Begin != 0 && msg.CreateTime < q.Begin {
			continue
		}
		if q.End != 0 && msg.CreateTime > q.End {
			continue
		}
		match = append(match, msg)
	}
	match = q.window(match)
	return cloneAll(match), nil
}

func cloneAll(s []*Message) []*Message {
	out := make([]*Message, len(s))
	for i, m := range s {
		out[i] = m.Clone()
	}
	return out
}

// Offline implements Store.
func (m *Memory) Offline(_ context.Context, user string, f OfflineFilter) ([]*Message, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	limit := f.Limit
	if limit <= 0 || limit > MaxHistoryCount {
		limit = MaxHistoryCount
	}
	out := []*Message{}
	for _, msg := range m.offline[user] {
		if len(out) == limit {
			break
		}
		if f.From != "" && (msg.ChatType != ChatPrivate || msg.From != f.From) {
			continue
		}
		if f.GroupID != "" && (msg.ChatType != ChatGroup || msg.GroupID != f.GroupID) {
			continue
		}
		out = append(out, msg.Clone())
	}
	return out, nil
}

// QueueOffline implements Store.
func (m *Memory) QueueOffline(_ context.Context, user string, msgs []*Message) error {
	if len(msgs) == 0 {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	q := m.offline[user]
	for _, msg := range msgs {
		dup := false
		for _, x := range q {
			if x.ID == msg.ID {
				dup = true
				break
			}
		}
		if !dup {
			q = appendCapped(q, msg.Clone(), MemoryOfflineCap)
		}
	}
	m.offline[user] = q
	return nil
}

// AckOffline implements Store.
func (m *Memory) AckOffline(_ context.Context, user string, msgs []*Message) error {
	if len(msgs) == 0 {
		return nil
	}
	ids := make(map[string]struct{}, len(msgs))
	for _, msg := range msgs {
		ids[msg.ID] = struct{}{}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	q := m.offline[user]
	kept := q[:0]
	for _, msg := range q {
		if _, ok := ids[msg.ID]; !ok {
			kept = append(kept, msg)
		}
	}
	for i := len(kept); i < len(q); i++ {
		q[i] = nil
	}
	if len(kept) == 0 {
		delete(m.offline, user)
	} else {
		m.offline[user] = kept
	}
	return nil
}

// JoinGroup implements Store.
func (m *Memory) JoinGroup(_ context.Context, gid, uid string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	addPair(m.members, gid, uid)
	addPair(m.byMember, uid, gid)
	delete(m.memberList, gid)
	return nil
}

// LeaveGroup implements Store.
func (m *Memory) LeaveGroup(_ context.Context, gid, uid string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	delPair(m.members, gid, uid)
	delPair(m.byMember, uid, gid)
	delete(m.memberList, gid)
	return nil
}

func addPair(m map[string]map[string]struct{}, k, v string) {
	s := m[k]
	if s == nil {
		s = make(map[string]struct{})
		m[k] = s
	}
	s[v] = struct{}{}
}

func delPair(m map[string]map[string]struct{}, k, v string) {
	if s := m[k]; s != nil {
		delete(s, v)
		if len(s) == 0 {
			delete(m, k)
		}
	}
}

// GroupMembers implements Store.
func (m *Memory) GroupMembers(_ context.Context, gid string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	l, ok := m.memberList[gid]
	if !ok {
		l = keys(m.members[gid])
		m.memberList[gid] = l
	}
	return slices.Clone(l), nil
}

// UserGroups implements Store.
func (m *Memory) UserGroups(_ context.Context, uid string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	return keys(m.byMember[uid]), nil
}

func keys(s map[string]struct{}) []string {
	out := make([]string, 0, len(s))
	for k := range s {
		out = append(out, k)
	}
	return out
}

// Close implements Store.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.convs, m.offline, m.dedup, m.members, m.byMember, m.memberList = nil, nil, nil, nil, nil, nil
	return nil
}

var _ Store = (*Memory)(nil)
