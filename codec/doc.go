// Package codec turns bytes into J-IM packets and back. It owns the J-IM TCP
// frame layout, the WebSocket (RFC 6455) handshake and frames, the small HTTP/1.1
// request parser the gateway needs, protocol sniffing on the first bytes of a
// connection, the command table, the status codes and the JSON bodies.
//
// codec imports nothing of the project: every function here is a pure function
// over bytes (or a small per-connection state struct), so each decoder can be
// fuzzed in isolation. Decoders never trust a length they read: every size is
// checked against a configured maximum before anything is allocated.
package codec
