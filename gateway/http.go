package gateway

import (
	"bytes"
	"errors"
	"io/fs"
	"mime"
	"path"
	"strconv"
	"strings"

	"github.com/prometheus/common/expfmt"

	"jim/codec"
	"jim/dispatch"
)

const jsonType = "application/json; charset=utf-8"

// metricsSlots bounds concurrent /metrics renderings: gathering walks every
// series, which is too slow for an event loop and must not pile up.
var metricsSlots = make(chan struct{}, 2)

func (s *Server) readHTTP(c *conn, b []byte) (int, bool) {
	if c.httpBusy() {
		return 0, true // an API reply is pending; the rest waits its turn
	}
	req, n, err := codec.ParseRequest(b, codec.HTTPLimits{MaxHeader: s.opts.MaxHTTPHeader, MaxBody: s.opts.MaxHTTPBody})
	if err != nil {
		s.metrics.decodeErrors.WithLabelValues("http").Inc()
		code, reason := 400, reasonDecode
		switch {
		case errors.Is(err, codec.ErrHeaderTooLarge):
			code, reason = 431, reasonTooLarge
		case errors.Is(err, codec.ErrHTTPBodyTooLarge):
			code, reason = 413, reasonTooLarge
		case errors.Is(err, codec.ErrUnsupportedEncoding):
			code = 411
		}
		s.metrics.httpRequests.WithLabelValues("bad", strconv.Itoa(code)).Inc()
		c.sendLast(codec.AppendResponse(nil, code, "text/plain; charset=utf-8", []byte(httpReason(code)+"\n"), false), reason)
		return 0, true
	}
	if n == 0 {
		return 0, true
	}
	if req.Upgrade {
		s.upgrade(c, req)
		return n, true
	}
	c.setLoginFree(true)
	s.route(c, req)
	return n, true
}

// reply writes one response and closes the connection afterwards unless the
// client keeps it alive.
func (s *Server) reply(c *conn, req *codec.Request, route string, code int, ctype string, body []byte, extra ...string) {
	s.metrics.httpRequests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	resp := codec.AppendResponse(nil, code, ctype, body, req.KeepAlive, extra...)
	if req.Method == "HEAD" {
		// Content-Length still tells the size; the body is left out.
		resp = resp[:len(resp)-len(body)]
	}
	if req.KeepAlive {
		c.sendRaw(resp)
	} else {
		c.sendLast(resp, reasonHTTPClose)
	}
}

func (s *Server) route(c *conn, req *codec.Request) {
	p := req.Path
	switch {
	case p == "/healthz":
		if s.stopped.Load() || s.draining.Load() {
			s.reply(c, req, "healthz", 503, jsonType, []byte(`{"status":"draining"}`))
			return
		}
		if s.opts.Health != nil {
			if err := s.opts.Health(); err != nil {
				msg, _ := codec.Marshal(err.Error())
				s.reply(c, req, "healthz", 503, jsonType, []byte(`{"status":"unhealthy","error":`+string(msg)+`}`))
				return
			}
		}
		body := `{"status":"ok","connections":` + strconv.FormatInt(s.nOpen.Load(), 10) + `}`
		s.reply(c, req, "healthz", 200, jsonType, []byte(body))
	case p == "/metrics":
		s.serveMetrics(c, req)
	case strings.HasPrefix(p, "/api/"):
		s.serveAPI(c, req)
	default:
		s.serveStatic(c, req)
	}
}

func (s *Server) serveAPI(c *conn, req *codec.Request) {
	c.setHTTPBusy(true)
	s.h.API(dispatch.APIRequest{
		Path:     req.Path,
		Form:     req.Form(),
		Body:     req.Body,
		APIKey:   req.Header("X-API-Key"),
		Loopback: isLoopback(c.remote),
		Origin:   req.Header("Origin"),
	}, func(r dispatch.APIResponse) {
		ctype := r.ContentType
		if ctype == "" {
			ctype = jsonType
		}
		s.reply(c, req, "api", r.Status, ctype, r.Body)
		c.setHTTPBusy(false)
		// Pipelined requests may be waiting in the inbound buffer.
		_ = c.gc.Wake(nil)
	})
}

func (s *Server) serveMetrics(c *conn, req *codec.Request) {
	select {
	case metricsSlots <- struct{}{}:
	default:
		s.reply(c, req, "metrics", 503, "text/plain; charset=utf-8", []byte("busy\n"))
		return
	}
	c.setHTTPBusy(true)
	go func() {
		defer func() { <-metricsSlots }()
		var buf bytes.Buffer
		code := 200
		mfs, err := s.opts.Registry.Gather()
		if err == nil {
			enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
			for _, mf := range mfs {
				if err = enc.Encode(mf); err != nil {
					break
				}
			}
		}
		if err != nil {
			code = 500
			buf.Reset()
			buf.WriteString(err.Error())
		}
		s.reply(c, req, "metrics", code, string(expfmt.NewFormat(expfmt.TypeTextPlain)), buf.Bytes())
		c.setHTTPBusy(false)
		_ = c.gc.Wake(nil)
	}()
}

