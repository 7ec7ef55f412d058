package dispatch

import (
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"jim/codec"
)

// shardCount is the number of shards of the session and group tables. A
// power of two, so the shard is a mask of the hash.
const shardCount = 256

// hub holds the session table (user id -> that user's live connections) and
// the online group table (group id -> members that have a live connection).
// Durable membership lives in storage; the online table is what fan-out
// walks, so a group message touches only members that can receive it.
//
// Lock order: a session shard's lock may be held while taking a group
// shard's lock, never the other way round. Holding the user's session lock
// across the group update is what keeps "the user's last connection closed"
// and "the user logged in again" from interleaving into a stale entry.
type hub struct {
	sessions [shardCount]sessionShard
	groups   [shardCount]groupShard
	nconns   atomic.Int64
}

type sessionShard struct {
	mu sync.RWMutex
	m  map[string]*session
}

type groupShard struct {
	mu sync.RWMutex
	m  map[string]*onlineGroup
}

// onlineGroup is one group's online members and, built on demand, the
// fan-out list derived from them. A group message walks every member's
// connections; rebuilding that list per message cost a session-table lookup
// per member (a fifth of the server's time at 10,000 members), while members
// come and go far less often than messages arrive.
type onlineGroup struct {
	members map[string]struct{}
	// ver counts changes to the members or to any member's connections; a
	// snapshot built while it moved is not kept.
	ver  uint64
	snap *fanout
}

// fanout is a group's online members and their connections at one moment:
// users[i]'s connections are conns[first[i]:first[i+1]] (or to the end).
// It is shared by every message sent until the group changes, so nothing
// may modify it.
type fanout struct {
	users []string
	conns []Conn
	first []int
}

// session is one online user. conns is copy-on-write: writers replace the
// slice, so a reader may keep the slice it loaded after dropping the lock.
// It is kept lean because there is one per online user: user is nil when the
// login gave nothing but the id, and groups is nil until the first group.
type session struct {
	conns  []Conn
	user   *codec.User         // profile from the last login, if it had more than the id; read-only once stored
	groups map[string]struct{} // groups this user is in the online table of
}

// hasProfile reports whether u carries anything beyond what profile can
// rebuild from the id and the connection.
func hasProfile(u *codec.User) bool {
	return u.Nick != "" || u.Avatar != "" || u.Sign != "" || len(u.Friends) > 0
}

func newHub() *hub {
	h := &hub{}
	for i := range h.sessions {
		h.sessions[i].m = make(map[string]*session)
		h.groups[i].m = make(map[string]*onlineGroup)
	}
	return h
}

// shard is FNV-1a, inlined so a lookup does not allocate a hash.Hash.
func shard(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h & (shardCount - 1)
}

