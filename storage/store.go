// Package storage owns jim's durable state: chat messages (history per
// conversation, with a per-conversation sequence number), offline queues, and
// durable group membership. It defines the Store interface that dispatch writes
// through and an in-memory implementation; disk (Badger) and cluster (NATS
// JetStream) implementations satisfy the same interface.
//
// The interface is deliberately free of backend types and small: every method
// is one logical operation that a backend can make atomic on its own.
package storage

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"sync/atomic"
)

// History paging limits. A query without a count gets DefaultHistoryCount
// messages; larger counts are clipped to MaxHistoryCount so one request cannot
// make the server build an unbounded reply.
const (
	DefaultHistoryCount = 100
	MaxHistoryCount     = 1000
)

// Chat types, the same numbers as J-IM's ChatType.
const (
	ChatGroup   = 1
	ChatPrivate = 2
)

// ErrClosed is returned by every method of a Store after Close.
var ErrClosed = errors.New("storage: store closed")

// Message is one chat message as stored. ID and Seq are assigned by the store
// in Append; everything else is the sender's (already validated) message.
type Message struct {
	ID         string // server-assigned, unique
	Seq        uint64 // 1, 2, 3, ... within Conv
	Conv       string // conversation key: PrivateConv or GroupConv
	ChatType   int    // ChatGroup or ChatPrivate
	From       string
	To         string // private chats only
	GroupID    string // group chats only
	MsgType    int
	Content    string
	CreateTime int64  // ms since the Unix epoch
	Extras     []byte // raw JSON object, or nil
	ClientID   string // the sender's own message id, used for de-duplication
}

// Clone returns a deep copy, so a caller never shares mutable state with a
// store.
func (m *Message) Clone() *Message {
	c := *m
	if m.Extras != nil {
		c.Extras = append([]byte(nil), m.Extras...)
	}
	return &c
}

// PrivateConv is the conversation key of the private chat between users a and
// b: "p:" + the smaller id + NUL + the larger id. Ordering the pair makes both
// directions one conversation; NUL cannot occur in a user id that came through
// JSON validation in practice, so distinct pairs never collide the way J-IM's
// "a-b" keys can when ids contain '-'.
func PrivateConv(a, b string) string {
	if b < a {
		a, b = b, a
	}
	return "p:" + a + "\x00" + b
}

// GroupConv is the conversation key of group gid: "g:" + gid.
func GroupConv(gid string) string { return "g:" + gid }

// Ack is the result of Append.
type Ack struct {
	ID        string
	Seq       uint64
	Duplicate bool // the message had been stored before; this is the original Ack
}

// Query selects a window of one conversation's history. Results are always
// oldest first.
//
// Begin and End bound CreateTime (ms, inclusive; 0 leaves that side open).
// AfterSeq keeps only messages with a greater Seq (resuming after the last one
// a client saw). Count is clipped to [1, MaxHistoryCount], 0 meaning
// DefaultHistoryCount. Offset skips that many matching messages counted from
// the oldest, as J-IM's LIMIT offset,count does. Latest, when Offset is 0,
// returns the newest Count matching messages instead of the oldest ones: it is
// what a "show me recent history" request without paging wants.
type Query struct {
	Begin, End int64
	Offset     int
	Count      int
	AfterSeq   uint64
	Latest     bool
}

// Limit returns the effective page size of q.
func (q Query) Limit() int {
	switch {
	case q.Count <= 0:
		return DefaultHistoryCount
	case q.Count > MaxHistoryCount:
		return MaxHistoryCount
	}
	return q.Count
}

// window cuts the page q asks for out of match, the messages that passed
// q's filters, oldest first: Count from Offset, or with Latest the newest
// Count.
func (q Query) window(match []*Message) []*Message {
	limit := q.Limit()
	switch {
	case q.Offset > 0:
		if q.Offset >= len(match) {
			match = nil
		} else {
			match = match[q.Offset:]
		}
		if len(match) > limit {
			match = match[:limit]
		}
	case q.Latest && len(match) > limit:
		match = match[len(match)-limit:]
	case len(match) > limit:
		match = match[:limit]
	}
	return match
}

// OfflineFilter selects part of a user's offline queue. From keeps private
// messages sent by that user; GroupID keeps that group's messages; both empty
// keeps everything. Limit caps the result (0 = MaxHistoryCount).
type OfflineFilter struct {
	From    string
	GroupID string
	Limit   int
}

// Store is jim's persistence. Implementations are safe for concurrent use.
type Store interface {
	// Append makes msg durable: it assigns ID and the next Seq of msg.Conv at
	// one write point and queues an offline copy for each user in offline,
	// atomically. msg.ID and msg.Seq are set on success. A message whose
	// (From, ClientID) was already stored (ClientID non-empty) stores nothing
	// and returns the original Ack with Duplicate set, so a client's retry
	// after a lost ack is not delivered twice.
	Append(ctx context.Context, msg *Message, offline []string) (Ack, error)

	// AppendAsync is Append without the wait: it queues msg (blocking only
	// while the store's bounded input is full) and returns; done is called
	// exactly once, when msg is durable or has failed, usually from the
	// store's own goroutine. For one store, done calls come in the order
	// the messages got their seqs, so a caller that hands them on to one
	// queue per conversation delivers every conversation in order. done must
	// return quickly and must not call the store. msg.ID and msg.Seq are set
	// before done runs.
	AppendAsync(ctx context.Context, msg *Message, offline []string, done func(Ack, error))

	// History returns a window of conv's messages, oldest first.
	History(ctx context.Context, conv string, q Query) ([]*Message, error)

	// Offline returns user's queued offline messages matching f, oldest first.
	// They stay queued until AckOffline.
	Offline(ctx context.Context, user string, f OfflineFilter) ([]*Message, error)

	// QueueOffline adds messages that Append already stored to user's
	// offline queue, for a recipient found online whose connections all
	// refused the delivery (they closed between the check and the send).
	// A message already queued for user is not queued twice.
	QueueOffline(ctx context.Context, user string, msgs []*Message) error

	// AckOffline removes msgs (by ID) from user's offline queue; callers call
	// it once the messages were handed to the user's connection.
	AckOffline(ctx context.Context, user string, msgs []*Message) error

	// JoinGroup records uid as a member of gid; it is idempotent.
	JoinGroup(ctx context.Context, gid, uid string) error
	// LeaveGroup removes the membership; it is idempotent.
	LeaveGroup(ctx context.Context, gid, uid string) error
	// GroupMembers lists gid's members in no particular order.
	GroupMembers(ctx context.Context, gid string) ([]string, error)
	// UserGroups lists the groups uid is a member of, in no particular order.
	UserGroups(ctx context.Context, uid string) ([]string, error)

	// Close releases the store; later calls return ErrClosed.
	Close() error
}

var (
	idPrefix  [8]byte
	idCounter atomic.Uint64
)

func init() {
	if _, err := rand.Read(idPrefix[:]); err != nil {
		panic("storage: no randomness for message ids: " + err.Error())
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	idCounter.Store(binary.BigEndian.Uint64(b[:]) >> 16)
}

// NewID returns a new message id: 32 lowercase hex digits, the shape of
// J-IM's dash-less UUIDs. A random per-process prefix plus a counter keeps ids
// unique across processes without paying for randomness per message.
func NewID() string {
	var b [16]byte
	copy(b[:8], idPrefix[:])
	binary.BigEndian.PutUint64(b[8:], idCounter.Add(1))
	return hex.EncodeToString(b[:])
}
