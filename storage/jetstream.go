package storage

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// JetStreamOptions tune OpenJetStream. The zero value is a working setup.
type JetStreamOptions struct {
	// Prefix names the streams and buckets (default "JIM"): streams
	// <Prefix>_MSGS and <Prefix>_OFFLINE, key-value buckets <Prefix>_DEDUP
	// and <Prefix>_GROUPS; subjects start with the lower-cased prefix. Two
	// jim clusters can share one NATS system under different prefixes.
	Prefix string
	// Replicas is the replication factor of every stream and bucket
	// (default 1). Use 3 on a NATS cluster of 3 or more servers: an
	// acknowledged message then survives the loss of any one server.
	Replicas int
	// DedupTTL is how long a sender's client message id is remembered for
	// de-duplication (default 24 hours).
	DedupTTL time.Duration
	// DuplicateWindow is JetStream's own Nats-Msg-Id window on the message
	// stream (default 2 minutes). It closes the race of two nodes storing
	// the same client message at once; DedupTTL covers the longer term.
	DuplicateWindow time.Duration
	// RetentionAge drops messages older than this (by store time) from
	// history; 0 keeps them forever.
	RetentionAge time.Duration
	// OfflineCap is the number of offline messages kept per user; older
	// ones are dropped first (default 10000; negative: no cap).
	OfflineCap int
	// OfflineTTL drops an offline reference this long after it was
	// queued (the offline stream's MaxAge); 0 means RetentionAge, and with
	// that 0 too, kept until read or capped.
	OfflineTTL time.Duration
	// Timeout bounds each JetStream request (default 5 seconds).
	Timeout time.Duration
	// QueueLen bounds the appends waiting to be stored (default 16384); a
	// full queue makes AppendAsync wait.
	QueueLen int
	// MaxGroupWatches caps the groups whose membership is cached and kept
	// current by a watch (default 10000).
	MaxGroupWatches int
	// Logger receives warnings (default slog.Default()).
	Logger *slog.Logger
}

