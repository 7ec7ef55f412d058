// Package gateway owns sockets and connection state. One gnet engine listens on
// one port; the first bytes of every connection pick its protocol (J-IM TCP
// frames, HTTP, WebSocket after an HTTP upgrade, or TLS, inside which the same
// choice is made again), and a small per-connection state machine decodes what
// follows with package codec and hands packets to a Handler (package
// dispatch). TLS runs on the event loops too, without a goroutine per
// connection: see tls.go.
//
// The gateway knows no chat semantics. It provides the write path (messages
// queued per connection and merged into one write per event-loop pass, the
// pass's writes handed to the kernel together through io_uring where Linux
// allows it (flush.go, uring_linux.go), with a byte cap that disconnects slow
// consumers), idle and login deadlines on one
// coarse timing wheel (never a timer per connection), the HTTP endpoints that
// are not chat (/healthz, /metrics, static files) and connection metrics.
//
// Nothing here blocks an event loop: handlers run inline only when they are
// cheap; dispatch moves everything else to its worker pools, and replies come
// back through Conn.Send from any goroutine.
package gateway