// bind adds c to u's connections and records u's profile. It reports whether
// c was not bound before.
func (h *hub) bind(c Conn, u *codec.User) bool {
	sh := &h.sessions[shard(u.UserID)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s := sh.m[u.UserID]
	if s == nil {
		s = &session{}
		sh.m[u.UserID] = s
	}
	s.user = nil
	if hasProfile(u) {
		s.user = u
	}
	for _, x := range s.conns {
		if x == c {
			return false
		}
	}
	conns := make([]Conn, len(s.conns), len(s.conns)+1)
	copy(conns, s.conns)
	s.conns = append(conns, c)
	h.nconns.Add(1)
	h.touchGroups(s)
	return true
}

// unbind removes c from uid's connections. If it was the last one, the user
// leaves the online group table and the groups it was in are returned.
func (h *hub) unbind(uid string, c Conn) (found, last bool, groups []string) {
	sh := &h.sessions[shard(uid)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s := sh.m[uid]
	if s == nil {
		return false, false, nil
	}
	conns := make([]Conn, 0, len(s.conns))
	for _, x := range s.conns {
		if x == c {
			found = true
		} else {
			conns = append(conns, x)
		}
	}
	if !found {
		return false, false, nil
	}
	h.nconns.Add(-1)
	if len(conns) > 0 {
		s.conns = conns
		h.touchGroups(s)
		return true, false, nil
	}
	delete(sh.m, uid)
	groups = make([]string, 0, len(s.groups))
	for gid := range s.groups {
		groups = append(groups, gid)
		h.groupDel(gid, uid)
	}
	return true, true, groups
}

// conns returns uid's live connections. The slice must not be modified.
func (h *hub) conns(uid string) []Conn {
	sh := &h.sessions[shard(uid)]
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	if s := sh.m[uid]; s != nil {
		return s.conns
	}
	return nil
}

// online reports whether uid has a live connection.
func (h *hub) online(uid string) bool { return len(h.conns(uid)) > 0 }

// profile returns the user object of uid's last login, or nil if offline.
func (h *hub) profile(uid string) (*codec.User, []Conn) {
	sh := &h.sessions[shard(uid)]
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	s := sh.m[uid]
	if s == nil {
		return nil, nil
	}
	if s.user != nil {
		return s.user, s.conns
	}
	u := &codec.User{UserID: uid, Status: "online"}
	if len(s.conns) > 0 {
		u.Terminal = s.conns[len(s.conns)-1].Protocol()
	}
	return u, s.conns
}

// joinOnline puts uid into gid's online set if uid is online; it reports
// whether it did.
func (h *hub) joinOnline(uid, gid string) bool {
	sh := &h.sessions[shard(uid)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s := sh.m[uid]
	if s == nil {
		return false
	}
	if s.groups == nil {
		s.groups = make(map[string]struct{}, 1)
	}
	s.groups[gid] = struct{}{}
	gs := &h.groups[shard(gid)]
	gs.mu.Lock()
	g := gs.m[gid]
	if g == nil {
		g = &onlineGroup{members: make(map[string]struct{})}
		gs.m[gid] = g
	}
	g.members[uid] = struct{}{}
	g.changed()
	gs.mu.Unlock()
	return true
}

// leaveOnline takes uid out of gid's online set.
func (h *hub) leaveOnline(uid, gid string) {
	sh := &h.sessions[shard(uid)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if s := sh.m[uid]; s != nil {
		delete(s.groups, gid)
	}
	h.groupDel(gid, uid)
}

func (h *hub) groupDel(gid, uid string) {
	gs := &h.groups[shard(gid)]
	gs.mu.Lock()
	if g := gs.m[gid]; g != nil {
		delete(g.members, uid)
		g.changed()
		if len(g.members) == 0 {
			delete(gs.m, gid)
		}
	}
	gs.mu.Unlock()
}

// changed drops g's fan-out snapshot; the group shard's lock is held.
func (g *onlineGroup) changed() {
	g.ver++
	g.snap = nil
}

// touchGroups drops the fan-out snapshots of the groups s is online in, after
// s's connections changed; s's session shard lock is held (the lock order
// allows taking group locks under it).
func (h *hub) touchGroups(s *session) {
	for gid := range s.groups {
		gs := &h.groups[shard(gid)]
		gs.mu.Lock()
		if g := gs.m[gid]; g != nil {
			g.changed()
		}
		gs.mu.Unlock()
	}
}

// groupFanout returns the fan-out list of gid, building it if the group
// changed since the last one. A message racing with a change may use the
// list from just before it, as it would had it arrived a moment earlier;
// Send to a connection closed since then reports false.
func (h *hub) groupFanout(gid string) *fanout {
	gs := &h.groups[shard(gid)]
	gs.mu.RLock()
	g := gs.m[gid]
	if g == nil {
		gs.mu.RUnlock()
		return &fanout{}
	}
	if f := g.snap; f != nil {
		gs.mu.RUnlock()
		return f
	}
	ver := g.ver
	users := make([]string, 0, len(g.members))
	for uid := range g.members {
		users = append(users, uid)
	}
	gs.mu.RUnlock()
	// Session locks are taken outside the group lock (the lock order is
	// session, then group).
	f := &fanout{users: users[:0], conns: make([]Conn, 0, len(users)), first: make([]int, 0, len(users))}
	for _, uid := range users {
		if cs := h.conns(uid); len(cs) > 0 {
			f.users = append(f.users, uid)
			f.first = append(f.first, len(f.conns))
			f.conns = append(f.conns, cs...)
		}
	}
	gs.mu.Lock()
	if g := gs.m[gid]; g != nil && g.ver == ver && g.snap == nil {
		g.snap = f
	}
	gs.mu.Unlock()
	return f
}

// inGroup reports whether online user uid is in gid's online set, which for
// an online user mirrors durable membership (login rejoins every group).
func (h *hub) inGroup(uid, gid string) bool {
	gs := &h.groups[shard(gid)]
	gs.mu.RLock()
	defer gs.mu.RUnlock()
	g := gs.m[gid]
	if g == nil {
		return false
	}
	_, ok := g.members[uid]
	return ok
}

// groupOnline returns the online members of gid.
func (h *hub) groupOnline(gid string) []string {
	gs := &h.groups[shard(gid)]
	gs.mu.RLock()
	defer gs.mu.RUnlock()
	g := gs.m[gid]
	if g == nil {
		return nil
	}
	out := make([]string, 0, len(g.members))
	for uid := range g.members {
		out = append(out, uid)
	}
	return out
}

// groupOnlineCount is the number of online members of gid.
func (h *hub) groupOnlineCount(gid string) int {
	gs := &h.groups[shard(gid)]
	gs.mu.RLock()
	defer gs.mu.RUnlock()
	if g := gs.m[gid]; g != nil {
		return len(g.members)
	}
	return 0
}

// offlineOf returns the users of members that have no connection here,
// under one lock of gid's online set rather than one session lookup per
// member (the online set holds exactly the group's online members: login
// rejoins every group, the last disconnect leaves them).
func (h *hub) offlineOf(gid string, members []string) []string {
	gs := &h.groups[shard(gid)]
	gs.mu.RLock()
	defer gs.mu.RUnlock()
	g := gs.m[gid]
	var out []string
	for _, m := range members {
		if g == nil {
			out = append(out, m)
		} else if _, ok := g.members[m]; !ok {
			out = append(out, m)
		}
	}
	return out
}

// without returns f less user except's connections (f itself if except is
// empty or not in it).
func (f *fanout) without(except string) *fanout {
	i := -1
	if except != "" {
		i = slices.Index(f.users, except)
	}
	if i < 0 {
		return f
	}
	end := len(f.conns)
	if i+1 < len(f.first) {
		end = f.first[i+1]
	}
	n := end - f.first[i]
	g := &fanout{
		users: slices.Concat(f.users[:i], f.users[i+1:]),
		conns: slices.Concat(f.conns[:f.first[i]], f.conns[end:]),
		first: slices.Clone(f.first[:i]),
	}
	for _, x := range f.first[i+1:] {
		g.first = append(g.first, x-n)
	}
	return g
}

// users returns the ids of all online users, sorted, for stable paging.
func (h *hub) users() []string {
	var out []string
	for i := range h.sessions {
		sh := &h.sessions[i]
		sh.mu.RLock()
		for uid := range sh.m {
			out = append(out, uid)
		}
		sh.mu.RUnlock()
	}
	sort.Strings(out)
	return out
}

// sessions is the number of logged-in connections.
func (h *hub) sessionCount() int { return int(h.nconns.Load()) }
