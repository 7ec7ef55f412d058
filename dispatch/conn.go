package dispatch

import (
	"time"

	"jim/codec"
)

// Conn is one client connection as the gateway exposes it to dispatch. All
// methods must be safe to call from any goroutine.
type Conn interface {
	// ID is unique among the gateway's live connections.
	ID() uint64
	// Protocol is "tcp", "ws" or "http"; it becomes the user's terminal.
	Protocol() string
	// RemoteAddr is the peer address, for logs.
	RemoteAddr() string
	// Send queues m for writing and never blocks. It returns false if the
	// connection is closed or over its outbound cap (the gateway then closes
	// it).
	Send(m *codec.Outbound) bool
	// Close closes the connection once queued writes are flushed. It is
	// idempotent.
	Close(reason string)
	// UserID is the logged-in user, "" until login.
	UserID() string
	// SetUserID records the logged-in user.
	SetUserID(id string)
}

// Packet is one decoded request. Body is owned by dispatch from the moment it
// is passed to Handle: the gateway must not reuse its memory.
type Packet struct {
	Cmd    codec.Cmd
	Seq    int32
	HasSeq bool
	Body   []byte
	// arrived is when a chat packet was queued for its worker, so that the
	// reply's latency includes the wait for the worker.
	arrived time.Time
}

// respCmd is the command a reply to req goes out under: J-IM's pairs (§1),
// cmd 0 for anything without a reply of its own.
func respCmd(req codec.Cmd) codec.Cmd {
	switch req {
	case codec.CmdHandshakeReq, codec.CmdAuthReq, codec.CmdLoginReq, codec.CmdJoinGroupReq,
		codec.CmdChatReq, codec.CmdGetUserReq, codec.CmdGetMessageReq:
		return req + 1
	case codec.CmdHeartbeatReq, codec.CmdCloseReq, codec.CmdExitGroupReq:
		return req
	}
	return codec.CmdUnknown
}

// Multicaster queues one message on many connections at once, which a
// transport can do far more cheaply than Conn.Send on each (the gateway
// hands each event loop one job per message). Dispatch uses it, when set
// with SetMulticaster, for group messages and notices.
type Multicaster interface {
	// SendMany queues m on every connection of conns, never blocking, and
	// appends to failed the indexes in conns of those that refused it.
	SendMany(conns []Conn, m *codec.Outbound, failed []int) []int
}