func (o *JetStreamOptions) defaults() {
	if o.Prefix == "" {
		o.Prefix = "JIM"
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.DedupTTL <= 0 {
		o.DedupTTL = 24 * time.Hour
	}
	if o.DuplicateWindow <= 0 {
		o.DuplicateWindow = 2 * time.Minute
	}
	if o.OfflineCap == 0 {
		o.OfflineCap = 10000
	}
	if o.OfflineCap < 0 {
		o.OfflineCap = -1 // JetStream's "no limit"
	}
	if o.OfflineTTL <= 0 {
		o.OfflineTTL = max(o.RetentionAge, 0)
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.QueueLen <= 0 {
		o.QueueLen = 16384
	}
	if o.MaxGroupWatches <= 0 {
		o.MaxGroupWatches = 10000
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// maxJSPart is the longest id the JetStream store accepts. Ids become
// base64 subject tokens; NATS caps a protocol line at 4 KiB, and a private
// conversation subject holds two ids.
const maxJSPart = 1000

var errJSKeyTooLong = errors.New("storage: id longer than 1000 bytes")

// JetStream is the Store of cluster mode, on NATS JetStream: every jimd node
// of a cluster opens one on the same NATS system and they share all state.
//
// Layout (P = Prefix, p = lower-cased Prefix, tok(x) = base64url of x
// without padding, "-" for the empty string):
//
//	stream P_MSGS     subjects p.m.<tok(conv)>.<seq>    one message each
//	stream P_OFFLINE  subjects p.o.<tok(user)>          offline references
//	KV P_DEDUP        key d<hex sha256(from NUL clientId)[:16]> = seq:8 + id
//	KV P_GROUPS       keys g.<tok(gid)>.<tok(uid)> and u.<tok(uid)>.<tok(gid)>,
//	                  value "1" member, "0" left
//
// A conversation's messages have one subject each, so message n is one
// direct get, and the last one is the last message on p.m.<tok(conv)>.*.
// Seqs are assigned by optimistic concurrency: message n is published with
// Nats-Expected-Last-Subject-Sequence 0 on its own subject, which JetStream
// accepts only if no message n exists; a node publishes n only once it saw
// n-1 stored, so seqs are gap-free and unique across nodes. A loser
// re-reads the last seq and tries again. Within one node, a conversation
// has one append in flight at a time (different conversations run in
// parallel), which also keeps its done calls in seq order.
//
// An append is acknowledged after JetStream acknowledged (stored, and with
// Replicas > 1 replicated to a quorum) the message, then its offline
// references, then its dedup record, in that order: a crash in between can
// make a retry store the message again, never ack a message that is not
// stored.
type JetStream struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	opts JetStreamOptions
	log  *slog.Logger

	msgs, off     jetstream.Stream
	dedup, groups jetstream.KeyValue
	msgsName      string
	offName       string
	groupsStream  string
	subjM, subjO  string // "p.m.", "p.o."
	bg            context.Context
	cancel        context.CancelFunc
	closeMu       sync.RWMutex
	closed        bool
	slots         chan struct{}
	pending       sync.WaitGroup
	qmu           sync.Mutex
	queues        map[string]*jsConvQueue
	smu           sync.Mutex
	seqs          map[string]uint64 // conv -> last seq seen stored
	dmu           sync.Mutex
	recent        map[string]Ack // recent dedup keys, bounded
	gmu           sync.Mutex
	watches       map[string]*groupWatch
}

type jsReq struct {
	ctx     context.Context
	msg     *Message
	orig    *Message
	offline []string
	done    func(Ack, error)
}

type jsConvQueue struct{ reqs []*jsReq }

// OpenJetStream creates (or updates to the configured settings) the
// streams and buckets of the store on nc's JetStream and returns the store.
// nc stays the caller's: Close does not close it.
func OpenJetStream(nc *nats.Conn, opts JetStreamOptions) (*JetStream, error) {
	opts.defaults()
	if nc == nil {
		return nil, errors.New("storage: OpenJetStream needs a NATS connection")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("storage: jetstream: %w", err)
	}
	p := strings.ToLower(opts.Prefix)
	s := &JetStream{
		nc:       nc,
		js:       js,
		opts:     opts,
		log:      opts.Logger,
		msgsName: opts.Prefix + "_MSGS",
		offName:  opts.Prefix + "_OFFLINE",
		subjM:    p + ".m.",
		subjO:    p + ".o.",
		slots:    make(chan struct{}, opts.QueueLen),
		queues:   make(map[string]*jsConvQueue),
		seqs:     make(map[string]uint64),
		recent:   make(map[string]Ack),
		watches:  make(map[string]*groupWatch),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*opts.Timeout)
	defer cancel()
	s.msgs, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        s.msgsName,
		Description: "jim chat history: one subject per message",
		Subjects:    []string{s.subjM + ">"},
		Storage:     jetstream.FileStorage,
		Replicas:    opts.Replicas,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      opts.RetentionAge,
		Duplicates:  dupWindow(opts.DuplicateWindow, opts.RetentionAge),
		AllowDirect: true,
	})
	if err != nil {
		return nil, fmt.Errorf("storage: stream %s: %w", s.msgsName, err)
	}
	s.off, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              s.offName,
		Description:       "jim offline queues: one subject per user",
		Subjects:          []string{s.subjO + ">"},
		Storage:           jetstream.FileStorage,
		Replicas:          opts.Replicas,
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		MaxMsgsPerSubject: int64(opts.OfflineCap),
		MaxAge:            opts.OfflineTTL,
		Duplicates:        dupWindow(opts.DuplicateWindow, opts.OfflineTTL),
		AllowDirect:       true,
	})
	if err != nil {
		return nil, fmt.Errorf("storage: stream %s: %w", s.offName, err)
	}
	s.dedup, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      opts.Prefix + "_DEDUP",
		Description: "jim client message ids, for de-duplication",
		TTL:         opts.DedupTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    opts.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("storage: bucket %s_DEDUP: %w", opts.Prefix, err)
	}
	s.groups, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      opts.Prefix + "_GROUPS",
		Description: "jim group membership",
		Storage:     jetstream.FileStorage,
		Replicas:    opts.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("storage: bucket %s_GROUPS: %w", opts.Prefix, err)
	}
	s.groupsStream = "KV_" + opts.Prefix + "_GROUPS"
	s.bg, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// tok encodes an arbitrary id as one subject token (and KV key part).
