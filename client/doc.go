// Package client is a Go client for jim, the J-IM compatible instant-messaging
// gateway. It speaks J-IM's framed TCP protocol or WebSocket, chosen by the
// address given to Dial, and hides the protocol's rough edges:
//
//   - Request/reply matching. J-IM replies carry no request id, so a reply is
//     matched to the oldest outstanding request waiting for that reply
//     command (one FIFO queue per reply command). jim handles one
//     connection's packets in the order they were sent, so the n-th cmd-12
//     reply belongs to the n-th chat sent on that connection. A join (cmd 7)
//     has no direct reply on success: it completes on the caller's own cmd-9
//     notice for that group, and fails on a cmd-8 refusal.
//
//   - Reconnection. Unless disabled, a lost connection is redialled with
//     exponential backoff and jitter; the client logs in again, joins its
//     groups again and fetches what it missed (see below). Requests that were
//     in flight are sent again on the new connection; a chat keeps its client
//     message id, so the server stores a retried chat only once.
//
//   - Resume. The client remembers, per conversation (a private peer or a
//     group), which sequence numbers it has delivered. After a reconnect it
//     drains the server's offline queue and asks each known conversation for
//     the messages after the last contiguous seq it delivered (cmd 19 with
//     jim's afterSeq). Missed messages are delivered in seq order, marked
//     Resumed, before any message pushed live on the new connection; a seq
//     already delivered is never delivered again.
//
//   - Delivery. Incoming chats go to one bounded channel (Messages) or to a
//     handler (WithHandler) fed from it. When the consumer falls behind and
//     the buffer is full, the connection reader waits: nothing is dropped,
//     but replies to requests queue behind the undelivered messages, and a
//     server whose outbound limit is exceeded disconnects the client (which
//     then reconnects and resumes). A handler must therefore not wait on
//     client requests for long while many messages are pending.
package client
