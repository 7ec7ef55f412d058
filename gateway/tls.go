package gateway

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	ltls "github.com/lesismal/llib/std/crypto/tls"
	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/cpu"
)

// TLS on the shared port.
//
// gnet has no TLS and the gateway runs no goroutine per connection, so TLS is
// a non-blocking layer under the connection's state machine, built on
// github.com/lesismal/llib/std/crypto/tls (a fork of crypto/tls whose server
// handshake can be fed bytes as they arrive instead of reading a net.Conn):
//
//   - inbound, on the event loop: ciphertext from OnTraffic is appended to the
//     TLS engine, which decrypts complete records (the handshake's steps are
//     handed to workers, tls_handshake.go);
//     the plaintext runs through the same sniff/TCP/HTTP/WS state machine as a
//     plain connection, so J-IM TCP, WSS and HTTPS all work inside TLS;
//   - outbound: sendRaw queues plaintext from any goroutine as for a plain
//     connection; conn.flush, on the loop, encrypts it;
//   - whatever the engine writes (handshake flights, records, alerts) is
//     collected in tlsConn.out and handed to gnet in one write per step.
//
// The engine therefore runs on the connection's loop, or on a handshake
// worker while the loop leaves it alone, never on both at once, and needs
// no locking of ours.
//
// A connection that never finishes its handshake is still in stateSniff, so
// the login deadline closes it like any client that never logs in.

// tlsSuites12 are the TLS 1.2 suites offered: forward secret AEADs only. The
// client's order decides among them (see forkHasAESGCM); TLS 1.3 suites are
// not configurable and are all AEADs.
var tlsSuites12 = []uint16{
	ltls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	ltls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	ltls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	ltls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	ltls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305,
	ltls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305,
}

// forkHasAESGCM is the fork's record of AES-GCM hardware. The fork copies
// crypto/tls's CPU feature table but never initialises it, so the flag is
// always false: its server then moves ChaCha20-Poly1305 ahead of AES-GCM
// for every client, in TLS 1.2 and 1.3 alike, which costs several times the
// CPU per byte on machines with AES instructions. TLS 1.3 suite choice has no
// configuration knob, so the flag itself is set here from
// golang.org/x/sys/cpu, using the conditions crypto/tls uses. The fork then
// behaves as crypto/tls does: the client's order is honoured, AES-GCM for
// clients with AES hardware, ChaCha20 for those without.
//
// A fork release that renames the variable fails the build (the linker
// cannot resolve it), and TestTLSCipherSuite checks the outcome.
//
//go:linkname forkHasAESGCM github.com/lesismal/llib/std/crypto/tls.hasAESGCMHardwareSupport
var forkHasAESGCM bool

func init() {
	switch runtime.GOARCH {
	case "amd64":
		forkHasAESGCM = cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ
	case "arm64":
		forkHasAESGCM = cpu.ARM64.HasAES && cpu.ARM64.HasPMULL
	case "s390x":
		forkHasAESGCM = cpu.S390X.HasAES && cpu.S390X.HasAESCBC && cpu.S390X.HasAESCTR &&
			(cpu.S390X.HasGHASH || cpu.S390X.HasAESGCM)
	}
}

// serverTLS is the server-wide TLS state: one config for every connection,
// and the current certificate behind an atomic pointer so a reload is seen
// by the next handshake without stopping anything.
type serverTLS struct {
	certFile, keyFile string
	conf              *ltls.Config
	cert              atomic.Pointer[ltls.Certificate]
}

func newServerTLS(certFile, keyFile string) (*serverTLS, error) {
	st := &serverTLS{certFile: certFile, keyFile: keyFile}
	cert, _, err := loadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	st.cert.Store(cert)
	st.conf = &ltls.Config{
		MinVersion:   ltls.VersionTLS12,
		CipherSuites: tlsSuites12,
		GetCertificate: func(*ltls.ClientHelloInfo) (*ltls.Certificate, error) {
			return st.cert.Load(), nil
		},
	}
	return st, nil
}

// loadKeyPair reads a PEM certificate chain and its key and checks that they
// belong together and that the certificate parses.
func loadKeyPair(certFile, keyFile string) (*ltls.Certificate, *x509.Certificate, error) {
	if certFile == "" || keyFile == "" {
		return nil, nil, errors.New("gateway: TLS needs both a certificate file and a key file")
	}
	cert, err := ltls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("gateway: TLS certificate %q / key %q: %w", certFile, keyFile, err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, nil, fmt.Errorf("gateway: TLS certificate %q: %w", certFile, err)
	}
	cert.Leaf = leaf
	return &cert, leaf, nil
}

// Validate checks the options that can be checked without listening: today
// the TLS certificate and key, which must both be set or both be empty, and
// must load. Serve returns the same errors before it listens.
func (o *Options) Validate() error {
	if o.TLSCertFile == "" && o.TLSKeyFile == "" {
		return nil
	}
	_, _, err := loadKeyPair(o.TLSCertFile, o.TLSKeyFile)
	return err
}