func tok(s string) string {
	if s == "" {
		return "-"
	}
	return base64.RawURLEncoding.EncodeToString([]byte(s))
}

func untok(t string) (string, error) {
	if t == "-" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(t)
	return string(b), err
}

func jsPartsOK(ss ...string) error {
	for _, s := range ss {
		if len(s) > maxJSPart {
			return errJSKeyTooLong
		}
	}
	return nil
}

func (s *JetStream) msgSubj(conv string, seq uint64) string {
	return s.subjM + tok(conv) + "." + strconv.FormatUint(seq, 10)
}

func (s *JetStream) convWild(conv string) string { return s.subjM + tok(conv) + ".*" }

func jsDedupKey(from, clientID string) string {
	h := sha256.New()
	h.Write([]byte(from))
	h.Write([]byte{0})
	h.Write([]byte(clientID))
	return "d" + hex.EncodeToString(h.Sum(nil)[:16])
}

func (s *JetStream) ctx(parent context.Context) (context.Context, context.CancelFunc) {
	if parent == nil {
		parent = context.Background()
	}
	return context.WithTimeout(parent, s.opts.Timeout)
}

// enter fails with ErrClosed after Close; otherwise the caller must call
// leave when done.
func (s *JetStream) enter() error {
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return ErrClosed
	}
	s.pending.Add(1)
	s.closeMu.RUnlock()
	return nil
}

func (s *JetStream) leave() { s.pending.Done() }

// Append implements Store.
func (s *JetStream) Append(ctx context.Context, msg *Message, offline []string) (Ack, error) {
	type res struct {
		a   Ack
		err error
	}
	ch := make(chan res, 1)
	s.AppendAsync(ctx, msg, offline, func(a Ack, err error) { ch <- res{a, err} })
	r := <-ch
	return r.a, r.err
}

// AppendAsync implements Store. done runs once JetStream acknowledged the
// message, its offline references and its dedup record; for one
// conversation, done calls come in seq order.
func (s *JetStream) AppendAsync(ctx context.Context, msg *Message, offline []string, done func(Ack, error)) {
	// The client id is part of the dedup record's key, a NATS subject.
	if err := jsPartsOK(msg.Conv, msg.From, msg.ClientID); err != nil {
		done(Ack{}, err)
		return
	}
	if err := jsPartsOK(offline...); err != nil {
		done(Ack{}, err)
		return
	}
	if err := s.enter(); err != nil {
		done(Ack{}, err)
		return
	}
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		s.leave()
		done(Ack{}, ctx.Err())
		return
	}
	r := &jsReq{ctx: ctx, msg: msg.Clone(), orig: msg, offline: offline, done: done}
	s.qmu.Lock()
	q := s.queues[msg.Conv]
	start := q == nil
	if start {
		q = &jsConvQueue{}
		s.queues[msg.Conv] = q
	}
	q.reqs = append(q.reqs, r)
	s.qmu.Unlock()
	if start {
		go s.runConv(msg.Conv, q)
	}
}

