package storage

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// directReq is JetStream's direct-get request ($JS.API.DIRECT.GET.<stream>).
type directReq struct {
	Seq       uint64   `json:"seq,omitempty"`
	LastFor   string   `json:"last_by_subj,omitempty"`
	NextFor   string   `json:"next_by_subj,omitempty"`
	Batch     int      `json:"batch,omitempty"`
	MultiLast []string `json:"multi_last,omitempty"`
}

type rawMsg struct {
	subj string
	seq  uint64
	data []byte
}

// direct runs a direct get. Batch and multi-last requests return every
// message up to the end-of-batch marker; the reply of a single get is one
// message or none. A direct get is answered by any replica of the stream,
// not only its leader, and needs no consumer.
func (s *JetStream) direct(ctx context.Context, stream string, req directReq) ([]rawMsg, error) {
	ms, _, err := s.directN(ctx, stream, req)
	return ms, err
}

// directN is direct that also returns, for a batch, how many matching
// messages remain after the ones returned.
func (s *JetStream) directN(ctx context.Context, stream string, req directReq) ([]rawMsg, uint64, error) {
	body, _ := json.Marshal(req)
	subj := "$JS.API.DIRECT.GET." + stream
	batch := req.Batch > 0 || len(req.MultiLast) > 0
	if !batch {
		resp, err := s.nc.RequestWithContext(ctx, subj, body)
		if err != nil {
			return nil, 0, fmt.Errorf("storage: reading %s: %w", stream, err)
		}
		switch replyStatus(resp) {
		case "":
		case "404":
			return nil, 0, nil
		default:
			return nil, 0, fmt.Errorf("storage: reading %s: status %s %s", stream, resp.Header.Get("Status"), resp.Header.Get("Description"))
		}
		return []rawMsg{toRaw(resp)}, 0, nil
	}
	inbox := s.nc.NewRespInbox()
	sub, err := s.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, 0, err
	}
	defer sub.Unsubscribe()
	if err := s.nc.PublishRequest(subj, inbox, body); err != nil {
		return nil, 0, err
	}
	var out []rawMsg
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return nil, 0, fmt.Errorf("storage: reading %s: %w", stream, err)
		}
		switch replyStatus(m) {
		case "":
			out = append(out, toRaw(m))
		case "204": // end of batch
			np, _ := strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64)
			return out, np, nil
		case "404":
			return out, 0, nil
		default:
			return nil, 0, fmt.Errorf("storage: reading %s: status %s %s", stream, m.Header.Get("Status"), m.Header.Get("Description"))
		}
	}
}

// replyStatus is the server's status of a direct-get reply ("" for a stored
// message). The server's status replies (404, 204 end of batch, 408, 503)
// carry no body; every message jim stores has one. Without that check a
// stored message whose publisher set a Status header of its own would read
// as one: "404" would cut an offline queue short, "503" fail every read.
func replyStatus(m *nats.Msg) string {
	if len(m.Data) > 0 {
		return ""
	}
	return m.Header.Get("Status")
}

// toRaw reads a stored message from a direct-get reply. The reply carries
// the message's own headers, which its publisher chose, followed by the
// server's: of a header both have, the server's is the last.
func toRaw(m *nats.Msg) rawMsg {
	seq, _ := strconv.ParseUint(lastHeader(m.Header, jetstream.SequenceHeader), 10, 64)
	return rawMsg{subj: lastHeader(m.Header, jetstream.SubjectHeader), seq: seq, data: m.Data}
}

func lastHeader(h nats.Header, key string) string {
	if v := h.Values(key); len(v) > 0 {
		return v[len(v)-1]
	}
	return ""
}

// scan reads the messages matching filter from stream sequence from on, in
// order, calling fn for each until it returns false. It pages in batches.
func (s *JetStream) scan(parent context.Context, stream, filter string, from uint64, fn func(rawMsg) (bool, error)) error {
	if from == 0 {
		from = 1
	}
	for {
		ctx, cancel := s.ctx(parent)
		ms, np, err := s.directN(ctx, stream, directReq{Seq: from, NextFor: filter, Batch: 1000})
		cancel()
		if err != nil {
			return err
		}
		if len(ms) == 0 {
			return nil
		}
		for _, m := range ms {
			more, err := fn(m)
			if err != nil || !more {
				return err
			}
		}
		if np == 0 {
			return nil
		}
		// Stream sequences come from reply headers: one that does not
		// move forward would page through the same messages forever.
		next := ms[len(ms)-1].seq + 1
		if next <= from {
			return fmt.Errorf("%w: %s stream sequence %d after %d", errCorrupt, stream, next-1, from)
		}
		from = next
	}
}

