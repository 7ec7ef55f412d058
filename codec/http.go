package codec

import (
	"bytes"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// HTTPLimits bounds what ParseRequest accepts. Zero fields take the defaults.
type HTTPLimits struct {
	MaxHeader int // request line plus headers, including the blank line; default 8 KiB
	MaxBody   int // Content-Length limit; default 1 MiB
}

const (
	defaultMaxHeader   = 8 << 10
	defaultMaxHTTPBody = 1 << 20
)

// HeaderField is one request header as received (name case preserved).
type HeaderField struct {
	Name, Value string
}

// Request is one parsed HTTP/1.x request.
type Request struct {
	Method   string
	Path     string // raw path, without the query and not percent-decoded
	RawQuery string // raw query, without the '?'
	Minor    int    // HTTP/1.x minor version

	Headers []HeaderField
	Body    []byte // owned copy; nil when empty

	// KeepAlive is true for HTTP/1.1 unless Connection: close, and for
	// HTTP/1.0 only with Connection: keep-alive.
	KeepAlive bool
	// Upgrade reports a WebSocket upgrade request: GET, Upgrade: websocket,
	// an upgrade token in Connection and a Sec-WebSocket-Key. The key is not
	// validated here (see ValidWSKey).
	Upgrade bool
	WSKey   string
}

// Header returns the value of the first header named name, compared
// case-insensitively, or "" when there is none.
func (r *Request) Header(name string) string {
	for i := range r.Headers {
		if strings.EqualFold(r.Headers[i].Name, name) {
			return r.Headers[i].Value
		}
	}
	return ""
}

// Query returns the first value of the query parameter name, with
// url.ParseQuery semantics.
func (r *Request) Query(name string) string {
	v, _ := url.ParseQuery(r.RawQuery)
	return v.Get(name)
}

// Form returns the query parameters plus, for an
// application/x-www-form-urlencoded request, the body parameters, as J-IM
// merges both into one parameter map. Malformed pairs are skipped.
func (r *Request) Form() url.Values {
	v, _ := url.ParseQuery(r.RawQuery)
	if len(r.Body) == 0 {
		return v
	}
	ct := r.Header("Content-Type")
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	if !strings.EqualFold(strings.TrimSpace(ct), "application/x-www-form-urlencoded") {
		return v
	}
	bv, _ := url.ParseQuery(string(r.Body))
	for k, vs := range bv {
		v[k] = append(v[k], vs...)
	}
	return v
}

// HTTP parsing errors. The caller answers 400/413/431/501 and closes.
var (
	// ErrHeaderTooLarge reports a request head over HTTPLimits.MaxHeader.
	ErrHeaderTooLarge = errors.New("codec: HTTP request header too large")
	// ErrHTTPBodyTooLarge reports a Content-Length over HTTPLimits.MaxBody.
	ErrHTTPBodyTooLarge = errors.New("codec: HTTP request body too large")
	// ErrBadRequest reports a malformed request.
	ErrBadRequest = errors.New("codec: malformed HTTP request")
	// ErrUnsupportedEncoding reports a Transfer-Encoding header: jim requires
	// Content-Length, which keeps framing unambiguous (no request smuggling).
	ErrUnsupportedEncoding = errors.New("codec: HTTP Transfer-Encoding not supported")
)

var crlfcrlf = []byte("\r\n\r\n")

// ParseRequest parses one request at the start of buf. n == 0 && err == nil
// means more bytes are needed. It is meant for a buffer that accumulates: each
// call rescans the head, which MaxHeader bounds. Content-Length is checked
// against MaxBody as soon as the head is complete, before the body arrives.
func ParseRequest(buf []byte, lim HTTPLimits) (req *Request, n int, err error) {
	if lim.MaxHeader <= 0 {
		lim.MaxHeader = defaultMaxHeader
	}
	if lim.MaxBody <= 0 {
		lim.MaxBody = defaultMaxHTTPBody
	}
	// RFC 9112 §2.2: ignore empty lines before a request line; clients send
	// a stray CRLF after a POST body.
	skip := 0
	for skip+1 < len(buf) && buf[skip] == '\r' && buf[skip+1] == '\n' && skip < 8 {
		skip += 2
	}
	b := buf[skip:]
	if skip < 8 && len(b) == 1 && b[0] == '\r' {
		return nil, 0, nil // possibly another empty line
	}
	win := b
	if len(win) > lim.MaxHeader {
		win = win[:lim.MaxHeader]
	}
	i := bytes.Index(win, crlfcrlf)
	if i < 0 {
		if err := checkPartialHead(win); err != nil {
			return nil, 0, err
		}
		if len(b) >= lim.MaxHeader {
			return nil, 0, ErrHeaderTooLarge
		}
		return nil, 0, nil
	}
	headEnd := i + 4
	// One string backs every field of the head: a single allocation.
	head := string(b[:i])
	req = &Request{}
	line, rest, _ := strings.Cut(head, "\r\n")
	if !parseRequestLine(req, line) {
		return nil, 0, ErrBadRequest
	}
	var (
		contentLen    = -1
		hasHost, te   bool
		connClose     bool
		connKeepAlive bool
		connUpgrade   bool
		upgradeWS     bool
		nHeaders      = strings.Count(rest, "\r\n") + 1
	)
	if rest != "" {
		req.Headers = make([]HeaderField, 0, nHeaders)
	}
	for rest != "" {
		line, rest, _ = strings.Cut(rest, "\r\n")
		name, value, ok := strings.Cut(line, ":")
		if !ok || !isToken(name) {
			return nil, 0, ErrBadRequest
		}
		value = strings.Trim(value, " \t")
		if !validFieldValue(value) {
			return nil, 0, ErrBadRequest
		}
		req.Headers = append(req.Headers, HeaderField{Name: name, Value: value})
		switch {
		case strings.EqualFold(name, "Host"):
			if hasHost {
				return nil, 0, ErrBadRequest
			}
			hasHost = true
		case strings.EqualFold(name, "Content-Length"):
			l, ok := parseContentLength(value)
			if !ok || (contentLen >= 0 && l != contentLen) {
				return nil, 0, ErrBadRequest
			}
			contentLen = l
		case strings.EqualFold(name, "Transfer-Encoding"):
			te = true
		case strings.EqualFold(name, "Connection"):
			for v := value; v != ""; {
				var tok string
				tok, v, _ = strings.Cut(v, ",")
				tok = strings.TrimSpace(tok)
				switch {
				case strings.EqualFold(tok, "close"):
					connClose = true
				case strings.EqualFold(tok, "keep-alive"):
					connKeepAlive = true
				case strings.EqualFold(tok, "upgrade"):
					connUpgrade = true
				}
			}
		case strings.EqualFold(name, "Upgrade"):
			for v := value; v != ""; {
				var tok string
				tok, v, _ = strings.Cut(v, ",")
				if strings.EqualFold(strings.TrimSpace(tok), "websocket") {
					upgradeWS = true
				}
			}
		case strings.EqualFold(name, "Sec-WebSocket-Key"):
			if req.WSKey == "" {
				req.WSKey = value
			}
		}
	}
	if req.Minor >= 1 && !hasHost {
		return nil, 0, ErrBadRequest
	}
	if te {
		return nil, 0, ErrUnsupportedEncoding
	}
	if contentLen > lim.MaxBody {
		return nil, 0, ErrHTTPBodyTooLarge
	}
	if req.Minor >= 1 {
		req.KeepAlive = !connClose
	} else {
		req.KeepAlive = connKeepAlive && !connClose
	}
	req.Upgrade = req.Method == "GET" && upgradeWS && connUpgrade && req.WSKey != ""
	end := headEnd
	if contentLen > 0 {
		end += contentLen
		if len(b) < end {
			return nil, 0, nil
		}
		req.Body = make([]byte, contentLen)
		copy(req.Body, b[headEnd:end])
	}
	return req, skip + end, nil
}

// checkPartialHead rejects a head whose first line is already complete and
// malformed, or that holds bytes no request may contain, so that garbage is
// refused without waiting for MaxHeader bytes.
func checkPartialHead(b []byte) error {
	for _, c := range b {
		if c == 0 || c == 0x7f {
			return ErrBadRequest
		}
	}
	if i := bytes.Index(b, []byte("\r\n")); i >= 0 {
		var r Request
		if !parseRequestLine(&r, string(b[:i])) {
			return ErrBadRequest
		}
	}
	return nil
}

// parseRequestLine parses "METHOD SP target SP HTTP/1.x".
func parseRequestLine(r *Request, line string) bool {
	method, rest, ok := strings.Cut(line, " ")
	if !ok || !isToken(method) {
		return false
	}
	target, proto, ok := strings.Cut(rest, " ")
	if !ok || target == "" || len(proto) != 8 || proto[:7] != "HTTP/1." {
		return false
	}
	if c := proto[7]; c < '0' || c > '9' {
		return false
	} else {
		r.Minor = int(c - '0')
	}
	for i := 0; i < len(target); i++ {
		if c := target[i]; c <= ' ' || c == 0x7f {
			return false
		}
	}
	switch {
	case target[0] == '/':
	case target == "*":
	default:
		// Absolute form (RFC 9112 §3.2.2): keep only the path and query.
		s, ok := strings.CutPrefix(target, "http://")
		if !ok {
			if s, ok = strings.CutPrefix(target, "https://"); !ok {
				return false
			}
		}
		if j := strings.IndexAny(s, "/?"); j >= 0 {
			target = s[j:]
			if target[0] == '?' {
				target = "/" + target
			}
		} else {
			target = "/"
		}
	}
	r.Method = method
	r.Path, r.RawQuery, _ = strings.Cut(target, "?")
	return true
}

// isToken reports whether s is a non-empty RFC 9110 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x80 || !tokenChars[c] {
			return false
		}
	}
	return true
}

