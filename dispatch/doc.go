// Package dispatch owns jim's chat semantics: one handler per J-IM command
// (handshake, auth, login, heartbeat, close, private and group chat, join and
// leave group, get user, get message), the HTTP API under /api/, the session
// table (which connections belong to which user), the online group table, and
// the worker pools that keep storage writes and fan-outs off the gateway's
// event loops.
//
// dispatch never touches a socket. The gateway hands it decoded packets
// together with a Conn, a small interface through which dispatch queues
// encoded replies and asks for a connection to be closed. Replies are built as
// *codec.Outbound values, so a message for many receivers is encoded once.
//
// Ordering: every packet of one connection runs on the same worker (workers
// are sharded by connection id), so a client that pipelines a login and a chat
// sees them handled in that order, and a connection's Closed is handled after
// everything it sent before.
package dispatch