// History implements Store.
func (s *JetStream) History(parent context.Context, conv string, q Query) ([]*Message, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	if err := jsPartsOK(conv); err != nil {
		return nil, err
	}
	wild := s.convWild(conv)
	lastN, found, err := s.seqAt(parent, directReq{LastFor: wild})
	if err != nil || !found {
		return []*Message{}, err
	}
	limit := q.Limit()
	if q.Begin == 0 && q.End == 0 {
		// Seqs are contiguous, so the window is arithmetic; only the
		// oldest end can be missing (retention).
		// The first message's stream sequence is needed below too, so this
		// one is fetched whole rather than through seqAt.
		ctx, cancel := s.ctx(parent)
		first, err := s.direct(ctx, s.msgsName, directReq{Seq: 1, NextFor: wild})
		cancel()
		if err != nil {
			return nil, err
		}
		if len(first) == 0 {
			return []*Message{}, nil
		}
		firstN, err := seqOfSubj(first[0].subj)
		if err != nil {
			return nil, err
		}
		lo := max(firstN, q.AfterSeq+1)
		if lo > lastN {
			return []*Message{}, nil
		}
		start := lo
		switch {
		case q.Offset > 0:
			start = lo + uint64(q.Offset)
		case q.Latest && lastN-lo+1 > uint64(limit):
			start = lastN - uint64(limit) + 1
		}
		if start > lastN {
			return []*Message{}, nil
		}
		end := min(lastN, start+uint64(limit)-1)
		from := first[0].seq
		if start != firstN {
			ctx, cancel := s.ctx(parent)
			at, err := s.direct(ctx, s.msgsName, directReq{LastFor: s.msgSubj(conv, start)})
			cancel()
			if err != nil {
				return nil, err
			}
			if len(at) > 0 {
				from = at[0].seq
			}
		}
		out := make([]*Message, 0, end-start+1)
		err = s.scan(parent, s.msgsName, wild, from, func(r rawMsg) (bool, error) {
			m, err := s.decode(r)
			if err != nil {
				return false, err
			}
			if m.Seq < start {
				return true, nil
			}
			if m.Seq > end {
				return false, nil
			}
			out = append(out, m)
			return m.Seq < end, nil
		})
		if err != nil {
			return nil, err
		}
		return out, nil
	}
	// A time window: createTime is the sender's and not ordered by seq,
	// so the conversation is scanned.
	var match []*Message
	err = s.scan(parent, s.msgsName, wild, 1, func(r rawMsg) (bool, error) {
		m, err := s.decode(r)
		if err != nil {
			return false, err
		}
		if m.Seq <= q.AfterSeq || (q.Begin != 0 && m.CreateTime < q.Begin) || (q.End != 0 && m.CreateTime > q.End) {
			return m.Seq < lastN, nil
		}
		match = append(match, m)
		if q.Offset == 0 && !q.Latest && len(match) == limit {
			return false, nil
		}
		return m.Seq < lastN, nil
	})
	if err != nil {
		return nil, err
	}
	match = q.window(match)
	if match == nil {
		match = []*Message{}
	}
	return match, nil
}

// Offline references: what the cmd-19 filters need, and where the message
// is.
const offRefFormat = 1

func encodeJSRef(m *Message) []byte {
	b := []byte{offRefFormat}
	b = appendStr(b, m.ID)
	b = appendStr(b, m.Conv)
	b = binary.AppendUvarint(b, m.Seq)
	b = binary.AppendUvarint(b, uint64(m.ChatType))
	b = appendStr(b, m.From)
	b = appendStr(b, m.GroupID)
	return b
}

type jsRef struct {
	id, conv, from, gid string
	seq                 uint64
	chatType            int
	streamSeq           uint64
}

func decodeJSRef(v []byte) (jsRef, error) {
	if len(v) == 0 || v[0] != offRefFormat {
		return jsRef{}, fmt.Errorf("%w: offline reference format", errCorrupt)
	}
	r := reader{b: v[1:]}
	var x jsRef
	x.id = r.str()
	x.conv = r.str()
	x.seq = r.uvarint()
	x.chatType = int(r.uvarint())
	x.from = r.str()
	x.gid = r.str()
	return x, r.err
}

func (s *JetStream) offSubj(user string) string { return s.subjO + tok(user) }