// runConv stores conv's queued appends one after the other.
func (s *JetStream) runConv(conv string, q *jsConvQueue) {
	for {
		s.qmu.Lock()
		if len(q.reqs) == 0 {
			delete(s.queues, conv)
			s.qmu.Unlock()
			return
		}
		r := q.reqs[0]
		q.reqs[0] = nil
		q.reqs = q.reqs[1:]
		s.qmu.Unlock()
		a, err := s.appendOne(r)
		if err == nil && !a.Duplicate {
			r.orig.ID, r.orig.Seq = a.ID, a.Seq
		}
		r.done(a, err)
		<-s.slots
		s.leave()
	}
}

func isWrongLast(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
	}
	return false
}

func (s *JetStream) appendOne(r *jsReq) (Ack, error) {
	if err := r.ctx.Err(); err != nil {
		return Ack{}, err
	}
	m := r.msg
	var dk string
	msgID := ""
	if m.ClientID != "" {
		dk = jsDedupKey(m.From, m.ClientID)
		if a, ok, err := s.lookupDedup(r.ctx, dk); err != nil {
			return Ack{}, err
		} else if ok {
			return a, nil
		}
		msgID = dk
	}
	m.ID = NewID()
	if msgID == "" {
		msgID = m.ID
	}
	body := encodeMsg(nil, m)
	for attempt := 0; ; attempt++ {
		last, err := s.lastSeq(r.ctx, m.Conv)
		if err != nil {
			return Ack{}, err
		}
		m.Seq = last + 1
		nm := &nats.Msg{Subject: s.msgSubj(m.Conv, m.Seq), Data: body, Header: nats.Header{}}
		nm.Header.Set(jetstream.MsgIDHeader, msgID)
		nm.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
		ctx, cancel := s.ctx(r.ctx)
		pa, err := s.js.PublishMsg(ctx, nm)
		cancel()
		if err != nil {
			if isWrongLast(err) && attempt < 100 {
				// Another node took this seq: learn the new last one.
				s.forgetSeq(m.Conv)
				if attempt >= 2 {
					time.Sleep(time.Duration(rand.IntN(1000*(attempt+1))) * time.Microsecond)
				}
				continue
			}
			return Ack{}, fmt.Errorf("storage: storing message: %w", err)
		}
		if pa.Duplicate {
			// The same client message was stored moments ago (by this
			// or another node): answer with the original.
			orig, err := s.msgAt(r.ctx, pa.Sequence)
			if err != nil {
				return Ack{}, err
			}
			a := Ack{ID: orig.ID, Seq: orig.Seq, Duplicate: true}
			s.remember(dk, a)
			return a, nil
		}
		s.setSeq(m.Conv, m.Seq)
		break
	}
	if len(r.offline) > 0 {
		if err := s.queueRefs(r.ctx, r.offline, m); err != nil {
			return Ack{}, err
		}
	}
	a := Ack{ID: m.ID, Seq: m.Seq}
	if dk != "" {
		ctx, cancel := s.ctx(r.ctx)
		_, err := s.dedup.Put(ctx, dk, encodeJSAck(a))
		cancel()
		if err != nil {
			return Ack{}, fmt.Errorf("storage: storing dedup record: %w", err)
		}
		s.remember(dk, a)
	}
	return a, nil
}

func encodeJSAck(a Ack) []byte {
	b := binary.BigEndian.AppendUint64(nil, a.Seq)
	return append(b, a.ID...)
}

func (s *JetStream) lookupDedup(parent context.Context, dk string) (Ack, bool, error) {
	s.dmu.Lock()
	a, ok := s.recent[dk]
	s.dmu.Unlock()
	if ok {
		a.Duplicate = true
		return a, true, nil
	}
	ctx, cancel := s.ctx(parent)
	defer cancel()
	e, err := s.dedup.Get(ctx, dk)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Ack{}, false, nil
	}
	if err != nil {
		return Ack{}, false, fmt.Errorf("storage: reading dedup record: %w", err)
	}
	v := e.Value()
	if len(v) < 8 {
		return Ack{}, false, errCorrupt
	}
	a = Ack{Seq: binary.BigEndian.Uint64(v), ID: string(v[8:]), Duplicate: true}
	return a, true, nil
}