// TLSEnabled reports whether the server accepts TLS connections.
func (s *Server) TLSEnabled() bool { return s.tls != nil }

// ReloadTLS re-reads the certificate and key files; handshakes that start
// afterwards present the new certificate, established sessions are not
// touched. On error the previous certificate stays in use. jimd calls it on
// SIGHUP.
func (s *Server) ReloadTLS() error {
	if s.tls == nil {
		return errors.New("gateway: TLS is not configured")
	}
	cert, leaf, err := loadKeyPair(s.tls.certFile, s.tls.keyFile)
	if err != nil {
		s.metrics.tlsReloads.WithLabelValues("error").Inc()
		return err
	}
	s.tls.cert.Store(cert)
	s.metrics.tlsReloads.WithLabelValues("ok").Inc()
	s.opts.Logger.Info("TLS certificate loaded", "file", s.tls.certFile,
		"subject", leaf.Subject.String(), "serial", leaf.SerialNumber.String(),
		"not_after", leaf.NotAfter.Format(time.RFC3339))
	return nil
}

// tlsConn is the TLS layer of one connection. It is owned by the
// connection's event loop. It is also the net.Conn the engine writes to:
// writes are collected in out and flushed to gnet by the loop.
type tlsConn struct {
	eng   *ltls.Conn
	c     *conn
	out   []byte // ciphertext produced by the engine, not yet given to gnet
	in    []byte // plaintext the state machine has not consumed yet
	ready bool   // handshake complete
	dead  bool   // the socket is gone: drop whatever the engine writes

	hs    atomic.Int32 // hsIdle, or a handshake step on a worker (tls_handshake.go)
	hsErr error        // the step's error, written by the worker before hsDone
}

func (s *Server) startTLS(c *conn) {
	t := &tlsConn{c: c}
	t.eng = ltls.NewConn(t, s.tls.conf, false, true)
	c.tls = t
}

// trafficTLS runs the TLS layer over newly arrived ciphertext (possibly none,
// when the connection was woken to resume after an asynchronous reply).
func (s *Server) trafficTLS(c *conn, ciphertext []byte) gnet.Action {
	t := c.tls
	switch t.hs.Load() {
	case hsBusy:
		return gnet.None // the ciphertext waits in gnet's buffer; the worker wakes c
	case hsDone:
		t.hs.Store(hsIdle)
		if err := t.hsErr; err != nil {
			t.hsErr = nil
			s.metrics.tlsHandshakes.WithLabelValues("error").Inc()
			c.setReason(reasonTLSHandshake)
			_ = t.flushOut() // the alert
			return gnet.Close
		}
	}
	if !t.ready && len(ciphertext) > 0 && !t.eng.ConnectionState().HandshakeComplete {
		// A flight the last step made goes out first: once the next step
		// is queued, t.out is the worker's.
		if err := t.flushOut(); err != nil {
			return gnet.Close
		}
		if s.offloadHandshake(c, ciphertext) {
			s.metrics.bytesIn.Add(float64(len(ciphertext)))
			_, _ = c.gc.Discard(len(ciphertext))
			return gnet.None
		}
	}
	loop := c.loop
	if loop.tlsBuf == nil {
		// One decrypted record at most; shared by the loop's connections.
		loop.tlsBuf = make([]byte, 16<<10)
	}
	in := ciphertext
	keep, fed := true, false
	for keep {
		// The engine copies in, so gnet's buffer is released at once.
		_, n, err := t.eng.AppendAndRead(in, loop.tlsBuf)
		if in != nil {
			s.metrics.bytesIn.Add(float64(len(in)))
			_, _ = c.gc.Discard(len(in))
			in = nil
		}
		if !t.ready && t.eng.ConnectionState().HandshakeComplete {
			t.ready = true
			trimHandshake(t.eng)
			s.metrics.tlsHandshakes.WithLabelValues("ok").Inc()
		}
		if n > 0 {
			// Data can come with an error: the last record before a
			// close_notify.
			fed = true
			keep = s.feedTLS(c, loop.tlsBuf[:n])
		}
		if err != nil {
			switch {
			case errors.Is(err, io.EOF): // close_notify
				c.setReason(reasonPeer)
			case !t.ready:
				s.metrics.tlsHandshakes.WithLabelValues("error").Inc()
				c.setReason(reasonTLSHandshake)
			default:
				c.setReason(reasonTLSError)
			}
			keep = false
		}
		if n == 0 || c.isClosed() {
			break // need more bytes; or closing after a reply, and whatever follows is ignored
		}
	}
	if keep && !fed && len(t.in) > 0 {
		keep = s.feedTLS(c, nil)
	}
	if keep && !s.holdInbound(c, len(t.in)+wsHeld(c), nil) {
		s.refuseInbound(c, t.in)
		t.in = nil
	}
	// Handshake flights, session tickets and alerts go out now; replies to
	// the plaintext were queued and are encrypted by the next flush.
	if err := t.flushOut(); err != nil {
		keep = false
	}
	if !keep {
		return gnet.Close
	}
	return gnet.None
}