// queueRefs publishes an offline reference to m for each user and waits
// until JetStream acknowledged all of them.
func (s *JetStream) queueRefs(parent context.Context, users []string, m *Message) error {
	ref := encodeJSRef(m)
	futs := make([]jetstream.PubAckFuture, 0, len(users))
	for _, u := range users {
		nm := &nats.Msg{Subject: s.offSubj(u), Data: ref, Header: nats.Header{}}
		nm.Header.Set(jetstream.MsgIDHeader, m.ID+"."+tok(u))
		f, err := s.js.PublishMsgAsync(nm)
		if err != nil {
			return fmt.Errorf("storage: queueing offline copy: %w", err)
		}
		futs = append(futs, f)
	}
	ctx, cancel := s.ctx(parent)
	defer cancel()
	for _, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("storage: queueing offline copy: %w", err)
		case <-ctx.Done():
			return fmt.Errorf("storage: queueing offline copy: %w", ctx.Err())
		}
	}
	return nil
}

// refs reads user's whole offline queue, oldest first.
func (s *JetStream) refs(parent context.Context, user string) ([]jsRef, error) {
	var out []jsRef
	err := s.scan(parent, s.offName, s.offSubj(user), 1, func(r rawMsg) (bool, error) {
		x, err := decodeJSRef(r.data)
		if err != nil {
			s.log.Warn("storage: skipping a corrupt offline reference", "user", user, "seq", r.seq)
			return true, nil
		}
		x.streamSeq = r.seq
		out = append(out, x)
		return true, nil
	})
	return out, err
}

// Offline implements Store.
func (s *JetStream) Offline(parent context.Context, user string, f OfflineFilter) ([]*Message, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	if err := jsPartsOK(user); err != nil {
		return nil, err
	}
	limit := f.Limit
	if limit <= 0 || limit > MaxHistoryCount {
		limit = MaxHistoryCount
	}
	refs, err := s.refs(parent, user)
	if err != nil {
		return nil, err
	}
	var sel []jsRef
	for _, x := range refs {
		if len(sel) == limit {
			break
		}
		if f.From != "" && (x.chatType != ChatPrivate || x.from != f.From) {
			continue
		}
		if f.GroupID != "" && (x.chatType != ChatGroup || x.gid != f.GroupID) {
			continue
		}
		sel = append(sel, x)
	}
	msgs := make([]*Message, len(sel))
	errs := make([]error, len(sel))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i, x := range sel {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			ctx, cancel := s.ctx(parent)
			defer cancel()
			ms, err := s.direct(ctx, s.msgsName, directReq{LastFor: s.msgSubj(x.conv, x.seq)})
			if err != nil {
				errs[i] = err
				return
			}
			if len(ms) == 0 {
				return // removed by retention
			}
			msgs[i], errs[i] = s.decode(ms[0])
		}()
	}
	wg.Wait()
	out := make([]*Message, 0, len(sel))
	var gone []uint64
	for i, m := range msgs {
		if errs[i] != nil {
			return nil, errs[i]
		}
		if m == nil {
			gone = append(gone, sel[i].streamSeq)
			continue
		}
		out = append(out, m)
	}
	for _, seq := range gone {
		ctx, cancel := s.ctx(parent)
		_ = s.off.DeleteMsg(ctx, seq)
		cancel()
	}
	return out, nil
}

// QueueOffline implements Store.
func (s *JetStream) QueueOffline(parent context.Context, user string, msgs []*Message) error {
	if len(msgs) == 0 {
		return nil
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	if err := jsPartsOK(user); err != nil {
		return err
	}
	refs, err := s.refs(parent, user)
	if err != nil {
		return err
	}
	have := make(map[string]bool, len(refs))
	for _, x := range refs {
		have[x.id] = true
	}
	for _, m := range msgs {
		if have[m.ID] {
			continue
		}
		have[m.ID] = true
		if err := s.queueRefs(parent, []string{user}, m); err != nil {
			return err
		}
	}
	return nil
}

// AckOffline implements Store.
func (s *JetStream) AckOffline(parent context.Context, user string, msgs []*Message) error {
	if len(msgs) == 0 {
		return nil
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	if err := jsPartsOK(user); err != nil {
		return err
	}
	ids := make(map[string]bool, len(msgs))
	for _, m := range msgs {
		ids[m.ID] = true
	}
	refs, err := s.refs(parent, user)
	if err != nil {
		return err
	}
	for _, x := range refs {
		if !ids[x.id] {
			continue
		}
		ctx, cancel := s.ctx(parent)
		err := s.off.DeleteMsg(ctx, x.streamSeq)
		cancel()
		if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("storage: removing offline copy: %w", err)
		}
	}
	return nil
}