var tokenChars = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return
}()

// validFieldValue allows visible characters, spaces, tabs and obs-text; any
// other control character (a bare CR or LF in particular) is refused.
func validFieldValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// parseContentLength accepts a decimal, or a comma list of identical decimals
// (RFC 9110 §8.6), refusing signs, spaces inside numbers and overflow.
func parseContentLength(s string) (int, bool) {
	n := -1
	for more := true; more; {
		var part string
		part, s, more = strings.Cut(s, ",")
		part = strings.Trim(part, " \t")
		if part == "" || len(part) > 15 {
			return 0, false
		}
		v := 0
		for i := 0; i < len(part); i++ {
			c := part[i]
			if c < '0' || c > '9' {
				return 0, false
			}
			v = v*10 + int(c-'0')
		}
		if n >= 0 && v != n {
			return 0, false
		}
		n = v
	}
	return n, true
}

// AppendResponse appends a complete HTTP/1.1 response: status line, Server,
// Content-Type (when non-empty), Content-Length, Connection, the extra headers
// given as name, value pairs, a blank line and the body. CR and LF in header
// values are replaced so a value can never start a new header.
func AppendResponse(dst []byte, code int, contentType string, body []byte, keepAlive bool, extra ...string) []byte {
	reason := http.StatusText(code)
	if reason == "" {
		reason = "Status"
	}
	// One allocation for the whole response: the fixed text and the
	// numbers take under 144 bytes.
	need := 144 + len(reason) + len(contentType) + len(body)
	for _, e := range extra {
		need += len(e) + 2
	}
	dst = slices.Grow(dst, need)
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(code), 10)
	dst = append(dst, ' ')
	dst = append(dst, reason...)
	// nosniff: a browser takes every body for its declared type, so a
	// JSON reply echoing user text is never run as a page or script.
	dst = append(dst, "\r\nServer: jim\r\nX-Content-Type-Options: nosniff\r\n"...)
	if contentType != "" {
		dst = appendHeader(dst, "Content-Type", contentType)
	}
	dst = append(dst, "Content-Length: "...)
	dst = strconv.AppendInt(dst, int64(len(body)), 10)
	if keepAlive {
		dst = append(dst, "\r\nConnection: keep-alive\r\n"...)
	} else {
		dst = append(dst, "\r\nConnection: close\r\n"...)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		dst = appendHeader(dst, extra[i], extra[i+1])
	}
	dst = append(dst, "\r\n"...)
	return append(dst, body...)
}

func appendHeader(dst []byte, name, value string) []byte {
	dst = appendSafe(dst, name)
	dst = append(dst, ": "...)
	dst = appendSafe(dst, value)
	return append(dst, "\r\n"...)
}

func appendSafe(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		dst = append(dst, c)
	}
	return dst
}
