package storage

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// Group membership lives in the P_GROUPS bucket, twice: g.<gid>.<uid> and
// u.<uid>.<gid>, value "1" while a member and "0" after leaving (a put, not
// a delete, so every change has a revision the cache can order by).
//
// GroupMembers runs for every group message, so a group's members are
// cached: the first read starts a watch on g.<gid>.* that loads the current
// members and then applies every change made by any node. A node's own
// joins and leaves are applied to the cache as soon as JetStream
// acknowledged them, so a join is visible to the next message sent through
// the same node at once, and through other nodes after the watch delivers
// it (normally well under a millisecond on a LAN).

var (
	memberIn  = []byte("1")
	memberOut = []byte("0")
)

type memberState struct {
	rev uint64
	in  bool
}

type groupWatch struct {
	mu      sync.Mutex
	members map[string]memberState
	ready   chan struct{}
	once    sync.Once
	err     error
	w       jetstream.KeyWatcher
}

func (g *groupWatch) apply(uid string, rev uint64, in bool) {
	g.mu.Lock()
	if cur, ok := g.members[uid]; !ok || cur.rev < rev {
		g.members[uid] = memberState{rev: rev, in: in}
	}
	g.mu.Unlock()
}

func (g *groupWatch) list() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]string, 0, len(g.members))
	for uid, st := range g.members {
		if st.in {
			out = append(out, uid)
		}
	}
	return out
}

func (g *groupWatch) stop() {
	g.mu.Lock()
	w := g.w
	g.mu.Unlock()
	if w != nil {
		_ = w.Stop()
	}
}

func (s *JetStream) groupKey(gid, uid string) string  { return "g." + tok(gid) + "." + tok(uid) }
func (s *JetStream) byUserKey(uid, gid string) string { return "u." + tok(uid) + "." + tok(gid) }

// JoinGroup implements Store.
func (s *JetStream) JoinGroup(ctx context.Context, gid, uid string) error {
	return s.setMember(ctx, gid, uid, true)
}

// LeaveGroup implements Store.
func (s *JetStream) LeaveGroup(ctx context.Context, gid, uid string) error {
	return s.setMember(ctx, gid, uid, false)
}

func (s *JetStream) setMember(parent context.Context, gid, uid string, in bool) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	if err := jsPartsOK(gid, uid); err != nil {
		return err
	}
	v := memberOut
	if in {
		v = memberIn
	}
	ctx, cancel := s.ctx(parent)
	defer cancel()
	rev, err := s.groups.Put(ctx, s.groupKey(gid, uid), v)
	if err != nil {
		return fmt.Errorf("storage: group membership: %w", err)
	}
	s.gmu.Lock()
	w := s.watches[gid]
	s.gmu.Unlock()
	if w != nil {
		w.apply(uid, rev, in)
	}
	if _, err := s.groups.Put(ctx, s.byUserKey(uid, gid), v); err != nil {
		return fmt.Errorf("storage: group membership: %w", err)
	}
	return nil
}

// GroupMembers implements Store.
func (s *JetStream) GroupMembers(parent context.Context, gid string) ([]string, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	if err := jsPartsOK(gid); err != nil {
		return nil, err
	}
	s.gmu.Lock()
	w := s.watches[gid]
	if w == nil {
		if len(s.watches) >= s.opts.MaxGroupWatches {
			for k, old := range s.watches { // evict one, at random
				old.stop()
				delete(s.watches, k)
				break
			}
		}
		w = &groupWatch{members: make(map[string]memberState), ready: make(chan struct{})}
		s.watches[gid] = w
		go s.watchGroup(gid, w)
	}
	s.gmu.Unlock()
	ctx, cancel := s.ctx(parent)
	defer cancel()
	select {
	case <-w.ready:
	case <-ctx.Done():
		return nil, fmt.Errorf("storage: loading group %q: %w", gid, ctx.Err())
	}
	if w.err != nil {
		s.gmu.Lock()
		if s.watches[gid] == w {
			delete(s.watches, gid)
		}
		s.gmu.Unlock()
		return nil, w.err
	}
	return w.list(), nil
}

// watchGroup feeds w from a watch on gid's members until the watch stops.
func (s *JetStream) watchGroup(gid string, w *groupWatch) {
	pfx := "g." + tok(gid) + "."
	kw, err := s.groups.Watch(s.bg, pfx+"*")
	if err != nil {
		w.err = fmt.Errorf("storage: watching group %q: %w", gid, err)
		w.once.Do(func() { close(w.ready) })
		return
	}
	w.mu.Lock()
	w.w = kw
	w.mu.Unlock()
	s.gmu.Lock()
	if s.watches[gid] != w { // evicted or closed meanwhile
		s.gmu.Unlock()
		_ = kw.Stop()
		w.once.Do(func() { close(w.ready) })
		return
	}
	s.gmu.Unlock()
	for e := range kw.Updates() {
		if e == nil {
			w.once.Do(func() { close(w.ready) })
			continue
		}
		uid, err := untok(strings.TrimPrefix(e.Key(), pfx))
		if err != nil {
			continue
		}
		in := e.Operation() == jetstream.KeyValuePut && string(e.Value()) == "1"
		w.apply(uid, e.Revision(), in)
	}
	// The watch ended (evicted, closed, or lost with its consumer): drop
	// the cache so the next read starts a fresh one rather than serving
	// members that no longer follow changes.
	s.gmu.Lock()
	if s.watches[gid] == w {
		delete(s.watches, gid)
	}
	s.gmu.Unlock()
	w.once.Do(func() { close(w.ready) })
}

// UserGroups implements Store.
func (s *JetStream) UserGroups(parent context.Context, uid string) ([]string, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	if err := jsPartsOK(uid); err != nil {
		return nil, err
	}
	pfx := "u." + tok(uid) + "."
	ctx, cancel := s.ctx(parent)
	defer cancel()
	// The last value of every u.<uid>.* key in one direct request.
	ms, err := s.direct(ctx, "KV_"+s.opts.Prefix+"_GROUPS", directReq{MultiLast: []string{"$KV." + s.opts.Prefix + "_GROUPS." + pfx + "*"}})
	if err != nil {
		return nil, err
	}
	out := []string{}
	for _, m := range ms {
		if string(m.data) != "1" {
			continue
		}
		key := strings.TrimPrefix(m.subj, "$KV."+s.opts.Prefix+"_GROUPS.")
		gid, err := untok(strings.TrimPrefix(key, pfx))
		if err != nil {
			continue
		}
		out = append(out, gid)
	}
	return out, nil
}
