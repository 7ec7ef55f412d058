package client

import (
	"context"
	"slices"
	"sort"
	"sync"

	"jim/codec"
	"jim/storage"
)

// maxSeen bounds the out-of-order seqs remembered per conversation. A hole
// that never fills (a private message the user sent from another device)
// would otherwise grow the set forever; past the bound the watermark skips
// the hole.
const maxSeen = 4096

// resumePage is the page size of resume's history requests (jim's maximum).
const resumePage = storage.MaxHistoryCount

// convState tracks the seqs delivered in one conversation. Every seq up to
// contig has been delivered (or predates the client); seen holds delivered
// seqs above it.
type convState struct {
	contig uint64
	seen   map[uint64]struct{}
}

type tracker struct {
	mu    sync.Mutex
	convs map[string]*convState
}

func convKeyPrivate(peer string) string { return "u:" + peer }
func convKeyGroup(gid string) string    { return "g:" + gid }

// convKey names the conversation of m as seen by user me.
func convKey(me string, m *codec.ChatBody) string {
	if m.ChatType == codec.ChatTypeGroup || m.GroupID != "" {
		return convKeyGroup(m.GroupID)
	}
	if m.From == me {
		return convKeyPrivate(m.To)
	}
	return convKeyPrivate(m.From)
}

// markNew records m as delivered and reports whether it was new. A message
// without a seq cannot be tracked and is always new. The first message of
// a conversation sets the baseline: older ones are history, not gaps.
func (t *tracker) markNew(me string, m *codec.ChatBody) bool {
	if m.Seq == 0 {
		return true
	}
	k := convKey(me, m)
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.convs[k]
	if s == nil {
		s = &convState{contig: m.Seq - 1, seen: map[uint64]struct{}{}}
		t.convs[k] = s
	}
	return s.add(m.Seq)
}

// markOwn records a seq taken by our own private message, in a conversation
// already tracked. An untracked one is left alone: its baseline must come
// from a received message, or an earlier message still in flight to us
// would look like a duplicate.
func (t *tracker) markOwn(k string, seq uint64) {
	if seq == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if s := t.convs[k]; s != nil {
		s.add(seq)
	}
}

func (s *convState) add(seq uint64) bool {
	if seq <= s.contig {
		return false
	}
	if _, ok := s.seen[seq]; ok {
		return false
	}
	s.seen[seq] = struct{}{}
	s.advance()
	if len(s.seen) > maxSeen {
		lowest := uint64(0)
		for q := range s.seen {
			if lowest == 0 || q < lowest {
				lowest = q
			}
		}
		s.contig = lowest - 1
		s.advance()
	}
	return true
}

func (s *convState) advance() {
	for {
		if _, ok := s.seen[s.contig+1]; !ok {
			return
		}
		delete(s.seen, s.contig+1)
		s.contig++
	}
}

// snapshot returns each tracked conversation's watermark.
func (t *tracker) snapshot() map[string]uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]uint64, len(t.convs))
	for k, s := range t.convs {
		out[k] = s.contig
	}
	return out
}

// resume fetches what was missed while disconnected and delivers it, then
// the live messages held back meanwhile. Two sources are merged: the
// offline queue (which also covers conversations this client has never
// seen) and, per known conversation, the history after its watermark
// (which covers messages the server pushed into the dying connection).
func (c *Client) resume(ctx context.Context, cn *conn) {
	var missed []codec.ChatBody
	defer func() { c.finishResume(missed) }()

	// offlineOn drains the queue page by page; what it fetched before an
	// error has left the server's queue, so it is delivered all the same.
	msgs, err := c.offlineOn(ctx, cn, OfflineQuery{})
	missed = append(missed, msgs...)
	if err != nil {
		c.log.Warn("client: resume: offline messages", "err", err)
		return
	}
	for k, after := range c.track.snapshot() {
		q := HistoryQuery{Count: resumePage}
		if k[0] == 'g' {
			q.Group = k[2:]
		} else {
			q.Peer = k[2:]
		}
		for {
			q.AfterSeq = after
			msgs, err := c.historyOn(ctx, cn, q)
			if err != nil {
				c.log.Warn("client: resume: history", "conv", k, "err", err)
				return
			}
			missed = append(missed, msgs...)
			// A page may hold fewer than asked for while more follow (the
			// server bounds a reply's bytes too): only an empty one ends.
			if len(msgs) == 0 {
				break
			}
			// A page that does not move past after would be asked for
			// again and again: a server that misbehaves so must not
			// keep the resume looping and growing missed.
			next := msgs[len(msgs)-1].Seq
			if next <= after {
				c.log.Warn("client: resume: history does not advance", "conv", k, "after", after, "last", next)
				break
			}
			after = next
		}
	}
}

// historyOn is History on one connection, without retrying elsewhere.
func (c *Client) historyOn(ctx context.Context, cn *conn, q HistoryQuery) ([]codec.ChatBody, error) {
	typ := codec.FlexInt(codec.MessageTypeHistory)
	req := codec.MessageReq{Type: &typ, UserID: c.userID(), FromUserID: q.Peer, GroupID: q.Group, Count: codec.FlexInt(q.Count)}
	// An explicit afterSeq, even 0, asks for the oldest messages after it
	// rather than the latest page.
	a := codec.FlexInt(q.AfterSeq)
	req.AfterSeq = &a
	d, err := c.getMessages(ctx, cn, &req, codec.StatusGetHistoryMsgOK)
	if err != nil {
		return nil, err
	}
	if q.Group != "" {
		return flatten(d.Groups[q.Group]), nil
	}
	return flatten(d.Friends[q.Peer]), nil
}

// finishResume delivers missed (in seq order per conversation, without
// duplicates and without the user's own private messages, which were never
// pushed to this client), then the held-back live messages, and ends the
// resume.
func (c *Client) finishResume(missed []codec.ChatBody) {
	me := c.userID()
	// Group by conversation in first-appearance order, then by seq.
	order := map[string]int{}
	for i := range missed {
		k := convKey(me, &missed[i])
		if _, ok := order[k]; !ok {
			order[k] = len(order)
		}
	}
	sort.SliceStable(missed, func(i, j int) bool {
		ki, kj := order[convKey(me, &missed[i])], order[convKey(me, &missed[j])]
		if ki != kj {
			return ki < kj
		}
		return missed[i].Seq < missed[j].Seq
	})
	missed = slices.CompactFunc(missed, func(a, b codec.ChatBody) bool {
		return a.Seq != 0 && a.Seq == b.Seq && convKey(me, &a) == convKey(me, &b)
	})

	c.deliverMu.Lock()
	defer c.deliverMu.Unlock()
	for i := range missed {
		m := &missed[i]
		if m.ChatType != codec.ChatTypeGroup && m.From == me {
			c.track.markOwn(convKey(me, m), m.Seq)
			continue
		}
		c.pushLocked(Message{Kind: KindChat, Chat: *m, Resumed: true})
	}
	for _, m := range c.pending {
		c.pushLocked(m)
	}
	c.pending = nil
	c.resuming = false
}
