package gateway

import (
	"io/fs"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Options configures a Server. The zero value of every field means the
// documented default.
type Options struct {
	// Addr is the listen address. Empty means ":8888", J-IM's port.
	Addr string

	// NumEventLoop is the number of gnet event loops. Zero means one per CPU.
	NumEventLoop int

	// HeartbeatTimeout closes a connection that sent nothing for this long.
	// Zero means 120 s; a negative value disables it, as J-IM's 0 does.
	HeartbeatTimeout time.Duration

	// AuthTimeout closes a connection that has not logged in this long after
	// it opened. Zero means 10 s; negative disables it.
	AuthTimeout time.Duration

	// MaxOutbound is the per-connection cap on bytes queued for writing,
	// including what the kernel did not take yet. A connection over it is a
	// slow consumer and is disconnected. Zero means 4 MiB.
	MaxOutbound int

	// MaxOutboundTotal bounds what all connections together have waiting
	// to be written, counting only connections with more than 64 KiB
	// waiting. As soon as a write takes the total over it, the event loop
	// disconnects its connections furthest behind, as slow consumers,
	// until the total is under it or the loop holds no more than its share
	// (the bound divided among the loops). Zero means 1 GiB; negative
	// means no bound beyond MaxOutbound per connection.
	MaxOutboundTotal int64

	// MaxTCPBody is the largest J-IM TCP frame body. Zero means 1 MiB (J-IM
	// has no limit; its unused constant is about 2 MiB).
	MaxTCPBody int

	// MaxWSMessage is the largest WebSocket message. Zero means 512 KiB,
	// J-IM's limit.
	MaxWSMessage int

	// MaxHTTPHeader and MaxHTTPBody bound an HTTP request. Zero means 8 KiB
	// and 1 MiB.
	MaxHTTPHeader int
	MaxHTTPBody   int

	// WSRequireMask refuses unmasked client frames as RFC 6455 requires.
	// Default false accepts them, as J-IM does.
	WSRequireMask bool

	// WSEchoPath, when set, is a test-only WebSocket endpoint (for example
	// "/echo") that echoes every text and binary message back unchanged,
	// with the same opcode, so external conformance suites can exercise the
	// WebSocket layer alone: no login, no J-IM commands, but every RFC 6455
	// rule of the decoder, and unmasked client frames are always refused
	// there (RFC 6455 §5.1) whatever WSRequireMask says. Messages are capped
	// by MaxWSMessage. Empty (the default) means no such endpoint; never
	// enable it on a public listener.
	WSEchoPath string

	// Static is served for GET requests that are not API, health or metrics
	// paths. Nil serves nothing (404).
	Static fs.FS

	// Registry receives the gateway's metrics and is served at /metrics.
	// Nil means a new registry.
	Registry *prometheus.Registry

	// Logger receives connection-level logs. Nil means slog.Default().
	Logger *slog.Logger

	// MaxConns caps open connections in total; new ones beyond it are closed
	// at accept. Zero means no cap but the file limit.
	MaxConns int

	// MaxConnsPerIP caps open connections from one source address. Zero
	// means no cap. Load generators on loopback need it off or high.
	MaxConnsPerIP int

	// MaxPreAuthBody is the largest frame or message accepted before login:
	// a login fits in a few hundred bytes, so an unauthenticated peer cannot
	// make the server buffer a megabyte. Zero means 16 KiB.
	MaxPreAuthBody int

	// MaxInboundPending bounds the inbound bytes all connections together
	// hold undecoded: frames still arriving, pipelined HTTP requests
	// waiting their turn, WebSocket messages being reassembled. Each
	// connection holds up to 16 KiB free of it; one that holds more is
	// charged all it holds, and one whose holding grows while the total is
	// over the bound is answered busy (10101 under its frame's command,
	// WebSocket close 1013, HTTP 503) and closed. Zero means 256 MiB;
	// negative means no bound.
	MaxInboundPending int64

	// MsgRate and MsgBurst are a per-connection token bucket on inbound
	// messages. A message over the rate is refused with status 10104; a
	// connection refused MsgBurst times in a row is disconnected. Zero
	// MsgRate means no limit; zero MsgBurst means 2 s worth of MsgRate.
	MsgRate  float64
	MsgBurst int

	// ByteRate and ByteBurst bound inbound bytes per connection; a peer
	// more than ByteBurst over the rate is disconnected. Zero ByteRate means
	// no limit; zero ByteBurst means 2 s worth of ByteRate.
	ByteRate  float64
	ByteBurst int

	// Health, when set, is asked by every /healthz request (on the event
	// loop, so it must be cheap): an error makes /healthz answer 503
	// {"status":"unhealthy","error":...}, so that an orchestrator restarts
	// a node whose store has failed instead of leaving it refusing writes.
	Health func() error
	// ShutdownGrace bounds how long Stop waits for queued writes to drain.
	// Zero means 5 s.
	ShutdownGrace time.Duration

	// TLSCertFile and TLSKeyFile are PEM files with the certificate chain
	// and its private key. With both set, a connection whose first byte
	// starts a TLS handshake gets TLS (1.2 or 1.3) on the same port, and J-IM
	// TCP, WebSocket and HTTP work inside it; Server.ReloadTLS re-reads the
	// files. Both empty means no TLS: such connections are closed with
	// reason "tls_not_configured". One without the other, or files that do
	// not load, make Validate and Serve fail.
	TLSCertFile string
	TLSKeyFile  string
	// TLSHandshakeWorkers run the steps of TLS handshakes (the public-key
	// work) off the event loops, so that a flood of handshakes does not
	// stall established connections. Zero means half the CPUs (at least
	// one); negative runs handshakes on the loops.
	TLSHandshakeWorkers int

	// NoIOURing writes every connection with its own write call. By
	// default, on Linux with io_uring (5.19 or later, not disabled by
	// sysctl or seccomp), an event loop hands the writes of a pass over
	// many connections to the kernel in one io_uring call; where io_uring
	// is unavailable the server falls back to write calls by itself.
	NoIOURing bool
}

func (o *Options) setDefaults() {
	if o.Addr == "" {
		o.Addr = ":8888"
	}
	if o.HeartbeatTimeout == 0 {
		o.HeartbeatTimeout = 120 * time.Second
	}
	if o.AuthTimeout == 0 {
		o.AuthTimeout = 10 * time.Second
	}
	if o.MaxOutboundTotal == 0 {
		o.MaxOutboundTotal = 1 << 30
	}
	if o.MaxOutbound == 0 {
		o.MaxOutbound = 4 << 20
	}
	if o.MaxTCPBody == 0 {
		o.MaxTCPBody = 1 << 20
	}
	if o.MaxWSMessage == 0 {
		o.MaxWSMessage = 512 << 10
	}
	if o.MaxHTTPHeader == 0 {
		o.MaxHTTPHeader = 8 << 10
	}
	if o.MaxHTTPBody == 0 {
		o.MaxHTTPBody = 1 << 20
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxPreAuthBody == 0 {
		o.MaxPreAuthBody = 16 << 10
	}
	if o.MaxInboundPending == 0 {
		o.MaxInboundPending = 256 << 20
	}
	if o.MsgRate > 0 && o.MsgBurst == 0 {
		o.MsgBurst = int(2*o.MsgRate) + 1
	}
	if o.ByteRate > 0 && o.ByteBurst == 0 {
		o.ByteBurst = int(2*o.ByteRate) + 1
	}
	if o.ShutdownGrace == 0 {
		o.ShutdownGrace = 5 * time.Second
	}
}