// feedTLS runs the state machine over decrypted bytes p, after whatever an
// earlier call left unconsumed. p is the loop's scratch buffer: what is not
// consumed now is copied out of it.
func (s *Server) feedTLS(c *conn, p []byte) bool {
	t := c.tls
	data := p
	if len(t.in) > 0 {
		t.in = append(t.in, p...)
		data = t.in
	}
	consumed, keep := s.process(c, data)
	if !keep {
		return false
	}
	rest := data[consumed:]
	switch {
	case len(rest) == 0:
		t.in = nil // idle connections keep no plaintext buffer
	case len(t.in) > 0:
		t.in = t.in[:copy(t.in, rest)]
	default:
		t.in = append([]byte(nil), rest...)
	}
	return true
}

// write encrypts plaintext queued by sendRaw and hands the records to gnet.
// It runs on the loop (conn.flush).
func (t *tlsConn) write(p []byte) error {
	if !t.ready || t.dead {
		// Nothing is queued before the handshake completes: plaintext is
		// only ever a reply to plaintext. Drop it rather than send it bare.
		return nil
	}
	if _, err := t.eng.Write(p); err != nil {
		return err
	}
	return t.flushOut()
}

// closeNotify sends the close_notify alert before a graceful close.
func (t *tlsConn) closeNotify() {
	if !t.ready || t.dead {
		return
	}
	_ = t.eng.CloseWrite()
	_ = t.flushOut()
}

// flushOut gives the collected ciphertext to gnet in one write.
func (t *tlsConn) flushOut() error {
	if len(t.out) == 0 {
		return nil
	}
	out := t.out
	t.out = nil
	_, err := t.c.gc.Write(out)
	t.c.loop.srv.metrics.bytesOut.Add(float64(len(out)))
	putBuf(out)
	return err
}

// release frees the engine's buffers when the connection has closed.
func (t *tlsConn) release() {
	if t.hs.CompareAndSwap(hsBusy, hsClosed) {
		// A worker has the engine and its output; it drops them.
		t.in = nil
		return
	}
	t.dead = true
	_ = t.eng.Close() // its close_notify, if any, is dropped by Write
	if t.out != nil {
		putBuf(t.out)
		t.out = nil
	}
	t.in = nil
}

// Write implements net.Conn for the engine: its output is collected and
// flushed by the loop.
func (t *tlsConn) Write(b []byte) (int, error) {
	if t.dead {
		return 0, net.ErrClosed
	}
	if t.out == nil {
		t.out = getBuf(len(b))
	}
	t.out = append(t.out, b...)
	return len(b), nil
}

var errTLSPushed = errors.New("gateway: TLS input is pushed by the event loop, never read")

// Read implements net.Conn; the non-blocking engine never calls it.
func (t *tlsConn) Read([]byte) (int, error) { return 0, errTLSPushed }

// Close implements net.Conn; the gnet connection is closed by the gateway.
func (t *tlsConn) Close() error { return nil }

// LocalAddr implements net.Conn.
func (t *tlsConn) LocalAddr() net.Addr { return t.c.gc.LocalAddr() }

// RemoteAddr implements net.Conn.
func (t *tlsConn) RemoteAddr() net.Addr { return t.c.remote }

// SetDeadline implements net.Conn; deadlines are the timing wheel's.
func (t *tlsConn) SetDeadline(time.Time) error { return nil }

// SetReadDeadline implements net.Conn.
func (t *tlsConn) SetReadDeadline(time.Time) error { return nil }

// SetWriteDeadline implements net.Conn.
func (t *tlsConn) SetWriteDeadline(time.Time) error { return nil }

// The fork keeps the whole handshake state after the handshake (the parsed
// ClientHello with its key shares, the transcript, the handshake buffer):
// about half of what an idle TLS connection costs. None of it is read again
// once the handshake is complete: the handshake entry points return early,
// and post-handshake messages (KeyUpdate) use the record layer alone. It
// has no method to drop it, so trimHandshake clears those fields through
// their offsets, found by name when the package loads. A fork release that
// renames or retypes them leaves them alone (see TestTLSTrimFields).
var trimOffsets = func() (offs []uintptr) {
	t := reflect.TypeFor[ltls.Conn]()
	for _, name := range trimFieldNames {
		if f, ok := t.FieldByName(name); ok && f.Type.Kind() == reflect.Pointer {
			offs = append(offs, f.Offset)
		}
	}
	return offs
}()

var trimFieldNames = []string{"hs", "hs13", "clientHello", "serverHello", "certMsg", "hand"}

func trimHandshake(e *ltls.Conn) {
	for _, off := range trimOffsets {
		*(*unsafe.Pointer)(unsafe.Add(unsafe.Pointer(e), off)) = nil
	}
}