func (s *Server) serveStatic(c *conn, req *codec.Request) {
	if req.Method != "GET" && req.Method != "HEAD" {
		s.reply(c, req, "static", 405, "text/plain; charset=utf-8", []byte("method not allowed\n"), "Allow", "GET, HEAD")
		return
	}
	if s.opts.Static == nil {
		s.reply(c, req, "static", 404, "text/plain; charset=utf-8", []byte("not found\n"))
		return
	}
	name := path.Clean("/" + req.Path)
	if strings.HasSuffix(name, "/") {
		name += "index.html"
	}
	name = strings.TrimPrefix(name, "/")
	data, err := fs.ReadFile(s.opts.Static, name)
	if err != nil {
		// A directory gets its index.html, as J-IM's static server does.
		if d, derr := fs.ReadFile(s.opts.Static, path.Join(name, "index.html")); derr == nil {
			data, err, name = d, nil, path.Join(name, "index.html")
		}
	}
	if err != nil {
		s.reply(c, req, "static", 404, "text/plain; charset=utf-8", []byte("not found\n"))
		return
	}
	ctype := mime.TypeByExtension(path.Ext(name))
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	s.reply(c, req, "static", 200, ctype, data, staticHeaders...)
}

// staticHeaders keep the chat page to itself: scripts, styles and sockets
// only from this origin (the page has no inline script or style), never
// framed by another site (clickjacking), and no referrer leaking the
// page's query to links in messages.
var staticHeaders = []string{
	"Content-Security-Policy", "default-src 'self'; connect-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
	"X-Frame-Options", "DENY",
	"Referrer-Policy", "no-referrer",
}

// upgrade answers a WebSocket upgrade and switches the connection to frames.
// Query parameters username/password/token log the user in, which the J-IM
// web page relies on (it never sends a login command itself).
func (s *Server) upgrade(c *conn, req *codec.Request) {
	if s.draining.Load() {
		req.KeepAlive = false
		s.reply(c, req, "ws", 503, "text/plain; charset=utf-8", []byte("draining\n"), "Retry-After", "1")
		return
	}
	if !codec.ValidWSKey(req.WSKey) {
		s.reply(c, req, "ws", 400, "text/plain; charset=utf-8", []byte("bad Sec-WebSocket-Key\n"))
		return
	}
	if v := req.Header("Sec-WebSocket-Version"); v != "13" {
		req.KeepAlive = false
		s.reply(c, req, "ws", 426, "text/plain; charset=utf-8", []byte("unsupported WebSocket version\n"), "Sec-WebSocket-Version", "13")
		return
	}
	if s.opts.WSEchoPath != "" && req.Path == s.opts.WSEchoPath {
		s.metrics.httpRequests.WithLabelValues("ws_echo", "101").Inc()
		c.sendRaw(codec.AppendWSUpgrade(nil, req.WSKey))
		c.ws = &codec.WSDecoder{MaxMessage: s.opts.MaxWSMessage, RequireMask: true}
		s.setProto(c, stateWSEcho, codec.ProtoWS)
		c.setLoginFree(true)
		return
	}
	if c.setLoginFree(false) && s.auSeconds > 0 && s.hbSeconds == 0 {
		// An earlier request on this keep-alive connection took it off the
		// wheel; the login deadline (from when it opened) applies again.
		// With an idle timeout it is still on the wheel, which checks the
		// login deadline whenever it looks.
		s.wheel.add(c, int64(c.opened)+s.auSeconds)
	}
	s.metrics.httpRequests.WithLabelValues("ws", "101").Inc()
	c.sendRaw(codec.AppendWSUpgrade(nil, req.WSKey))
	c.ws = &codec.WSDecoder{MaxMessage: s.opts.MaxWSMessage, RequireMask: s.opts.WSRequireMask}
	s.setProto(c, stateWS, codec.ProtoWS)
	user := req.Query("username")
	if user == "" {
		user = req.Query("userId")
	}
	token := req.Query("token")
	if user != "" || token != "" {
		s.h.LoginFromQuery(c, user, req.Query("password"), token)
	}
}

func httpReason(code int) string {
	switch code {
	case 400:
		return "bad request"
	case 411:
		return "length required"
	case 413:
		return "request body too large"
	case 431:
		return "request header fields too large"
	case 503:
		return "server busy"
	}
	return "error"
}