const recentMax = 1 << 16

func (s *JetStream) remember(dk string, a Ack) {
	if dk == "" {
		return
	}
	a.Duplicate = false
	s.dmu.Lock()
	if len(s.recent) >= recentMax {
		clear(s.recent) // everything in it is also in the bucket
	}
	s.recent[dk] = a
	s.dmu.Unlock()
}

// lastSeq is conv's last stored seq, from the cache or JetStream.
func (s *JetStream) lastSeq(parent context.Context, conv string) (uint64, error) {
	s.smu.Lock()
	n, ok := s.seqs[conv]
	s.smu.Unlock()
	if ok {
		return n, nil
	}
	n, _, err := s.seqAt(parent, directReq{LastFor: s.convWild(conv)})
	return n, err
}

// seqAt fetches the one message req selects and returns its seq (from its
// subject); found is false when there is none.
func (s *JetStream) seqAt(parent context.Context, req directReq) (n uint64, found bool, err error) {
	ctx, cancel := s.ctx(parent)
	defer cancel()
	ms, err := s.direct(ctx, s.msgsName, req)
	if err != nil || len(ms) == 0 {
		return 0, false, err
	}
	n, err = seqOfSubj(ms[0].subj)
	return n, err == nil, err
}

func seqOfSubj(subj string) (uint64, error) {
	i := strings.LastIndexByte(subj, '.')
	n, err := strconv.ParseUint(subj[i+1:], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: subject %q", errCorrupt, subj)
	}
	return n, nil
}

func (s *JetStream) setSeq(conv string, n uint64) {
	s.smu.Lock()
	if len(s.seqs) >= seqCacheMax {
		clear(s.seqs)
	}
	s.seqs[conv] = n
	s.smu.Unlock()
}

func (s *JetStream) forgetSeq(conv string) {
	s.smu.Lock()
	delete(s.seqs, conv)
	s.smu.Unlock()
}

// msgAt reads the message at stream sequence seq.
func (s *JetStream) msgAt(parent context.Context, seq uint64) (*Message, error) {
	ctx, cancel := s.ctx(parent)
	defer cancel()
	ms, err := s.direct(ctx, s.msgsName, directReq{Seq: seq})
	if err != nil {
		return nil, err
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("storage: message at stream sequence %d is gone", seq)
	}
	return s.decode(ms[0])
}

// decode turns a stored message back into a Message.
func (s *JetStream) decode(r rawMsg) (*Message, error) {
	rest, ok := strings.CutPrefix(r.subj, s.subjM)
	i := strings.LastIndexByte(rest, '.')
	if !ok || i < 0 {
		return nil, fmt.Errorf("%w: subject %q", errCorrupt, r.subj)
	}
	conv, err := untok(rest[:i])
	if err != nil {
		return nil, fmt.Errorf("%w: subject %q", errCorrupt, r.subj)
	}
	seq, err := strconv.ParseUint(rest[i+1:], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: subject %q", errCorrupt, r.subj)
	}
	return decodeMsg(conv, seq, r.data)
}

// Close implements Store. It waits for queued appends to finish; the NATS
// connection stays open.
func (s *JetStream) Close() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return nil
	}
	s.closed = true
	s.closeMu.Unlock()
	s.pending.Wait()
	s.gmu.Lock()
	for gid, w := range s.watches {
		w.stop()
		delete(s.watches, gid)
	}
	s.gmu.Unlock()
	s.cancel()
	return nil
}

var _ Store = (*JetStream)(nil)

// dupWindow is a stream's duplicate window: JetStream refuses one longer
// than the stream's MaxAge (0: none).
func dupWindow(w, maxAge time.Duration) time.Duration {
	if maxAge > 0 {
		return min(w, maxAge)
	}
	return w
}
